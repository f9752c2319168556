//! Which precompressed siblings a client accepts, best first, read from
//! its `Accept-Encoding` lines (q-values, `*`, `x-gzip`).

use http::header::{self, HeaderMap};
use smallvec::SmallVec;

use super::lookup::Coding;

/// What a client accepts of the precompressed codings, best first: inline,
/// so a memo hit with `Accept-Encoding` allocates nothing for it.
pub type Codings = SmallVec<[Coding; 3]>;

/// The codings with a sibling the client accepts, best first: by q-value,
/// ties in the server's order (br, zstd, gzip). One pass over the
/// `Accept-Encoding` lines (one list, RFC 9110 5.3): a coding takes the
/// q-value of the first item naming it, else that of the last `*`, else 0;
/// only those items' parameters are read.
pub fn accepted(headers: &HeaderMap) -> Codings {
    let lines = headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok());
    let mut named: [Option<f32>; 3] = [None; 3];
    let mut star = None;
    for item in lines.flat_map(|line| line.split(',')) {
        let (name, params) = item.split_once(';').unwrap_or((item, ""));
        let name = name.trim();
        if name == "*" {
            star = Some(q_param(params));
            continue;
        }
        let matches = |c: &Coding| {
            name.eq_ignore_ascii_case(c.token()) || (matches!(c, Coding::Gzip) && name.eq_ignore_ascii_case("x-gzip"))
        };
        if let Some(i) = Coding::ALL.iter().position(matches) {
            if named[i].is_none() {
                named[i] = Some(q_param(params));
            }
        }
    }
    let mut out: SmallVec<[(Coding, f32); 3]> =
        Coding::ALL.iter().zip(named).map(|(&c, q)| (c, q.or(star).unwrap_or(0.0))).filter(|&(_, q)| q > 0.0).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out.into_iter().map(|(c, _)| c).collect()
}

/// The `q` of an item's parameters (`;q=0.5`); 1 without one.
fn q_param(params: &str) -> f32 {
    params
        .split(';')
        .filter_map(|p| {
            let p = p.trim();
            p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="))
        })
        .find_map(|v| v.trim().parse::<f32>().ok())
        .unwrap_or(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn codings_by_q_value_then_server_order() {
        let v = |s: &str| {
            let mut h = HeaderMap::new();
            for line in s.split(" | ") {
                h.append(header::ACCEPT_ENCODING, HeaderValue::from_str(line).unwrap());
            }
            accepted(&h).to_vec()
        };
        assert_eq!(v("gzip, deflate, br, zstd"), vec![Coding::Br, Coding::Zstd, Coding::Gzip]);
        assert_eq!(v("gzip;q=1, br;q=0.5"), vec![Coding::Gzip, Coding::Br]);
        assert_eq!(v("br;q=0, gzip"), vec![Coding::Gzip]);
        assert_eq!(v("*"), vec![Coding::Br, Coding::Zstd, Coding::Gzip]);
        assert_eq!(v("identity"), vec![]);
        assert!(accepted(&HeaderMap::new()).is_empty());
        // Lines are one list.
        assert_eq!(v("identity | br"), vec![Coding::Br]);
        // The first item naming a coding counts; `*` (the last one) covers
        // the others; x-gzip is gzip.
        assert_eq!(v("gzip;q=0.2, gzip;q=0.9, br;q=0.5"), vec![Coding::Br, Coding::Gzip]);
        assert_eq!(v("br;q=0.3, *;q=0.1, *;q=0.8"), vec![Coding::Zstd, Coding::Gzip, Coding::Br]);
        assert_eq!(v("x-gzip; Q=0.4"), vec![Coding::Gzip]);
        assert_eq!(v("zstd;level=3;q=0, *"), vec![Coding::Br, Coding::Gzip]);
    }
}
