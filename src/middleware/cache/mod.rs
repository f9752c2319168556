//! `cache`: a shared HTTP cache (RFC 9111) for GET and HEAD. The request
//! phase looks the request up and answers a fresh hit (or a stale one that
//! `stale-while-revalidate` allows, revalidating it in the background);
//! otherwise it takes the key's lock (one upstream fetch per key: later
//! requests wait up to `lock_timeout` for the first one's response) and,
//! for a stale entry with validators, makes the request conditional. The
//! response phase turns a 304 into the refreshed stored response, serves
//! stale on a 5xx when `stale-if-error` allows, and streams a storable
//! response to the client while capturing it ([`capture`]). Every answer
//! of a cached route carries `Cache-Status` (RFC 9211).
//!
//! Key: scheme, `Host`, path and query as received, plus the request's
//! values of the response's `Vary` headers. Compression: a `compress`
//! listed before `cache` compresses hits per client from the stored
//! identity body; listed after it, compressed bodies are stored as
//! variants under `Vary: Accept-Encoding`.

mod capture;
mod freshness;
mod key;
mod respond;
mod response;
mod revalidate;

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{HeaderMap, HeaderValue};
use http::{Method, Request, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::{Ctx, DefinitionError, Env, Flow, Middleware, State, Step};
use crate::body::{RequestBody, ResponseBody};
use crate::cache::flight::{self, Join, Leader, Outcome};
use crate::cache::policy::CacheControl;
use crate::cache::store::{now_secs, Entry, Found};
use crate::cache::{Cache, Settings};
use crate::config::{MiddlewareSpec, RawMiddleware};
use crate::metrics::{CacheLabels, Name};
use freshness::{usable, Use};
use key::{bare_host, push_host, request_host};
use respond::Conditionals;

#[derive(Debug)]
pub struct CacheMiddleware {
    pub name: String,
    pub settings: Settings,
    pub cache: Arc<Cache>,
}

/// The `[middleware.NAME]` definition of `type = "cache"`; a reload with
/// compatible settings keeps the running definition's store.
pub(super) fn compile(spec: &MiddlewareSpec, env: &Env<'_>) -> Result<Arc<dyn Middleware>, DefinitionError> {
    let RawMiddleware::Cache { max_size, dir, max_disk_size, max_object_size, default_ttl, lock_timeout } = &spec.kind
    else {
        return Err(super::not_mine("cache").into());
    };
    let d = Settings::default();
    let max_size = max_size.map_or(d.max_size, |b| b.0);
    let settings = Settings {
        max_size,
        dir: dir.as_deref().map(|p| spec.resolve(p)),
        max_disk_size: max_disk_size.map_or(d.max_disk_size, |b| b.0),
        // The default follows a smaller `max_size`; a value set is checked.
        max_object_size: max_object_size.map_or(d.max_object_size.min(max_size), |b| b.0),
        default_ttl: default_ttl.map_or(d.default_ttl, |t| t.0),
        lock_timeout: lock_timeout.map_or(d.lock_timeout, |t| t.0),
    };
    if settings.max_object_size > settings.max_size {
        return Err(DefinitionError::at(
            "max_object_size",
            format!(
                "max_object_size ({} bytes) must not be larger than max_size ({} bytes)",
                settings.max_object_size, settings.max_size
            ),
        ));
    }
    if env.checking {
        // The directory is another instance's, or this one's running
        // cache's: only say whether it could be one.
        if let Some(dir) = settings.dir.as_ref().filter(|d| d.exists() && !d.is_dir()) {
            return Err(DefinitionError::at("dir", format!("cache dir {} is not a directory", dir.display())));
        }
        let memory_only = Settings { dir: None, ..settings };
        return Ok(Arc::new(CacheMiddleware::new(&spec.name, memory_only, None)?));
    }
    let previous = env.previous.and_then(|p| p.downcast_ref::<CacheMiddleware>());
    Ok(Arc::new(CacheMiddleware::new(&spec.name, settings, previous).map_err(|m| DefinitionError::at("dir", m))?))
}

/// What the request phase hands the response phase (as `State::Boxed`).
#[derive(Debug)]
pub struct Pending {
    primary: String,
    host: String,
    path: String,
    method: Method,
    /// The request's headers as looked up (for the stored variant's key).
    req_headers: HeaderMap,
    req_cc: CacheControl,
    request_time: SystemTime,
    leader: Option<Leader>,
    /// A stale stored response: refreshed by a 304, or served on an error.
    stale: Option<Arc<Entry>>,
    /// The request carries this cache's own validators.
    revalidating: bool,
    client: Conditionals,
    /// RFC 9211 `fwd` reason.
    fwd: &'static str,
    counter: Counters,
    cache: Arc<Cache>,
    settings: Settings,
}

/// The route's `rampart_cache_requests_total` series.
#[derive(Debug, Clone)]
struct Counters {
    family: Family<CacheLabels, Counter>,
    route: Name,
}

impl Counters {
    fn count(&self, result: &'static str) {
        self.family.get_or_create(&CacheLabels { route: self.route.clone(), result }).inc();
    }
}

fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

impl CacheMiddleware {
    pub fn new(name: &str, settings: Settings, previous: Option<&CacheMiddleware>) -> Result<Self, String> {
        let cache = match previous {
            Some(p) if p.cache.reusable_for(&settings) => {
                p.cache.store.set_capacity(settings.max_size);
                p.cache.fills.set_limit(settings.max_size);
                Arc::clone(&p.cache)
            }
            _ => Arc::new(Cache::open(&settings)?),
        };
        Ok(CacheMiddleware { name: name.to_string(), settings, cache })
    }

    /// The common case answered without a boxed future or the miss path's
    /// state: a fresh response in memory. Anything else goes through
    /// [`Self::lookup`] with the same key (disk, stale rules, the lock).
    fn fresh_hit_in_memory(&self, req: &Request<RequestBody>, ctx: &Ctx<'_>, primary: &str) -> Option<Flow> {
        let method = req.method();
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        // Before the forwarding headers are added (they are not, when this
        // is the first item that reads them), a response that varies on one
        // of them is left to the lookup, which looks with them added.
        let pending = !ctx.forwarding.added();
        let e = self
            .cache
            .store
            .lookup_memory_unless(primary, req.headers(), |n| pending && super::set_by_forwarding(n.as_str()))?;
        let now = now_secs();
        if !matches!(usable(&e, &CacheControl::parse_request(req.headers()), now), Use::Fresh) {
            return None;
        }
        ctx.route_metrics.cache_hit(ctx.metrics);
        let client = Conditionals::of(req.headers());
        Some(Flow::Answer(respond::from_entry(&e, method, &client, now, respond::hit(&e, now))))
    }

    /// The request phase: answer from the store, or go on holding the
    /// key's lock (and validators for a stale entry).
    async fn lookup(&self, req: &mut Request<RequestBody>, ctx: &Ctx<'_>, primary: String, host: String) -> Flow {
        let counter = Counters { family: ctx.metrics.cache_requests.clone(), route: Name(Arc::clone(ctx.route)) };
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let mut pending = Box::new(Pending {
            primary,
            host,
            path,
            method: method.clone(),
            req_headers: HeaderMap::new(),
            req_cc: CacheControl::default(),
            request_time: SystemTime::now(),
            leader: None,
            stale: None,
            revalidating: false,
            client: Conditionals::default(),
            fwd: "method",
            counter,
            cache: Arc::clone(&self.cache),
            settings: self.settings.clone(),
        });
        if method != Method::GET && method != Method::HEAD {
            return Flow::Continue(State::Boxed(pending));
        }
        pending.req_cc = CacheControl::parse_request(req.headers());
        pending.client = Conditionals::of(req.headers());
        let store = &self.cache.store;
        let mut leader: Option<Leader> = None;
        // All waiting, however many leaders come and go, within one lock_timeout.
        let wait_until = tokio::time::Instant::now() + self.settings.lock_timeout;
        loop {
            let now = now_secs();
            match store.lookup(&pending.primary, req.headers()).await {
                Found::Hit(e) => match usable(&e, &pending.req_cc, now) {
                    Use::Fresh => {
                        pending.counter.count("hit");
                        return Flow::Answer(respond::from_entry(
                            &e,
                            &method,
                            &pending.client,
                            now,
                            respond::hit(&e, now),
                        ));
                    }
                    Use::StaleAccepted => {
                        pending.counter.count("stale");
                        let status = format!("{}; fwd=stale; detail=max-stale", respond::hit(&e, now));
                        return Flow::Answer(respond::from_entry(&e, &method, &pending.client, now, status));
                    }
                    Use::WhileRevalidate => {
                        if let Some(l) = self.cache.flights.try_lead(&pending.primary) {
                            revalidate::spawn(revalidate::Job {
                                cache: Arc::clone(&self.cache),
                                settings: self.settings.clone(),
                                leader: l,
                                entry: Arc::clone(&e),
                                primary: pending.primary.clone(),
                                req_headers: req.headers().clone(),
                                pool: Arc::clone(ctx.pool),
                                path: ctx.upstream_pq.clone(),
                                preserve_host: ctx.preserve_host,
                            });
                        }
                        pending.counter.count("stale");
                        let status = format!("{}; fwd=stale; detail=stale-while-revalidate", respond::hit(&e, now));
                        return Flow::Answer(respond::from_entry(&e, &method, &pending.client, now, status));
                    }
                    Use::Revalidate => {
                        pending.fwd = if pending.req_cc.no_cache { "request" } else { "stale" };
                        pending.stale = Some(e);
                    }
                },
                Found::VaryMiss => pending.fwd = "vary-miss",
                Found::Miss => pending.fwd = "uri-miss",
            }
            if leader.is_some() {
                break;
            }
            // A HEAD waits for a GET already fetching the key (nginx's
            // `proxy_cache_convert_head` has the same effect), but never
            // leads: its own answer has no body to store.
            let joined = match method {
                Method::HEAD => match self.cache.flights.follow(&pending.primary) {
                    Some(rx) => Join::Follower(rx),
                    None => break,
                },
                _ => self.cache.flights.join(&pending.primary),
            };
            match joined {
                // Look once more: the previous leader may have stored it
                // between our look-up and taking the lock.
                Join::Leader(l) => leader = Some(l),
                Join::Follower(rx) => {
                    let left = wait_until.saturating_duration_since(tokio::time::Instant::now());
                    match flight::wait(rx, left).await {
                        // Served from the store on the next look; or, when
                        // what was stored is another variant (`Vary`), the
                        // next look leads or follows the fetch of this one:
                        // one upstream request per variant, not one per
                        // waiter of another variant.
                        Some(Outcome::Stored) => {}
                        // Look again, and lead or follow the next leader.
                        Some(Outcome::Abandoned) => {}
                        Some(Outcome::NotStored) | None => break,
                    }
                }
            }
        }
        if pending.req_cc.only_if_cached {
            pending.counter.count("miss");
            return Flow::Answer(respond::only_if_cached());
        }
        pending.leader = leader;
        pending.req_headers = req.headers().clone();
        // After the copy the key's variants are read from: the origin
        // hears that a surrogate asks, the variants do not change.
        respond::announce_surrogate(req.headers_mut());
        if method == Method::GET {
            if let Some(stale) = &pending.stale {
                pending.revalidating = respond::add_validators(req.headers_mut(), stale);
            }
        }
        Flow::Continue(State::Boxed(pending))
    }
}

impl Middleware for CacheMiddleware {
    fn on_request<'a>(&'a self, req: &'a mut Request<RequestBody>, ctx: &'a Ctx<'_>) -> Step<'a> {
        let host = request_host(req);
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        // Pushed, not `format!`ed: the formatting machinery was a tenth of
        // a fresh hit's instructions. One allocation: the host lowercased
        // in place.
        let scheme = if ctx.tls { "https://" } else { "http://" };
        let mut primary = String::with_capacity(scheme.len() + host.len() + pq.len());
        primary.push_str(scheme);
        let key_host = push_host(&mut primary, host);
        primary.push_str(pq);
        match self.fresh_hit_in_memory(req, ctx, &primary) {
            Some(answer) => Step::Ready(answer),
            None => {
                let host = bare_host(&primary[key_host]);
                // The lookup, the lock and what is stored see the request as
                // the upstream will.
                ctx.forwarding.apply(req.headers_mut());
                Step::Wait(Box::pin(self.lookup(req, ctx, primary, host)))
            }
        }
    }

    fn reads_forwarding(&self) -> bool {
        false
    }

    fn on_response(&self, resp: Response<ResponseBody>, state: State) -> Response<ResponseBody> {
        match state {
            State::Boxed(b) => match b.downcast::<Pending>() {
                Ok(p) => self.response_phase(resp, p),
                Err(_) => resp,
            },
            _ => resp,
        }
    }
}

/// A header value from a number.
pub(crate) fn num(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}
