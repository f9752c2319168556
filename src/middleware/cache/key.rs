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
