//! `rate_limit`: a GCRA limiter (governor) per client key: the client IP
//! (the listener's client, or by its own `trusted_proxies`: see
//! `client_ip`) or, with `key_header`, a header such as an API key. Over
//! the limit: 429 with `Retry-After`; every answer carries
//! `RateLimit-Limit` (the bucket's size, `burst`, so `Remaining` never
//! exceeds it), `RateLimit-Remaining` and `RateLimit-Reset` (whole
//! seconds, rounded up, until the client's bucket is full again).
//! Keys are pruned by `prune()`, which the app calls periodically, so
//! memory stays bounded however many clients pass.
//!
//! With `scope = "cluster"` the bucket lives in Redis (`cluster::Cluster::take`,
//! the same GCRA, one round trip) under `PREFIX rl:NAME:INTERVAL_NS:BURST:CLIENT`, so every
//! instance draws from one bucket per client. When Redis does not answer,
//! `on_store_error` decides: `local` (this instance's own buckets, so the
//! limit holds per instance), `allow` (no limit) or `deny` (429).

use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use ipnet::IpNet;

use super::client_ip;
use super::{Ctx, DefinitionError, Env, Flow, Middleware, State, Step};
use crate::body::plain_response;
use crate::body::{RequestBody, ResponseBody};
use crate::cluster::{Cluster, Verdict};
use crate::config::{MiddlewareSpec, RawMiddleware};
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
    /// `PREFIX rl:NAME:INTERVAL_NS:BURST:`
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
    /// The time one request's token takes to come back (1 / `average`).
    per_request: Duration,
    burst: u32,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").field("limit", &self.limit_header).field("keys", &self.limiter.len()).finish()
    }
}

/// The `[middleware.NAME]` definition of `type = "rate_limit"`.
pub(super) fn compile(spec: &MiddlewareSpec, env: &Env<'_>) -> Result<Arc<dyn Middleware>, DefinitionError> {
    let RawMiddleware::RateLimit { average, burst, trusted_proxies, key_header, scope, on_store_error } = &spec.kind
    else {
        return Err(super::not_mine("rate_limit").into());
    };
    let on_error = match on_store_error.as_deref() {
        None | Some("local") => OnStoreError::Local,
        Some("allow") => OnStoreError::Allow,
        Some("deny") => OnStoreError::Deny,
        Some(other) => {
            return Err(DefinitionError::at(
                "on_store_error",
                format!("on_store_error must be \"local\", \"allow\" or \"deny\", got {other:?}"),
            ))
        }
    };
    let shared = match scope.as_deref() {
        None | Some("local") => None,
        Some("cluster") => env.cluster.map(|c| (Arc::clone(c), spec.name.as_str(), on_error)),
        Some(other) => {
            return Err(DefinitionError::at("scope", format!("scope must be \"local\" or \"cluster\", got {other:?}")))
        }
    };
    Ok(Arc::new(RateLimit::scoped(*average, *burst, trusted_proxies, key_header.as_deref(), shared)?))
}

impl RateLimit {
    pub fn new(
        average: f64,
        burst: Option<u32>,
        trusted: &[String],
        key_header: Option<&str>,
    ) -> Result<Self, DefinitionError> {
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
    ) -> Result<Self, DefinitionError> {
        if !(average.is_finite() && average > 0.0 && average <= 1e9) {
            return Err(DefinitionError::at(
                "average",
                format!("average must be a positive number of requests per second, got {average}"),
            ));
        }
        let burst = burst.unwrap_or_else(|| average.ceil() as u32).max(1);
        let burst = NonZeroU32::new(burst).ok_or(DefinitionError::at("burst", "burst must be at least 1"))?;
        let per_request = Duration::from_secs_f64(1.0 / average);
        let quota = Quota::with_period(per_request)
            .ok_or(DefinitionError::at("average", "average is too high"))?
            .allow_burst(burst);
        let key_header = key_header
            .map(|h| {
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| DefinitionError::at("key_header", format!("invalid key_header {h:?}")))
            })
            .transpose()?;
        let limit_header = HeaderValue::from(burst.get());
        let shared = cluster.map(|(store, name, on_error)| Shared {
            // The limit is part of the key: a reload that changes it, or an
            // instance in a rolling change that has another, starts fresh
            // buckets, as a local limiter does, instead of inheriting
            // a state computed for other numbers.
            key_prefix: store.key(&format!("rl:{name}:{}:{}:", per_request.as_nanos(), burst.get())),
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
            trusted: client_ip::parse_cidrs(trusted).map_err(|m| DefinitionError::at("trusted_proxies", m))?,
            key_header,
            hasher: Default::default(),
            per_request,
            burst: burst.get(),
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
                match self.client(req, ctx) {
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
            None => format!("{}{}", shared.key_prefix, self.client(req, ctx)),
        }
    }

    /// The client a bucket belongs to: by this definition's own
    /// `trusted_proxies` when it has some, else the client the listener
    /// found (`[server] trusted_proxies`), as `ip_allow` and the access
    /// log name it. Keyed by the peer alone, every client behind a load
    /// balancer would share one bucket.
    fn client(&self, req: &Request<RequestBody>, ctx: &Ctx<'_>) -> std::net::IpAddr {
        if self.trusted.is_empty() {
            ctx.client
        } else {
            client_ip::resolve(ctx.peer, req.headers(), &self.trusted)
        }
    }

    /// The answer to a take from the buckets: go on (the response reports
    /// what is left) or 429. `None`: no limit applied (the shared store is
    /// down and `on_store_error = "allow"`), so nothing to report either.
    fn decide(&self, verdict: Option<Result<u32, Duration>>, ctx: &Ctx<'_>) -> Flow {
        match verdict {
            None => Flow::Continue(State::Skip),
            Some(Ok(remaining)) => Flow::Continue(State::Small(u64::from(remaining))),
            Some(Err(wait)) => {
                let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
                ctx.metrics.ratelimit_rejected.get_or_create(&RouteLabels { route: Name(ctx.route.clone()) }).inc();
                let mut r = plain_response(StatusCode::TOO_MANY_REQUESTS, "429 Too Many Requests\n");
                let h = r.headers_mut();
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
                // Full again: the next token, then the rest of the bucket.
                self.set_headers(h, 0, wait + self.per_request * (self.burst - 1));
                Flow::Answer(r)
            }
        }
    }

    /// `RateLimit-*`, with `until_full` the time until the client's bucket
    /// is full again, in whole seconds rounded up (at least 1).
    fn set_headers(&self, h: &mut http::HeaderMap, remaining: u32, until_full: Duration) {
        h.insert(RATELIMIT_LIMIT.clone(), self.limit_header.clone());
        h.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from(remaining));
        let reset = (until_full.as_secs() + u64::from(until_full.subsec_nanos() > 0)).max(1);
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

impl Middleware for RateLimit {
    /// Takes a token: from this process's buckets at once, or from the
    /// shared store (`scope = "cluster"`) after its round trip. The keys
    /// are read from the request before that await (a request is not
    /// `Sync`, so the waiting future must not hold a reference to it).
    fn on_request<'a>(&'a self, req: &'a mut Request<RequestBody>, ctx: &'a Ctx<'_>) -> Step<'a> {
        let local = self.key(req, ctx);
        let Some(shared) = &self.shared else {
            return self.decide(Some(self.limiter.take(local)), ctx).into();
        };
        let key = self.shared_key(shared, req, ctx);
        Step::Wait(Box::pin(async move {
            let verdict = match shared.store.take(&key, shared.interval, shared.burst).await {
                Ok(Verdict::Allowed { remaining }) => Some(Ok(remaining)),
                Ok(Verdict::Limited { wait }) => Some(Err(wait)),
                Err(_) => match shared.on_error {
                    OnStoreError::Local => Some(self.limiter.take(local)),
                    OnStoreError::Allow => None,
                    OnStoreError::Deny => Some(Err(Duration::from_secs(1))),
                },
            };
            self.decide(verdict, ctx)
        }))
    }

    fn on_response(&self, mut resp: Response<ResponseBody>, state: State) -> Response<ResponseBody> {
        if let State::Small(remaining) = state {
            let remaining = u32::try_from(remaining).unwrap_or(u32::MAX).min(self.burst);
            self.set_headers(resp.headers_mut(), remaining, self.per_request * (self.burst - remaining));
        }
        resp
    }

    fn maintain(&self) {
        self.prune();
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
