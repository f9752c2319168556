//! What a cache key is made of, from the request and from an answer's
//! headers: the request's host as the client sent it, the key's host
//! without its port (for a purge by host), and the key a same-origin
//! `Location` or `Content-Location` names (invalidated by an unsafe
//! request's answer, RFC 9111 section 4.4).

use http::header::{self, HeaderValue};
use http::Request;

use crate::body::RequestBody;

/// The request's `Host` as the client sent it (or its URI's authority).
pub(super) fn request_host(req: &Request<RequestBody>) -> &str {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// Push `host` onto a key as routing reads it: lowercase, and without the
/// trailing dot of a fully qualified name (`App.test.:80` is `app.test:80`),
/// so one resource has one key and a purge by host finds it. Returns
/// where the host is in `key`.
pub(super) fn push_host(key: &mut String, host: &str) -> std::ops::Range<usize> {
    let start = key.len();
    let name_end = if host.starts_with('[') {
        host.find(']').map_or(host.len(), |i| i + 1)
    } else {
        host.find(':').unwrap_or(host.len())
    };
    match host[..name_end].strip_suffix('.') {
        Some(name) => {
            key.push_str(name);
            key.push_str(&host[name_end..]);
        }
        None => key.push_str(host),
    }
    key[start..].make_ascii_lowercase();
    start..key.len()
}

/// The key's host (lowercase, port kept) without the port.
pub(super) fn bare_host(key_host: &str) -> String {
    if key_host.starts_with('[') {
        key_host.find(']').map_or(key_host, |i| &key_host[..=i]).to_string()
    } else {
        key_host.split(':').next().unwrap_or("").to_string()
    }
}

/// The cache key of a `Location`/`Content-Location` value when it is on
/// the same origin as `primary` (a path, or an absolute URL to that origin).
pub(super) fn same_origin_key(primary: &str, v: &HeaderValue) -> Option<String> {
    let v = v.to_str().ok()?.trim();
    let scheme_end = primary.find("://")? + 3;
    let origin_end = primary[scheme_end..].find('/').map_or(primary.len(), |i| scheme_end + i);
    let origin = &primary[..origin_end];
    if v.starts_with('/') && !v.starts_with("//") {
        return Some(format!("{origin}{v}"));
    }
    let lower = v.to_ascii_lowercase();
    if lower.starts_with(origin) && lower[origin.len()..].starts_with('/') {
        return Some(format!("{origin}{}", &v[origin.len()..]));
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_host_is_keyed_as_routing_reads_it() {
        for (host, want) in [
            ("App.Test", "app.test"),
            ("app.test.", "app.test"),
            ("App.test.:8080", "app.test:8080"),
            ("[::1]:80", "[::1]:80"),
            ("", ""),
        ] {
            let mut key = "http://".to_string();
            let at = super::push_host(&mut key, host);
            assert_eq!(&key[at], want, "{host}");
        }
    }
}
