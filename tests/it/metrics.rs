//! `/metrics` after real traffic: the contract's names and labels, counters
//! that moved, bounded labels, and `promtool check metrics` on the scrape.

use std::io::Write;
use std::process::{Command, Stdio};

use http::Request;

use crate::util::*;

/// Every metric family in the contract, with its type and label names.
const CONTRACT: &[(&str, &str, &[&str])] = &[
    ("rampart_http_requests_total", "counter", &["route", "method", "code"]),
    ("rampart_http_request_duration_seconds", "histogram", &["route"]),
    ("rampart_upstream_requests_total", "counter", &["upstream", "server", "code"]),
    ("rampart_upstream_server_up", "gauge", &["upstream", "server"]),
    ("rampart_upstream_in_flight", "gauge", &["upstream", "server"]),
    ("rampart_connections_active", "gauge", &["listener"]),
    ("rampart_tls_handshakes_total", "counter", &["result"]),
    ("rampart_certificate_expiry_timestamp_seconds", "gauge", &["domain"]),
    ("rampart_ratelimit_rejected_total", "counter", &["route"]),
    ("rampart_config_reloads_total", "counter", &["result"]),
];

async fn scrape(p: &Proxy, accept: Option<&str>) -> Answer {
    let mut req = Request::get(p.admin_url("/metrics"));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    send(&client(), req.body(full("")).unwrap()).await
}

/// The value of the sample line `name{labels}` (labels exactly as printed).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Label names of every sample of a family (the `le` of buckets aside).
fn label_names(text: &str, family: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, rest) = l.split_once('{')?;
            let base = name.strip_suffix("_bucket").or(name.strip_suffix("_sum")).or(name.strip_suffix("_count"));
            (name == family || base == Some(family)).then(|| {
                let labels = rest.split('}').next().unwrap_or("");
                labels
                    .split(',')
                    .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_string()))
                    .filter(|k| k != "le")
                    .collect()
            })
        })
        .collect()
}

fn promtool_check(text: &str) -> (bool, String) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool is needed for this test and could not be started ({e}); install it with \
             `apt-get install prometheus` (the test script does)"
        ),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), report)
}

#[tokio::test]
async fn metrics_move_with_traffic_and_pass_promtool() {
    let up = Upstream::named("ok").await;
    let dead = closed_port();
    let p = Proxy::start(&format!(
        "[upstreams.app]\nservers = [\"{}\"]\n[upstreams.gone]\nservers = [\"{dead}\"]\n\
         [[routes]]\nname = \"app\"\nhost = \"*\"\npath = \"/app\"\nupstream = \"app\"\n\
         [[routes]]\nhost = \"*\"\npath = \"/gone\"\nupstream = \"gone\"\n",
        up.addr
    ));
    for _ in 0..5 {
        assert_eq!(get(&p.url("/app/x"), "example.com").await.status, 200);
    }
    let r = send(&client(), Request::post(p.url("/app/y")).header("host", "h").body(full("hi")).unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(get(&p.url("/gone"), "x").await.status, 502);
    assert_eq!(get(&p.url("/nowhere/at/all"), "x").await.status, 404);
    for i in 0..20 {
        // Distinct paths and hosts must not create new series.
        let _ = get(&p.url(&format!("/app/{i}")), &format!("h{i}.example")).await;
    }

    // Counters move when a response body ends, which can trail the client
    // by a moment.
    let want = r#"rampart_http_requests_total{route="app",method="GET",code="200"} 25"#;
    assert!(
        eventually_async(std::time::Duration::from_secs(10), || async { scrape(&p, None).await.text().contains(want) })
            .await
    );
    let text = scrape(&p, None).await;
    assert!(
        text.headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"),
        "{:?}",
        text.headers
    );
    let text = text.text();
    let up_label = up.addr.to_string();
    assert_eq!(
        value(&text, r#"rampart_http_requests_total{route="app",method="GET",code="200"}"#),
        Some(25.0),
        "{text}"
    );
    assert_eq!(value(&text, r#"rampart_http_requests_total{route="app",method="POST",code="200"}"#), Some(1.0));
    assert_eq!(
        value(&text, r#"rampart_http_requests_total{route="*/gone",method="GET",code="502"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value(&text, r#"rampart_http_requests_total{route="none",method="GET",code="404"}"#), Some(1.0));
    // The access log keeps up (the test reads its stdout): nothing dropped,
    // and the counter is there to say so.
    assert_eq!(value(&text, "rampart_access_log_dropped_total"), Some(0.0), "{text}");
    assert_eq!(value(&text, r#"rampart_http_request_duration_seconds_count{route="app"}"#), Some(26.0));
    assert_eq!(
        value(&text, &format!(r#"rampart_upstream_requests_total{{upstream="app",server="{up_label}",code="200"}}"#)),
        Some(26.0)
    );
    assert_eq!(
        value(&text, &format!(r#"rampart_upstream_server_up{{upstream="app",server="{up_label}"}}"#)),
        Some(1.0)
    );
    assert_eq!(
        value(&text, &format!(r#"rampart_upstream_in_flight{{upstream="app",server="{up_label}"}}"#)),
        Some(0.0)
    );
    // Beyond the contract: the pool's idle connections (the requests went
    // one after another, so one connection served them all).
    assert_eq!(
        value(&text, &format!(r#"rampart_upstream_idle_connections{{upstream="app",server="{up_label}"}}"#)),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("# TYPE rampart_upstream_idle_connections gauge\n"), "{text}");
    assert!(value(&text, r#"rampart_connections_active{listener="http"}"#).is_some(), "{text}");
    assert_eq!(value(&text, r#"rampart_config_reloads_total{result="success"}"#), Some(0.0));
    assert_eq!(value(&text, r#"rampart_config_reloads_total{result="failure"}"#), Some(0.0));

    // Every contract family is declared with its type, and every sample
    // carries exactly the contract's label names.
    for (family, kind, labels) in CONTRACT {
        assert!(text.contains(&format!("# TYPE {family} {kind}\n")), "no `# TYPE {family} {kind}` in:\n{text}");
        for names in label_names(&text, family) {
            assert_eq!(&names, labels, "labels of {family}");
        }
    }
    // Bounded cardinality: one route label per configured route plus "none".
    let routes: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("rampart_http_requests_total{"))
        .filter_map(|l| l.split("route=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(routes.into_iter().collect::<Vec<_>>(), ["*/gone", "app", "none"]);

    let (ok, report) = promtool_check(&text);
    assert!(ok, "promtool check metrics rejected the scrape:\n{report}\n---\n{text}");

    // Prometheus asks for OpenMetrics and gets it: `# EOF`, counters
    // declared without their `_total` suffix.
    let om = scrape(&p, Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")).await;
    assert!(om.headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let om = om.text();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE rampart_http_requests counter\n"), "{om}");
    assert!(om.contains(r#"rampart_http_requests_total{route="app",method="GET",code="200"} 25"#), "{om}");
}

/// One route named with a quote, a backslash and a newline must not make
/// the whole scrape unparseable; the admin listener answers HEAD where it
/// answers GET, and a purge body over its limit is a 413.
#[tokio::test]
async fn odd_names_are_escaped_and_the_admin_listener_answers_as_http_says() {
    let up = Upstream::named("ok").await;
    let p = Proxy::start(&format!(
        "[upstreams.app]\nservers = [\"{}\"]\n\
         [[routes]]\nname = \"we\\\"ird\\\\na\\nme\"\nhost = \"*\"\npath = \"/\"\nupstream = \"app\"\n",
        up.addr
    ));
    assert_eq!(get(&p.url("/x"), "example.com").await.status, 200);
    let want = r#"rampart_http_requests_total{route="we\"ird\\na\nme",method="GET",code="200"} 1"#;
    assert!(
        eventually_async(std::time::Duration::from_secs(10), || async { scrape(&p, None).await.text().contains(want) })
            .await,
        "{}",
        scrape(&p, None).await.text()
    );
    let text = scrape(&p, None).await.text();
    let (ok, report) = promtool_check(&text);
    assert!(ok, "promtool check metrics rejected the scrape:\n{report}\n---\n{text}");

    for path in ["/metrics", "/api/status", "/", "/healthz"] {
        let head = send(&client(), Request::head(p.admin_url(path)).body(full("")).unwrap()).await;
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(head.body.is_empty());
    }
    let big = format!("{{\"host\": \"{}\"}}", "a".repeat(70_000));
    let purge = send(&client(), Request::post(p.admin_url("/api/cache/purge")).body(full(big)).unwrap()).await;
    assert_eq!(purge.status, 413, "{}", purge.text());
}
