//! `rate_limit`: a GCRA limiter (governor) per client key: the client IP
//! (see `client_ip` for `trusted_proxies`) or, with `key_header`, a header
//! such as an API key. Over the limit: 429 with `Retry-After`; every answer
//! carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.
//! Keys are pruned by `prune()`, which the app calls periodically, so
//! memory stays bounded however many clients pass.
//!
//! With `scope = "cluster"` the bucket lives in Redis (`cluster::Cluster::take`,
//! the same GCRA, one round trip) under `PREFIX rl:NAME:CLIENT`, so every
//! instance draws from one bucket per client. When Redis does not answer,
//! `on_store_error` decides: `local` (this instance's own buckets, so the
//! limit holds per instance), `allow` (no limit) or `deny` (429).

use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use ipnet::IpNet;

use super::client_ip;
use super::{Ctx, RequestFacts};
use crate::body::plain_response;
use crate::body::{RequestBody, ResponseBody};
use crate::cluster::{Cluster, Verdict};
use crate::metrics::{Name, RouteLabels};

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Where buckets live. In-process (governor) today; a shared backend
/// (Redis, for limits that hold across instances) implements this too.
pub trait Buckets: Send + Sync {
    /// Take one token for `key`: `Ok(remaining)` or `Err(wait)`.
    fn take(&self, key: u64) -> Result<u32, Duration>;
    /// Forget keys whose bucket is full again; give memory back.
    fn prune(&self);
    /// Keys currently held.
    fn len(&self) -> usize;
}

/// Keys are 64-bit hashes of the client key: fixed size whatever the key
/// (an IPv6 address, a long API key), and no key text kept in memory.
struct LocalBuckets {
    limiter: RateLimiter<u64, DefaultKeyedStateStore<u64>, DefaultClock, StateInformationMiddleware>,
    clock: DefaultClock,
}

impl Buckets for LocalBuckets {
    fn take(&self, key: u64) -> Result<u32, Duration> {
        match self.limiter.check_key(&key) {
            Ok(state) => Ok(state.remaining_burst_capacity()),
            Err(not_until) => Err(not_until.wait_time_from(self.clock.now())),
        }
    }

    fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.limiter.len()
    }
}

/// What a cluster-scoped limit does when Redis does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    Local,
    Allow,
    Deny,
}

/// `scope = "cluster"`: the shared bucket and the fallback.
struct Shared {
    store: std::sync::Arc<Cluster>,
    /// `PREFIX rl:NAME:`
    key_prefix: String,
    on_error: OnStoreError,
    interval: Duration,
    burst: u32,
}

pub struct RateLimit {
    limiter: Box<dyn Buckets>,
    shared: Option<Shared>,
    limit_header: HeaderValue,
    trusted: Vec<IpNet>,
    key_header: Option<HeaderName>,
    hasher: std::collections::hash_map::RandomState,
    /// Seconds for a full bucket to refill (the `RateLimit-Reset` upper bound).
    period: Duration,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").field("limit", &self.limit_header).field("keys", &self.limiter.len()).finish()
    }
}

/// A request's bucket keys: this instance's, and the shared one.
#[derive(Debug)]
pub struct Keys {
    local: u64,
    shared: Option<String>,
}

/// Limiter state to report on the response.
#[derive(Debug, Clone, Copy)]
pub struct RateInfo {
    pub remaining: u32,
    pub reset_secs: u64,
}

impl RateLimit {
    pub fn new(average: f64, burst: Option<u32>, trusted: &[String], key_header: Option<&str>) -> Result<Self, String> {
        Self::scoped(average, burst, trusted, key_header, None)
    }

    /// `cluster`: `(store, middleware name, on_store_error)` for `scope =
    /// "cluster"`; `None` keeps the buckets in this process.
    pub fn scoped(
        average: f64,
        burst: Option<u32>,
        trusted: &[String],
        key_header: Option<&str>,
        cluster: Option<(std::sync::Arc<Cluster>, &str, OnStoreError)>,
    ) -> Result<Self, String> {
        if !(average.is_finite() && average > 0.0 && average <= 1e9) {
            return Err(format!("average must be a positive number of requests per second, got {average}"));
        }
        let burst = burst.unwrap_or_else(|| average.ceil() as u32).max(1);
        let burst = NonZeroU32::new(burst).ok_or("burst must be at least 1")?;
        let per_request = Duration::from_secs_f64(1.0 / average);
        let quota = Quota::with_period(per_request).ok_or("average is too high")?.allow_burst(burst);
        let key_header = key_header
            .map(|h| HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("invalid key_header {h:?}")))
            .transpose()?;
        let limit_header =
            HeaderValue::from_str(&format!("{}", average.round().max(1.0) as u64)).map_err(|e| e.to_string())?;
        let shared = cluster.map(|(store, name, on_error)| Shared {
            key_prefix: store.key(&format!("rl:{name}:")),
            store,
            on_error,
            interval: per_request,
            burst: burst.get(),
        });
        Ok(RateLimit {
            shared,
            limiter: Box::new(LocalBuckets {
                limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
                clock: DefaultClock::default(),
            }),
            limit_header,
            trusted: client_ip::parse_cidrs(trusted)?,
            key_header,
            hasher: Default::default(),
            period: per_request * burst.get(),
        })
    }

    fn key(&self, req: &Request<RequestBody>, ctx: &Ctx<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        match self.key_header.as_ref().and_then(|n| req.headers().get(n)) {
            Some(v) => {
                h.write_u8(1);
                h.write(v.as_bytes());
            }
            None => {
                h.write_u8(0);
                match client_ip::resolve(ctx.peer, req.headers(), &self.trusted) {
                    std::net::IpAddr::V4(v4) => h.write(&v4.octets()),
                    std::net::IpAddr::V6(v6) => h.write(&v6.octets()),
                }
            }
        }
        h.finish()
    }

    /// The client's key as every instance spells it: the address, or a
    /// stable hash of the key header (never the header's text in Redis).
    fn shared_key(&self, shared: &Shared, req: &Request<RequestBody>, ctx: &Ctx<'_>) -> String {
        match self.key_header.as_ref().and_then(|n| req.headers().get(n)) {
            Some(v) => format!("{}h{:016x}", shared.key_prefix, fnv1a(v.as_bytes())),
            None => format!("{}{}", shared.key_prefix, client_ip::resolve(ctx.peer, req.headers(), &self.trusted)),
        }
    }

    /// The client's keys, taken from the request before any await (a
    /// request is not `Sync`, so a future must not hold a reference to it).
    pub fn request_keys(&self, req: &Request<RequestBody>, ctx: &Ctx<'_>) -> Keys {
        Keys { local: self.key(req, ctx), shared: self.shared.as_ref().map(|s| self.shared_key(s, req, ctx)) }
    }

    pub async fn on_request(
        &self,
        keys: Keys,
        ctx: &Ctx<'_>,
        facts: &mut RequestFacts,
    ) -> Option<Response<ResponseBody>> {
        let verdict = match (&self.shared, keys.shared) {
            (Some(shared), Some(key)) => match shared.store.take(&key, shared.interval, shared.burst).await {
                Ok(Verdict::Allowed { remaining }) => Ok(remaining),
                Ok(Verdict::Limited { wait }) => Err(wait),
                Err(_) => match shared.on_error {
                    OnStoreError::Local => self.limiter.take(keys.local),
                    OnStoreError::Allow => return None,
                    OnStoreError::Deny => Err(Duration::from_secs(1)),
                },
            },
            _ => self.limiter.take(keys.local),
        };
        match verdict {
            Ok(remaining) => {
                facts.rate = Some(RateInfo { remaining, reset_secs: 0 });
                None
            }
            Err(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                ctx.metrics.ratelimit_rejected.get_or_create(&RouteLabels { route: Name(ctx.route.clone()) }).inc();
                let mut r = plain_response(StatusCode::TOO_MANY_REQUESTS, "429 Too Many Requests\n");
                let h = r.headers_mut();
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                facts.rate = Some(RateInfo { remaining: 0, reset_secs: secs.max(1) });
                self.set_headers(h, facts.rate);
                Some(r)
            }
        }
    }

    pub fn on_response(&self, resp: &mut Response<ResponseBody>, facts: &RequestFacts) {
        self.set_headers(resp.headers_mut(), facts.rate);
    }

    fn set_headers(&self, h: &mut http::HeaderMap, rate: Option<RateInfo>) {
        let Some(rate) = rate else { return };
        h.insert(RATELIMIT_LIMIT.clone(), self.limit_header.clone());
        h.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from(rate.remaining));
        let reset = if rate.reset_secs > 0 { rate.reset_secs } else { self.period.as_secs().max(1) };
        h.insert(RATELIMIT_RESET.clone(), HeaderValue::from(reset));
    }

    /// Forget clients whose bucket is full again; give memory back.
    pub fn prune(&self) {
        self.limiter.prune();
    }

    /// Number of client keys held.
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }
}

/// FNV-1a, 64 bits: a hash every instance and version computes alike.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_known_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    /// Memory for a million distinct clients, and after pruning. Run with
    /// `cargo test --release million -- --ignored --nocapture` to see the figures.
    #[test]
    #[ignore]
    fn a_million_keys_then_pruned() {
        fn rss_kib() -> u64 {
            std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                })
                .unwrap_or(0)
        }
        let rl = RateLimit::new(1000.0, Some(1), &[], None).unwrap();
        let before = rss_kib();
        for k in 0..1_000_000u64 {
            let _ = rl.limiter.take(k);
        }
        let full = rss_kib();
        assert_eq!(rl.keys(), 1_000_000);
        std::thread::sleep(Duration::from_millis(20));
        rl.prune();
        let pruned = rss_kib();
        eprintln!("1M keys: RSS {before} KiB -> {full} KiB; after prune {pruned} KiB with {} keys", rl.keys());
        assert_eq!(rl.keys(), 0);
    }
}
