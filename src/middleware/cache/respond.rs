//! Answers made from stored responses (with `Age`, `Cache-Status` and the
//! client's own conditionals), the cache's validators on a revalidation,
//! and stored entries built from or refreshed by upstream responses.

use std::sync::OnceLock;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::body::ResponseBody;
use crate::cache::policy::{self, CacheControl};
use crate::cache::store::Entry;
use crate::cache::Settings;
pub use crate::cache::CACHE_STATUS;
use crate::upstream::{byte_range, ByteRange};

/// The client's conditional and range headers, kept before the cache
/// puts its own validators on a revalidation.
#[derive(Debug, Default, Clone)]
pub struct Conditionals {
    if_none_match: Option<String>,
    if_modified_since: Option<SystemTime>,
    range: Option<String>,
    if_range: Option<String>,
}

impl Conditionals {
    /// One pass over the request's headers (a hit's path: cheaper than a
    /// look-up per name that mostly finds nothing). `If-None-Match` lines
    /// are one list (RFC 9110 5.3); of the others the first line counts,
    /// as `HeaderMap::get` would take it. An `If-Modified-Since` later than
    /// now is ignored (RFC 9110 13.1.3).
    pub fn of(h: &HeaderMap) -> Self {
        let (mut inm, mut ims, mut range, mut if_range) = (None::<String>, None, None, None);
        for (name, value) in h {
            let slot = match *name {
                header::IF_NONE_MATCH => {
                    let Ok(v) = value.to_str() else { continue };
                    match &mut inm {
                        Some(list) => {
                            list.push_str(", ");
                            list.push_str(v);
                        }
                        None => inm = Some(v.to_string()),
                    }
                    continue;
                }
                header::IF_MODIFIED_SINCE => &mut ims,
                header::RANGE => &mut range,
                header::IF_RANGE => &mut if_range,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        let text = |v: Option<&HeaderValue>| v.and_then(|v| v.to_str().ok()).map(str::to_string);
        Conditionals {
            if_modified_since: ims
                .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?.trim()).ok())
                .filter(|since| *since <= SystemTime::now()),
            if_none_match: inm,
            range: text(range),
            if_range: text(if_range),
        }
    }

    /// The part of `e`'s body a GET's `Range` asks for (RFC 9110 14.2), as
    /// the static files answer it: one byte range, and only while an
    /// `If-Range` names the stored version (a strong `ETag` or its
    /// `Last-Modified`).
    fn range(&self, e: &Entry) -> ByteRange {
        let Some(range) = &self.range else { return ByteRange::Ignore };
        if let Some(ir) = &self.if_range {
            let ir = ir.trim();
            let current = if ir.starts_with('"') {
                e.header_str(&header::ETAG).is_some_and(|etag| etag.trim() == ir)
            } else {
                e.header_str(&header::LAST_MODIFIED).is_some_and(|lm| lm.trim() == ir)
            };
            if !current {
                return ByteRange::Ignore;
            }
        }
        byte_range(range, e.body.len() as u64)
    }

    /// Whether `e` answers them with 304 (RFC 9110 13.2.2: If-None-Match
    /// first; If-Modified-Since only without it).
    fn not_modified(&self, e: &Entry) -> bool {
        if let Some(inm) = &self.if_none_match {
            return policy::none_match(inm, e.header_str(&header::ETAG));
        }
        let Some(since) = self.if_modified_since else { return false };
        let last = policy::http_date(&e.headers, &header::LAST_MODIFIED)
            .or_else(|| policy::http_date(&e.headers, &header::DATE));
        last.is_some_and(|l| policy::secs(l) <= policy::secs(since))
    }
}

/// `Rampart; hit; ttl=N` (negative when stale).
pub fn hit(e: &Entry, now: u64) -> String {
    const HIT: &str = "Rampart; hit; ttl=";
    let mut digits = itoa::Buffer::new();
    let ttl = digits.format(e.ttl(now));
    let mut s = String::with_capacity(HIT.len() + ttl.len());
    s.push_str(HIT);
    s.push_str(ttl);
    s
}

/// Add this cache's member to `Cache-Status`, after any from upstream caches.
pub fn add_status(h: &mut HeaderMap, value: String) {
    if let Ok(v) = HeaderValue::try_from(value) {
        h.append(CACHE_STATUS.clone(), v);
    }
}

/// The stored response `e` as an answer to a `method` request.
pub fn from_entry(
    e: &Entry,
    method: &Method,
    client: &Conditionals,
    now: u64,
    status: String,
) -> Response<ResponseBody> {
    let not_modified = client.not_modified(e) && e.status == StatusCode::OK;
    let range = if method == Method::GET && !not_modified && e.status == StatusCode::OK {
        client.range(e)
    } else {
        ByteRange::Ignore
    };
    let len = e.body.len() as u64;
    let (code, body) = match range {
        _ if not_modified => (StatusCode::NOT_MODIFIED, ResponseBody::empty()),
        _ if method == Method::HEAD => (e.status, ResponseBody::empty()),
        ByteRange::One(start, end) => {
            (StatusCode::PARTIAL_CONTENT, ResponseBody::full(e.body.slice(start as usize..=end as usize)))
        }
        ByteRange::Unsatisfiable => (StatusCode::RANGE_NOT_SATISFIABLE, ResponseBody::empty()),
        ByteRange::Ignore => (e.status, ResponseBody::full(e.body.clone())),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = code;
    let h = resp.headers_mut();
    *h = e.answer_headers();
    // Both replace the template's placeholders in place.
    h.insert(header::AGE, super::num(e.age(now)));
    set_own_status(h, status);
    match range {
        _ if not_modified => {
            h.remove(header::CONTENT_LENGTH);
        }
        ByteRange::One(start, end) => {
            h.insert(header::CONTENT_LENGTH, super::num(end - start + 1));
            if let Ok(v) = HeaderValue::try_from(format!("bytes {start}-{end}/{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        ByteRange::Unsatisfiable => {
            h.insert(header::CONTENT_LENGTH, super::num(0));
            if let Ok(v) = HeaderValue::try_from(format!("bytes */{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        ByteRange::Ignore if method == Method::HEAD && !h.contains_key(header::CONTENT_LENGTH) => {
            h.insert(header::CONTENT_LENGTH, super::num(len));
        }
        ByteRange::Ignore => {}
    }
    resp
}

/// Replace the last `Cache-Status` value (this cache's member, after any
/// upstream cache's) with `value`.
fn set_own_status(h: &mut HeaderMap, value: String) {
    let Ok(v) = HeaderValue::try_from(value) else { return };
    match h.entry(&CACHE_STATUS) {
        header::Entry::Occupied(mut o) => {
            if let Some(last) = o.iter_mut().last() {
                *last = v;
            }
        }
        header::Entry::Vacant(vacant) => {
            vacant.insert(v);
        }
    }
}

/// `only-if-cached` with nothing usable stored: 504 (RFC 9111 5.2.1.7).
pub fn only_if_cached() -> Response<ResponseBody> {
    let mut r = crate::body::plain_response(StatusCode::GATEWAY_TIMEOUT, "not cached\n");
    add_status(r.headers_mut(), "Rampart; fwd=miss; detail=only-if-cached".to_string());
    r
}

/// Replace the client's validators with the stored response's; false if
/// it has none (the request then goes as it is).
pub fn add_validators(h: &mut HeaderMap, e: &Entry) -> bool {
    let etag = e.headers.get(header::ETAG).cloned();
    let last_modified = e.headers.get(header::LAST_MODIFIED).cloned();
    if etag.is_none() && last_modified.is_none() {
        return false;
    }
    h.remove(header::IF_NONE_MATCH);
    h.remove(header::IF_MODIFIED_SINCE);
    if let Some(v) = etag {
        h.insert(header::IF_NONE_MATCH, v);
    }
    if let Some(v) = last_modified {
        h.insert(header::IF_MODIFIED_SINCE, v);
    }
    true
}

/// Add this cache to the request's `Surrogate-Capability`, so that the
/// origin may target `Surrogate-Control` directives `;rampart`.
pub fn announce_surrogate(h: &mut HeaderMap) {
    h.append(&policy::SURROGATE_CAPABILITY, policy::SURROGATE_CAPABILITY_VALUE.clone());
}

/// Headers never stored: per hop, recomputed (`Age`), or a cookie meant
/// for the one client that caused the fetch.
fn unstored(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "age"
            | "set-cookie"
            | "set-cookie2"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
            | "proxy-authenticate"
    )
}

/// A stored entry from an upstream response's head and its whole body.
#[allow(clippy::too_many_arguments)]
pub fn new_entry(
    host: &str,
    path: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
    settings: &Settings,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Entry {
    let mut stored = HeaderMap::with_capacity(headers.len() + 1);
    for (k, v) in headers {
        if !unstored(k) {
            stored.append(k.clone(), v.clone());
        }
    }
    if !stored.contains_key(header::DATE) {
        if let Ok(v) = HeaderValue::try_from(httpdate::fmt_http_date(response_time)) {
            stored.insert(header::DATE, v);
        }
    }
    let cc = CacheControl::parse_response(headers);
    Entry {
        host: host.to_string(),
        path: path.to_string(),
        status,
        lifetime: policy::freshness_lifetime(status, headers, &cc, settings.default_ttl, response_time),
        initial_age: policy::initial_age(headers, request_time, response_time),
        response_time: policy::secs(response_time),
        headers: stored,
        body,
        stored: 0,
        cc,
        answer: OnceLock::new(),
    }
}

/// Whether `fresh`, a stored response just refreshed by the 304 whose
/// headers are `not_modified`, may still be stored: the 304 may have made
/// it `private` or `no-store`, or set a cookie (RFC 9111 4.3.4 updates
/// the stored response with what the 304 says; 3 then decides anew).
pub fn still_storable(fresh: &Entry, not_modified: &HeaderMap, req: &HeaderMap, req_cc: &CacheControl) -> bool {
    let mut headers = fresh.headers.clone();
    for cookie in not_modified.get_all(header::SET_COOKIE) {
        headers.append(header::SET_COOKIE, cookie.clone());
    }
    policy::storable(&Method::GET, req, req_cc, fresh.status, &headers, &fresh.cc).is_ok()
}

/// The stored response `old` refreshed by a 304's headers (RFC 9111 4.3.4):
/// each header the 304 carries replaces the stored one, `Content-Length`
/// and hop-by-hop ones aside; freshness counts from now.
pub fn merge_304(
    old: &Entry,
    fresh: &HeaderMap,
    settings: &Settings,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Entry {
    let mut headers = old.headers.clone();
    for name in fresh.keys() {
        // What the stored body depends on stays as stored (RFC 9111 3.2).
        let body_bound = matches!(name.as_str(), "content-encoding" | "content-md5" | "content-range" | "etag");
        if unstored(name) || body_bound || name == header::CONTENT_LENGTH || name == CACHE_STATUS {
            continue;
        }
        headers.remove(name);
        for v in fresh.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    if !fresh.contains_key(header::DATE) {
        if let Ok(v) = HeaderValue::try_from(httpdate::fmt_http_date(response_time)) {
            headers.insert(header::DATE, v);
        }
    }
    let mut age_source = headers.clone();
    age_source.remove(header::AGE);
    if let Some(a) = fresh.get(header::AGE) {
        age_source.insert(header::AGE, a.clone());
    }
    let cc = CacheControl::parse_response(&headers);
    Entry {
        host: old.host.clone(),
        path: old.path.clone(),
        status: old.status,
        lifetime: policy::freshness_lifetime(old.status, &headers, &cc, settings.default_ttl, response_time),
        initial_age: policy::initial_age(&age_source, request_time, response_time),
        response_time: policy::secs(response_time),
        headers,
        body: old.body.clone(),
        stored: 0,
        cc,
        answer: OnceLock::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn stored(headers: &[(&str, &str)]) -> Entry {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let at = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let body = Bytes::from_static(b"hello");
        new_entry("a.test", "/x", StatusCode::OK, &h, body, &Settings::default(), at, at)
    }

    fn values(r: &Response<ResponseBody>, name: &str) -> Vec<String> {
        r.headers().get_all(name).iter().map(|v| v.to_str().unwrap().to_string()).collect()
    }

    #[test]
    fn an_answer_has_one_age_and_its_own_status_after_upstream_members() {
        let e = stored(&[
            ("cache-control", "max-age=60"),
            ("cache-status", "Upstream; hit"),
            ("age", "3"),
            ("content-length", "5"),
        ]);
        // The template is made on the first answer and reused by later ones;
        // the upstream `Age` counts in (RFC 9111 4.2.3).
        for (now, age) in [(1_000_010, "13"), (1_000_020, "23")] {
            let r = from_entry(&e, &Method::GET, &Conditionals::default(), now, hit(&e, now));
            assert_eq!(values(&r, "age"), [age]);
            assert_eq!(values(&r, "cache-status"), ["Upstream; hit".to_string(), hit(&e, now)]);
            assert_eq!(values(&r, "content-length"), ["5"]);
        }
        // The stored headers themselves carry neither placeholder.
        assert!(!e.headers.contains_key(header::AGE));
        assert_eq!(e.headers.get_all(&CACHE_STATUS).iter().count(), 1);
    }

    #[test]
    fn a_not_modified_answer_drops_the_length_and_a_head_keeps_it() {
        let e = stored(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
        let mut req = HeaderMap::new();
        req.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"v1\""));
        let r = from_entry(&e, &Method::GET, &Conditionals::of(&req), 1_000_001, "s".into());
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert!(values(&r, "content-length").is_empty());
        assert_eq!(values(&r, "cache-status"), ["s"]);
        let head = from_entry(&e, &Method::HEAD, &Conditionals::default(), 1_000_001, "s".into());
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(values(&head, "content-length"), ["5"]);
    }
}
