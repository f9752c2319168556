//! Request and error totals for `/api/status`, read back from the metrics
//! exposition at status time. The request path already counts every
//! request into `rampart_http_requests_total` and
//! `rampart_upstream_requests_total`; reading those families here keeps the
//! status page free of any extra per-request work (prometheus-client offers
//! no iteration over a family, so we parse its own text output, which only
//! happens when someone asks for the status). Rates are left to the client,
//! from successive totals.

use std::collections::HashMap;

/// Totals for one route, or one upstream server.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub requests: u64,
    /// 4xx answers.
    pub errors_4xx: u64,
    /// 5xx answers (for upstream servers: also failures with no answer).
    pub errors_5xx: u64,
}

impl Totals {
    fn add(&mut self, code: &str, n: u64) {
        self.requests += n;
        match code.as_bytes().first() {
            Some(b'4') => self.errors_4xx += n,
            Some(b'5') => self.errors_5xx += n,
            _ => {}
        }
    }
}

/// Totals by route name and by (upstream, server).
#[derive(Debug, Default)]
pub struct Traffic {
    pub routes: HashMap<String, Totals>,
    pub servers: HashMap<(String, String), Totals>,
}

/// Sum the request counters of an OpenMetrics (or classic text) exposition.
pub fn from_exposition(text: &str) -> Traffic {
    let mut t = Traffic::default();
    for (name, labels, value) in text.lines().filter_map(sample) {
        let get = |k: &str| labels.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).unwrap_or("");
        match name {
            "rampart_http_requests_total" => {
                t.routes.entry(get("route").to_string()).or_default().add(get("code"), value);
            }
            "rampart_upstream_requests_total" => {
                let key = (get("upstream").to_string(), get("server").to_string());
                t.servers.entry(key).or_default().add(get("code"), value);
            }
            _ => {}
        }
    }
    t
}

/// Label names and (unescaped) values of one sample.
type Labels = Vec<(String, String)>;

/// One sample line: name, labels, value as an integer.
fn sample(line: &str) -> Option<(&str, Labels, u64)> {
    if line.starts_with('#') {
        return None;
    }
    let open = line.find('{')?;
    let name = &line[..open];
    let (labels, rest) = parse_labels(&line[open + 1..])?;
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value.max(0.0) as u64))
}

/// `k="v",k2="v2"} rest` -> labels and `rest`.
fn parse_labels(mut s: &str) -> Option<(Labels, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches(',');
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find("=\"")?;
        let key = s[..eq].to_string();
        let mut value = String::new();
        let mut chars = s[eq + 2..].char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[eq + 2 + end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_by_route_and_server() {
        let text = r#"# TYPE rampart_http_requests counter
rampart_http_requests_total{route="a\"b",method="GET",code="200"} 3
rampart_http_requests_total{route="a\"b",method="POST",code="503"} 1
rampart_http_requests_total{route="none",method="GET",code="404"} 2
rampart_upstream_requests_total{upstream="app",server="127.0.0.1:1",code="502"} 4
rampart_http_request_duration_seconds_count{route="a\"b"} 4
# EOF"#;
        let t = from_exposition(text);
        assert_eq!(t.routes["a\"b"], Totals { requests: 4, errors_4xx: 0, errors_5xx: 1 });
        assert_eq!(t.routes["none"], Totals { requests: 2, errors_4xx: 2, errors_5xx: 0 });
        assert_eq!(
            t.servers[&("app".to_string(), "127.0.0.1:1".to_string())],
            Totals { requests: 4, errors_4xx: 0, errors_5xx: 4 }
        );
        assert_eq!(t.routes.len(), 2);
    }

    #[test]
    fn junk_lines_are_skipped() {
        let t = from_exposition("rampart_http_requests_total{route=\"x\n{\n}\nrampart_http_requests_total{} nope\n");
        assert!(t.routes.is_empty());
    }
}
