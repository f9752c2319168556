//! The cache's response phase: a 304 to a revalidation refreshes the
//! stored response (or ends its reuse, when it no longer may be stored), a
//! 5xx or a failed upstream is answered stale where `stale-if-error`
//! allows, and a storable answer streams to the client while it is
//! captured ([`super::capture`]). `Surrogate-Control` is for this cache
//! and goes no further. It tells the key's waiters how the fetch
//! ended, and an unsafe method's success invalidates the URL.

use std::sync::Arc;
use std::time::SystemTime;

use http::header;
use http::{Method, Response, StatusCode};

use super::key::same_origin_key;
use super::{capture, is_safe, respond, CacheMiddleware, Pending};
use crate::body::ResponseBody;
use crate::cache::flight::Outcome;
use crate::cache::policy::{self, CacheControl, SURROGATE_CONTROL};
use crate::cache::store::now_secs;

impl CacheMiddleware {
    /// The response phase: refresh on 304, stale on error, store on the way.
    pub(super) fn response_phase(
        &self,
        mut resp: Response<ResponseBody>,
        mut p: Box<Pending>,
    ) -> Response<ResponseBody> {
        let status = resp.status();
        if p.method != Method::GET && p.method != Method::HEAD {
            if !is_safe(&p.method) && (status.is_success() || status.is_redirection()) {
                p.cache.invalidate(&p.primary);
                // And the same-origin URLs the answer names (RFC 9111 4.4).
                for name in [header::LOCATION, header::CONTENT_LOCATION] {
                    if let Some(key) = resp.headers().get(&name).and_then(|v| same_origin_key(&p.primary, v)) {
                        p.cache.invalidate(&key);
                    }
                }
            }
            p.counter.count("bypass");
            resp.headers_mut().remove(&SURROGATE_CONTROL);
            respond::add_status(resp.headers_mut(), "Rampart; fwd=method".to_string());
            return resp;
        }
        let now = now_secs();
        if let Some(stale) = &p.stale {
            if status == StatusCode::NOT_MODIFIED && p.revalidating {
                let fresh = respond::merge_304(stale, resp.headers(), &p.settings, p.request_time, SystemTime::now());
                // Not when a purge came meanwhile (the leader's fetch is doomed).
                let purged = p.leader.as_ref().is_some_and(|l| l.doomed());
                let kept = !purged && respond::still_storable(&fresh, resp.headers(), &p.req_headers, &p.req_cc);
                let e = if kept {
                    p.cache.store.update(&p.primary, &p.req_headers, fresh)
                } else {
                    // The 304 made it private, no-store or a cookie's, or
                    // it was purged: this client gets it, nobody else does.
                    p.cache.invalidate(&p.primary);
                    Arc::new(fresh)
                };
                if let Some(l) = p.leader.take() {
                    l.finish(if kept { Outcome::Stored } else { Outcome::NotStored });
                }
                p.counter.count("revalidated");
                let cs = format!("Rampart; fwd={}; fwd-status=304{}", p.fwd, if kept { "; stored" } else { "" });
                let mut answer = respond::from_entry(&e, &p.method, &p.client, now, cs);
                // The 304 answered this client's request: its cookies are
                // this client's, never stored (RFC 9111 3.1).
                for cookie in resp.headers().get_all(header::SET_COOKIE) {
                    answer.headers_mut().append(header::SET_COOKIE, cookie.clone());
                }
                return answer;
            }
            let sie = p.req_cc.stale_if_error.or(stale.cc.stale_if_error);
            let error = matches!(status.as_u16(), 500 | 502 | 503 | 504);
            if error && !stale.cc.forbids_stale() && sie.is_some_and(|w| (-stale.ttl(now)).max(0) as u64 <= w) {
                if let Some(l) = p.leader.take() {
                    l.finish(Outcome::NotStored);
                }
                p.counter.count("stale");
                let cs = format!(
                    "{}; fwd=stale; fwd-status={}; detail=stale-if-error",
                    respond::hit(stale, now),
                    status.as_u16()
                );
                return respond::from_entry(stale, &p.method, &p.client, now, cs);
            }
        }
        p.counter.count("miss");
        let cs = format!("Rampart; fwd={}; fwd-status={}", p.fwd, status.as_u16());
        if p.method == Method::HEAD {
            resp.headers_mut().remove(&SURROGATE_CONTROL);
            respond::add_status(resp.headers_mut(), cs);
            return resp;
        }
        let cc = CacheControl::parse_response(resp.headers());
        let ok = policy::storable(&p.method, &p.req_headers, &p.req_cc, status, resp.headers(), &cc);
        let names = policy::vary_names(resp.headers());
        let too_big = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > p.settings.max_object_size);
        // Worth keeping: fresh for a while, or revalidatable, or usable stale.
        let lifetime =
            policy::freshness_lifetime(status, resp.headers(), &cc, p.settings.default_ttl, SystemTime::now());
        let useful = lifetime > 0
            || resp.headers().contains_key(header::ETAG)
            || resp.headers().contains_key(header::LAST_MODIFIED)
            || cc.stale_if_error.is_some();
        match (ok, names) {
            (Ok(()), Some(names)) if !too_big && useful => capture::wrap(resp, *p, names, format!("{cs}; stored")),
            _ => {
                if let Some(l) = p.leader.take() {
                    l.finish(Outcome::NotStored);
                }
                resp.headers_mut().remove(&SURROGATE_CONTROL);
                respond::add_status(resp.headers_mut(), cs);
                resp
            }
        }
    }
}
