//! Edge middleware, defined once under `[middleware.NAME]` and attached to
//! routes by name. A route's list is its order: the request phase runs first
//! to last and may answer early (401, 403, 413, 429, a CORS preflight); the
//! response phase runs last to first, like layers of an onion, and an early
//! answer from item N still passes back through items N-1 .. 0. Everything a
//! middleware needs is compiled at config load, so the request path only
//! reads prepared values.

mod basic_auth;
mod body_limit;
pub mod cache;
pub mod client_ip;
mod compress;
mod cors;
mod header_rules;
mod ip_filter;
mod rate_limit;
mod security_headers;

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response};

use crate::body::{RequestBody, ResponseBody};
use crate::cluster::Cluster;
use crate::config::{MiddlewareSpec, RawMiddleware};
use crate::metrics::Metrics;

pub use client_ip::X_FORWARDED_FOR;
pub use rate_limit::{OnStoreError, RateLimit};

/// One compiled middleware.
#[derive(Debug)]
pub enum Middleware {
    RateLimit(rate_limit::RateLimit),
    SecurityHeaders(security_headers::SecurityHeaders),
    Compress(compress::Compress),
    Cors(cors::Cors),
    IpFilter(ip_filter::IpFilter),
    BasicAuth(basic_auth::BasicAuth),
    Headers(header_rules::HeaderRules),
    BodyLimit(body_limit::BodyLimit),
    Cache(cache::CacheMiddleware),
}

/// A compiled definition plus the spec it came from (to reuse it, state
/// and all, when a reload leaves the definition unchanged).
#[derive(Debug)]
pub struct Compiled {
    pub spec: RawMiddleware,
    pub middleware: Arc<Middleware>,
}

/// Compile one definition; errors are messages for the definition's line.
/// `cluster` is the process's shared store, when `[cluster]` is configured
/// (without one, as in `rampart check`, cluster-scoped limits run locally).
/// `previous` is the running definition of the same name, whose long-lived
/// state (a cache's stored responses) the new one takes over.
pub fn compile(
    spec: &MiddlewareSpec,
    cluster: Option<&Arc<Cluster>>,
    previous: Option<&Middleware>,
) -> Result<Middleware, String> {
    Ok(match &spec.kind {
        RawMiddleware::Cache { max_size, dir, max_disk_size, max_object_size, default_ttl, lock_timeout } => {
            let d = crate::cache::Settings::default();
            let settings = crate::cache::Settings {
                max_size: max_size.map_or(d.max_size, |b| b.0),
                dir: dir.as_deref().map(|p| spec.resolve(p)),
                max_disk_size: max_disk_size.map_or(d.max_disk_size, |b| b.0),
                max_object_size: max_object_size.map_or(d.max_object_size, |b| b.0),
                default_ttl: default_ttl.map_or(d.default_ttl, |t| t.0),
                lock_timeout: lock_timeout.map_or(d.lock_timeout, |t| t.0),
            };
            if settings.max_object_size > settings.max_size {
                return Err("max_object_size must not be larger than max_size".into());
            }
            let previous = match previous {
                Some(Middleware::Cache(c)) => Some(c),
                _ => None,
            };
            Middleware::Cache(cache::CacheMiddleware::new(&spec.name, settings, previous)?)
        }
        RawMiddleware::RateLimit { average, burst, trusted_proxies, key_header, scope, on_store_error } => {
            let on_error = match on_store_error.as_deref() {
                None | Some("local") => OnStoreError::Local,
                Some("allow") => OnStoreError::Allow,
                Some("deny") => OnStoreError::Deny,
                Some(other) => {
                    return Err(format!("on_store_error must be \"local\", \"allow\" or \"deny\", got {other:?}"))
                }
            };
            let shared = match scope.as_deref() {
                None | Some("local") => None,
                Some("cluster") => cluster.map(|c| (Arc::clone(c), spec.name.as_str(), on_error)),
                Some(other) => return Err(format!("scope must be \"local\" or \"cluster\", got {other:?}")),
            };
            Middleware::RateLimit(rate_limit::RateLimit::scoped(
                *average,
                *burst,
                trusted_proxies,
                key_header.as_deref(),
                shared,
            )?)
        }
        k @ RawMiddleware::SecurityHeaders { .. } => {
            Middleware::SecurityHeaders(security_headers::SecurityHeaders::new(k)?)
        }
        RawMiddleware::Compress { min_size, algorithms, level } => {
            Middleware::Compress(compress::Compress::new(min_size.map(|b| b.0), algorithms.as_deref(), *level)?)
        }
        k @ RawMiddleware::Cors { .. } => Middleware::Cors(cors::Cors::new(k)?),
        RawMiddleware::IpAllow { allow } => Middleware::IpFilter(ip_filter::IpFilter::allow(allow)?),
        RawMiddleware::IpDeny { deny } => Middleware::IpFilter(ip_filter::IpFilter::deny(deny)?),
        RawMiddleware::BasicAuth { htpasswd, realm } => {
            Middleware::BasicAuth(basic_auth::BasicAuth::load(&spec.resolve(htpasswd), realm.as_deref())?)
        }
        k @ RawMiddleware::Headers { .. } => Middleware::Headers(header_rules::HeaderRules::new(k)?),
        RawMiddleware::BodyLimit { max } => Middleware::BodyLimit(body_limit::BodyLimit::new(max.0)),
    })
}

impl Middleware {
    /// Periodic housekeeping (forgetting idle rate-limit keys).
    pub fn maintain(&self) {
        if let Middleware::RateLimit(r) = self {
            r.prune();
        }
    }
}

/// What the middleware see of the request's circumstances.
pub struct Ctx<'a> {
    /// For the middleware's own counters (`rampart_ratelimit_rejected_total`).
    pub metrics: &'a Metrics,
    pub route: &'a Arc<str>,
    pub peer: IpAddr,
    pub tls: bool,
    /// The route's upstream, the path and query sent to it, and whether the
    /// client's `Host` goes with it (for the cache's background fetches).
    pub pool: &'a Arc<crate::upstream::Pool>,
    pub upstream_pq: &'a http::uri::PathAndQuery,
    pub preserve_host: bool,
}

/// Facts the response phase needs, taken from the request before it is sent.
#[derive(Debug, Default)]
pub struct RequestFacts {
    pub method: Method,
    pub origin: Option<HeaderValue>,
    pub accept_encoding: Option<HeaderValue>,
    pub range: bool,
    pub tls: bool,
    /// Rate-limit state for the `RateLimit-*` response headers.
    pub rate: Option<rate_limit::RateInfo>,
    /// Set when `body_limit` cut off a streamed body: answer 413, not 502.
    pub body_too_large: Option<Arc<AtomicBool>>,
    /// The cache's lookup, for its response phase.
    pub cache: Option<cache::Slot>,
}

/// A route's middleware, in order.
#[derive(Debug, Default, Clone)]
pub struct Chain(pub Vec<Arc<Middleware>>);

/// An early answer, and how many items' response phases it passes through.
pub struct Early {
    pub response: Response<ResponseBody>,
    pub depth: usize,
}

impl Chain {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Run the request phase. On an early answer, returns it with the
    /// number of items whose response phase still applies.
    pub async fn on_request(
        &self,
        req: &mut Request<RequestBody>,
        ctx: &Ctx<'_>,
        facts: &mut RequestFacts,
    ) -> Result<(), Early> {
        if self.0.is_empty() {
            return Ok(());
        }
        facts.method = req.method().clone();
        facts.tls = ctx.tls;
        let h = req.headers();
        facts.origin = h.get(http::header::ORIGIN).cloned();
        facts.accept_encoding = h.get(http::header::ACCEPT_ENCODING).cloned();
        facts.range = h.contains_key(http::header::RANGE);
        for (i, m) in self.0.iter().enumerate() {
            let answer = match m.as_ref() {
                Middleware::RateLimit(x) => {
                    let keys = x.request_keys(req, ctx);
                    x.on_request(keys, ctx, facts).await
                }
                Middleware::Cors(x) => x.on_request(req, facts),
                Middleware::IpFilter(x) => x.on_request(ctx.peer),
                Middleware::BasicAuth(x) => x.on_request(req).await,
                Middleware::Headers(x) => {
                    x.on_request(req);
                    None
                }
                Middleware::BodyLimit(x) => x.on_request(req, facts),
                Middleware::Cache(x) => x.on_request(req, ctx, facts).await,
                Middleware::SecurityHeaders(_) | Middleware::Compress(_) => None,
            };
            if let Some(response) = answer {
                return Err(Early { response, depth: i });
            }
        }
        Ok(())
    }

    /// Run the response phase of the first `depth` items, last to first.
    pub fn on_response(
        &self,
        mut resp: Response<ResponseBody>,
        facts: &RequestFacts,
        depth: usize,
    ) -> Response<ResponseBody> {
        for m in self.0[..depth.min(self.0.len())].iter().rev() {
            resp = match m.as_ref() {
                Middleware::SecurityHeaders(x) => {
                    x.on_response(&mut resp, facts);
                    resp
                }
                Middleware::Compress(x) => x.on_response(resp, facts),
                Middleware::Cors(x) => {
                    x.on_response(&mut resp, facts);
                    resp
                }
                Middleware::Headers(x) => {
                    x.on_response(&mut resp);
                    resp
                }
                Middleware::RateLimit(x) => {
                    x.on_response(&mut resp, facts);
                    resp
                }
                Middleware::Cache(x) => x.on_response(resp, facts),
                Middleware::IpFilter(_) | Middleware::BasicAuth(_) | Middleware::BodyLimit(_) => resp,
            };
        }
        resp
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}
