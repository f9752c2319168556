//! Whether a stored response may answer a request as it is, stale, or
//! only after revalidation (RFC 9111 4.2 and 4.2.4, with the request's
//! `max-age`, `min-fresh`, `max-stale` and `no-cache`).

use crate::cache::policy::CacheControl;
use crate::cache::store::Entry;

/// How a stored response may be used for a request.
pub(super) enum Use {
    Fresh,
    /// Stale, but `stale-while-revalidate` allows serving it now.
    WhileRevalidate,
    /// Stale, but the request's `max-stale` accepts it.
    StaleAccepted,
    Revalidate,
}

pub(super) fn usable(e: &Entry, req_cc: &CacheControl, now: u64) -> Use {
    let age = e.age(now);
    let ttl = e.ttl(now);
    let fresh_enough =
        ttl > 0 && req_cc.max_age.is_none_or(|m| age <= m) && req_cc.min_fresh.is_none_or(|m| ttl >= m as i64);
    if e.cc.no_cache || req_cc.no_cache {
        return Use::Revalidate;
    }
    if fresh_enough {
        return Use::Fresh;
    }
    if ttl > 0 || e.cc.forbids_stale() {
        return Use::Revalidate;
    }
    let stale_for = (-ttl) as u64;
    if req_cc.max_stale.is_some_and(|max| max.is_none_or(|m| stale_for <= m)) {
        return Use::StaleAccepted;
    }
    if e.cc.stale_while_revalidate.is_some_and(|w| stale_for <= w) && req_cc.max_age.is_none() {
        return Use::WhileRevalidate;
    }
    Use::Revalidate
}
