//! The rules of RFC 9111 as pure functions: `Cache-Control` parsing, whether
//! a response may be stored by a shared cache, its freshness lifetime, and
//! its age; `Surrogate-Control` where it speaks to this cache. No I/O and
//! no clocks: times come in as arguments.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode};

/// The directives of one message's `Cache-Control` (request or response).
/// Where a directive appears twice, the first one counts (RFC 9111 4.2.1).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    /// Request: `max-stale` (`Some(None)`: any staleness).
    pub max_stale: Option<Option<u64>>,
    pub min_fresh: Option<u64>,
    pub only_if_cached: bool,
    /// Response: `Surrogate-Control: max-age` for this cache
    /// ([`CacheControl::parse_response`]).
    pub surrogate_max_age: Option<u64>,
}

/// `Surrogate-Control` (W3C Edge Architecture 1.0): what an origin tells
/// the caches in front of it (surrogates), over what `Cache-Control` tells
/// everyone. Never passed on to clients.
pub static SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// The request header by which surrogates announce themselves to the
/// origin, each with its device token.
pub static SURROGATE_CAPABILITY: HeaderName = HeaderName::from_static("surrogate-capability");

/// This cache's device token: `Surrogate-Control` directives targeted
/// `;rampart` are for it, those targeted at any other token are not.
pub const SURROGATE_TOKEN: &str = "rampart";

/// This cache's `Surrogate-Capability` member.
pub static SURROGATE_CAPABILITY_VALUE: http::HeaderValue = http::HeaderValue::from_static("rampart=\"Surrogate/1.0\"");

/// The `Surrogate-Control` directives that reach this cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Surrogate {
    no_store: bool,
    max_age: Option<u64>,
}

impl Surrogate {
    /// Directives targeted `;rampart` take precedence over untargeted
    /// ones; directives targeted at other devices are ignored. A value
    /// is read strictly (digits right after `=`: `max-age= 5` says
    /// nothing); of `max-age=N+M` only the lifetime `N` is used.
    fn parse(headers: &HeaderMap) -> Surrogate {
        let (mut mine, mut everyone) = (Surrogate::default(), Surrogate::default());
        for line in headers.get_all(&SURROGATE_CONTROL) {
            let Ok(line) = line.to_str() else { continue };
            for item in split_list(line) {
                let item = item.trim();
                // Optional whitespace around the `;`, as in any parameter.
                let (directive, slot) = match item.split_once(';') {
                    None => (item, &mut everyone),
                    Some((d, target)) if target.trim().eq_ignore_ascii_case(SURROGATE_TOKEN) => {
                        (d.trim_end(), &mut mine)
                    }
                    Some(_) => continue,
                };
                let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
                if name.eq_ignore_ascii_case("no-store") {
                    slot.no_store = true;
                } else if name.eq_ignore_ascii_case("max-age") {
                    let lifetime = value.split_once('+').map_or(value, |(n, _)| n);
                    if !lifetime.is_empty() && lifetime.bytes().all(|b| b.is_ascii_digit()) {
                        _ = slot.max_age.get_or_insert(delta(Some(lifetime)));
                    }
                }
            }
        }
        if mine != Surrogate::default() {
            mine
        } else {
            everyone
        }
    }
}

/// A delta-seconds value; one that is not a number counts as 0 (stale),
/// one too large for the clock as "very long".
fn delta(v: Option<&str>) -> u64 {
    let Some(v) = v else { return 0 };
    let v = v.trim().trim_matches('"');
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    v.parse::<u64>().unwrap_or(u64::from(u32::MAX)).min(u64::from(u32::MAX))
}

/// Split a list on commas outside quoted strings.
fn split_list(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

impl CacheControl {
    pub fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for line in headers.get_all(header::CACHE_CONTROL) {
            let Ok(line) = line.to_str() else { continue };
            for item in split_list(line) {
                let (name, value) = match item.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v)),
                    None => (item.trim(), None),
                };
                match name.to_ascii_lowercase().as_str() {
                    "max-age" => _ = cc.max_age.get_or_insert(delta(value)),
                    "s-maxage" => _ = cc.s_maxage.get_or_insert(delta(value)),
                    "no-store" => cc.no_store = true,
                    // Qualified forms (`no-cache="Set-Cookie"`, `private="x"`)
                    // are taken as the unqualified ones: stricter, never wrong.
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" => cc.must_revalidate = true,
                    "proxy-revalidate" => cc.proxy_revalidate = true,
                    "must-understand" => cc.must_understand = true,
                    "stale-while-revalidate" => _ = cc.stale_while_revalidate.get_or_insert(delta(value)),
                    "stale-if-error" => _ = cc.stale_if_error.get_or_insert(delta(value)),
                    "max-stale" => _ = cc.max_stale.get_or_insert(value.map(|v| delta(Some(v)))),
                    "min-fresh" => _ = cc.min_fresh.get_or_insert(delta(value)),
                    "only-if-cached" => cc.only_if_cached = true,
                    _ => {}
                }
            }
        }
        cc
    }

    /// A response's directives for this cache: its `Cache-Control`,
    /// overridden where `Surrogate-Control` speaks to this cache. Its
    /// `no-store` forbids storing; its `max-age` sets the lifetime over
    /// `s-maxage`, `max-age` and `Expires`, and lifts `Cache-Control`'s
    /// `no-store` and `no-cache` (those then speak to the browsers behind
    /// this cache, as at Fastly and Akamai). `private`, `Set-Cookie` and
    /// `Authorization` keep their rules: a surrogate directive never makes
    /// private data shared.
    pub fn parse_response(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::parse(headers);
        if !headers.contains_key(&SURROGATE_CONTROL) {
            return cc;
        }
        let surrogate = Surrogate::parse(headers);
        if surrogate.no_store {
            cc.no_store = true;
            // `must-understand` suspends only Cache-Control's no-store.
            cc.must_understand = false;
        } else if let Some(lifetime) = surrogate.max_age {
            cc.surrogate_max_age = Some(lifetime);
            cc.no_store = false;
            cc.no_cache = false;
        }
        cc
    }

    /// A request's directives, with `Pragma: no-cache` standing in for a
    /// missing `Cache-Control` (RFC 9111 5.4).
    pub fn parse_request(headers: &HeaderMap) -> CacheControl {
        // Two look-ups, not three, for the usual request without either.
        if headers.contains_key(header::CACHE_CONTROL) {
            return CacheControl::parse(headers);
        }
        let no_cache = headers
            .get_all(header::PRAGMA)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.to_ascii_lowercase().contains("no-cache")));
        CacheControl { no_cache, ..CacheControl::default() }
    }

    /// Whether a stored response must never be served stale.
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.no_cache || self.s_maxage.is_some()
    }
}

/// Statuses a cache may store with heuristic freshness (RFC 9110 15.1).
pub fn heuristically_cacheable(s: StatusCode) -> bool {
    matches!(s.as_u16(), 200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// Statuses whose semantics this cache understands (for `must-understand`).
fn understood(s: StatusCode) -> bool {
    heuristically_cacheable(s) || matches!(s.as_u16(), 302 | 303 | 307)
}

/// Why a response is not stored; `None` from [`storable`] means it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Method,
    Status,
    NoStore,
    Private,
    Authorization,
    SetCookie,
    VaryStar,
    NoFreshness,
}

/// RFC 9111 3 for a shared cache, plus this proxy's rule that a response
/// that sets a cookie is stored only when it says `public` or `s-maxage`.
pub fn storable(
    method: &Method,
    req_headers: &HeaderMap,
    req_cc: &CacheControl,
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
) -> Result<(), NotStored> {
    if method != Method::GET {
        return Err(NotStored::Method);
    }
    // 206 is not stored: ranges are not combined. 412 and 416 answer this
    // request's own preconditions or range, which the key does not hold:
    // stored, one `If-Match: "x"` would answer every later GET of the URL
    // with 412 for as long as the answer's `max-age`.
    if status.is_informational()
        || matches!(
            status,
            StatusCode::PARTIAL_CONTENT
                | StatusCode::NOT_MODIFIED
                | StatusCode::PRECONDITION_FAILED
                | StatusCode::RANGE_NOT_SATISFIABLE
        )
    {
        return Err(NotStored::Status);
    }
    if cc.must_understand {
        if !understood(status) {
            return Err(NotStored::Status);
        }
    } else if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if req_cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    let explicit_shared = cc.public || cc.s_maxage.is_some();
    if req_headers.contains_key(header::AUTHORIZATION) && !(explicit_shared || cc.must_revalidate) {
        return Err(NotStored::Authorization);
    }
    // `Set-Cookie2` (RFC 2965, obsolete) sets a cookie all the same.
    let sets_cookie = headers.contains_key(header::SET_COOKIE) || headers.contains_key("set-cookie2");
    if sets_cookie && !explicit_shared {
        return Err(NotStored::SetCookie);
    }
    if vary_names(headers).is_none() {
        return Err(NotStored::VaryStar);
    }
    let explicit = cc.public
        || cc.max_age.is_some()
        || cc.s_maxage.is_some()
        || cc.surrogate_max_age.is_some()
        || headers.contains_key(header::EXPIRES);
    if !explicit && !heuristically_cacheable(status) {
        return Err(NotStored::NoFreshness);
    }
    Ok(())
}

/// The header names a response varies on, lowercased and in order;
/// `None` for `Vary: *` (never stored).
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names: Vec<HeaderName> = Vec::new();
    for line in headers.get_all(header::VARY) {
        let s = line.to_str().ok()?;
        for part in s.split(',') {
            let part = part.trim();
            if part == "*" {
                return None;
            }
            if let Ok(n) = HeaderName::from_bytes(part.as_bytes()) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
    }
    Some(names)
}

pub fn http_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    headers.get(name)?.to_str().ok().and_then(|s| httpdate::parse_http_date(s.trim()).ok())
}

/// Seconds since the epoch (0 for times before it).
pub fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The freshness lifetime of a response in a shared cache (RFC 9111
/// 4.2.1), in seconds. `heuristic` (the middleware's `default_ttl`) applies
/// only where no explicit lifetime is given and the response allows it.
pub fn freshness_lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
    heuristic: Duration,
    response_time: SystemTime,
) -> u64 {
    if let Some(s) = cc.surrogate_max_age {
        return s;
    }
    if let Some(s) = cc.s_maxage {
        return s;
    }
    if let Some(m) = cc.max_age {
        return m;
    }
    if headers.contains_key(header::EXPIRES) {
        // An invalid Expires (such as "0") means already expired.
        let Some(expires) = http_date(headers, &header::EXPIRES) else { return 0 };
        let date = http_date(headers, &header::DATE).unwrap_or(response_time);
        return secs(expires).saturating_sub(secs(date));
    }
    if heuristically_cacheable(status) || cc.public {
        return heuristic.as_secs();
    }
    0
}

/// `Age` as sent. Anything but one non-negative integer (a list, a
/// second line, a sign, a fraction, a parameter) makes the response stale,
/// as the HTTP caching test suite expects.
pub fn age_value(headers: &HeaderMap) -> u64 {
    let mut lines = headers.get_all(header::AGE).iter();
    let Some(first) = lines.next() else { return 0 };
    let stale = u64::from(u32::MAX);
    if lines.next().is_some() {
        return stale;
    }
    let v = first.to_str().unwrap_or("").trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return stale;
    }
    v.parse::<u64>().unwrap_or(stale)
}

/// The corrected initial age of a response received at `response_time`
/// for a request sent at `request_time` (RFC 9111 4.2.3).
pub fn initial_age(headers: &HeaderMap, request_time: SystemTime, response_time: SystemTime) -> u64 {
    let date = http_date(headers, &header::DATE).map_or(secs(response_time), secs);
    let apparent = secs(response_time).saturating_sub(date);
    let delay = secs(response_time).saturating_sub(secs(request_time));
    apparent.max(age_value(headers) + delay)
}

/// Whether `If-None-Match` (a list or `*`) matches `etag`, weakly.
pub fn none_match(if_none_match: &str, etag: Option<&str>) -> bool {
    let Some(etag) = etag else { return false };
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let tag = strip(etag);
    split_list(if_none_match).into_iter().any(|t| t.trim() == "*" || strip(t) == tag)
}

#[cfg(test)]
mod tests;
