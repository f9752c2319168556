//! Edge middleware, defined once under `[middleware.NAME]` and attached to
//! routes by name. A route's list is its order: the request phase runs first
//! to last and may answer early (401, 403, 413, 429, a CORS preflight); the
//! response phase runs last to first, like layers of an onion, and an early
//! answer from item N still passes back through items N-1 .. 0. Everything a
//! middleware needs is compiled at config load, so the request path only
//! reads prepared values.
//!
//! Each type is one file implementing [`Middleware`]: its request phase
//! hands its own response phase a [`State`] (or `State::Skip`: nothing to
//! do on the way back), which the chain keeps for it and gives back, so no
//! type's per-request facts live anywhere else. Each item reads the request
//! as the items before it left it (a `headers` rule listed before
//! `compress` that rewrites `Accept-Encoding` changes what compress
//! negotiates; listed after it, it does not). `registry.rs` is the one
//! place that maps a config `type` to its constructor; [`Chain`] runs the
//! phases.

mod basic_auth;
mod body_limit;
pub mod cache;
mod chain;
pub mod client_ip;
mod compress;
mod cors;
mod header_rules;
mod ip_filter;
mod rate_limit;
mod registry;
mod security_headers;
#[cfg(test)]
mod tests;

use std::any::Any;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Request, Response};

use crate::body::{RequestBody, ResponseBody};
use crate::metrics::{Metrics, RouteMetrics};

pub use chain::{Chain, ResponsePhases};
pub use client_ip::{set_by_forwarding, untrusted_claim, X_FORWARDED_FOR};
pub use rate_limit::{OnStoreError, RateLimit};
pub use registry::{check, compile, Compiled, DefinitionError, Env};

/// One compiled middleware definition, shared by every route that names it.
pub trait Middleware: AsAny + Send + Sync + std::fmt::Debug {
    /// The request phase: go on, with what this middleware's response phase
    /// will need, or answer now. By default: nothing to do either way.
    fn on_request<'a>(&'a self, req: &'a mut Request<RequestBody>, ctx: &'a Ctx<'_>) -> Step<'a> {
        let _ = (req, ctx);
        Step::Ready(Flow::Continue(State::Skip))
    }

    /// The response phase, given back the state the request phase returned.
    /// Not called for `State::Skip`, nor after this item's own early answer.
    fn on_response(&self, resp: Response<ResponseBody>, state: State) -> Response<ResponseBody> {
        let _ = state;
        resp
    }

    /// Periodic housekeeping (forgetting idle rate-limit keys).
    fn maintain(&self) {}

    /// Whether the definition names a file read when it was compiled (an
    /// htpasswd file): such a middleware is compiled again on every
    /// reload, even when its text is unchanged, so a reload picks up the
    /// file. Others keep their state (rate-limit buckets) across reloads.
    fn reads_files(&self) -> bool {
        false
    }

    /// Whether the request phase may read the headers [`Forwarding`] adds
    /// or removes: the chain adds them before such an item runs. An item
    /// that says no (the cache, whose fresh hits need none of them) adds
    /// them itself, through `ctx.forwarding`, before it reads them.
    fn reads_forwarding(&self) -> bool {
        true
    }
}

impl dyn Middleware + '_ {
    /// The concrete middleware, when it is a `T` (the status page's caches,
    /// a reload handing a cache's store to its successor).
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.as_any().downcast_ref()
    }
}

/// `&dyn Any` of a middleware, for [`dyn Middleware::downcast_ref`].
pub trait AsAny {
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// What a request phase decided.
pub enum Flow {
    /// Go on to the next item; the state comes back to this item's
    /// response phase.
    Continue(State),
    /// Answer now; the items before this one still run their response phase.
    Answer(Response<ResponseBody>),
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flow::Continue(state) => f.debug_tuple("Continue").field(state).finish(),
            Flow::Answer(resp) => f.debug_tuple("Answer").field(&resp.status()).finish(),
        }
    }
}

/// A request phase's result: decided at once (no allocation), or after
/// waiting (a store round trip, a lock, a password hash), boxed only then.
pub enum Step<'a> {
    Ready(Flow),
    Wait(Pin<Box<dyn Future<Output = Flow> + Send + 'a>>),
}

impl std::fmt::Debug for Step<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Ready(flow) => f.debug_tuple("Ready").field(flow).finish(),
            Step::Wait(_) => f.write_str("Wait"),
        }
    }
}

impl From<Flow> for Step<'_> {
    fn from(flow: Flow) -> Self {
        Step::Ready(flow)
    }
}

/// What a middleware's request phase hands its own response phase. Only
/// that middleware reads it; the small forms are kept inline, so a request
/// through middleware that carry nothing larger allocates nothing for them.
#[derive(Debug)]
pub enum State {
    /// No response phase for this request.
    Skip,
    /// Run the response phase; nothing to carry.
    Run,
    /// A small value the middleware encodes and decodes itself (a count,
    /// a flag).
    Small(u64),
    /// A header value taken from the request.
    Header(HeaderValue),
    /// Anything larger, boxed; the middleware downcasts to its own type.
    Boxed(Box<dyn Any + Send>),
}

/// What the middleware see of the request's circumstances.
pub struct Ctx<'a> {
    /// For the middleware's own counters (`rampart_ratelimit_rejected_total`).
    pub metrics: &'a Metrics,
    pub route: &'a Arc<str>,
    /// The route's own metric handles (a fresh cache hit's counter).
    pub route_metrics: &'a RouteMetrics,
    pub peer: IpAddr,
    /// The client's address: the peer, or, when the peer is one of
    /// `[server] trusted_proxies`, the first address from the right of
    /// `X-Forwarded-For` that is not (as nginx's `set_real_ip_from` with
    /// `real_ip_recursive on` makes `$remote_addr`).
    pub client: IpAddr,
    /// The connection is TLS (the cache keys by it).
    pub tls: bool,
    /// The client's scheme is https: the connection is TLS, or a trusted
    /// proxy in front (`[server] trusted_proxies`) says `X-Forwarded-Proto:
    /// https`, having terminated TLS itself.
    pub https: bool,
    /// The route's upstream, the path and query sent to it, and whether the
    /// client's `Host` goes with it (for the cache's background fetches).
    pub pool: &'a Arc<crate::upstream::Pool>,
    pub upstream_pq: &'a http::uri::PathAndQuery,
    pub preserve_host: bool,
    pub forwarding: Forwarding<'a>,
}

/// The request's forwarding headers (`X-Forwarded-*` and `X-Real-IP` set,
/// what an untrusted client claimed removed), which only the upstream and
/// the middleware that read them need: added once, before the first item
/// whose request phase may read them runs ([`Middleware::reads_forwarding`])
/// or before the request goes upstream, so an answer made without them (a
/// static file, a fresh cache hit) never pays for them.
pub struct Forwarding<'a> {
    add: &'a (dyn Fn(&mut HeaderMap) + Sync),
    added: AtomicBool,
}

impl<'a> Forwarding<'a> {
    pub fn new(add: &'a (dyn Fn(&mut HeaderMap) + Sync)) -> Self {
        Forwarding { add, added: AtomicBool::new(false) }
    }

    /// Headers that are already as they will go upstream.
    pub fn done() -> Self {
        Forwarding { add: &|_| {}, added: AtomicBool::new(true) }
    }

    /// Add them to `headers`, unless that was done.
    pub fn apply(&self, headers: &mut HeaderMap) {
        // One task holds the request: no other thread races this.
        if !self.added.load(Ordering::Relaxed) {
            self.added.store(true, Ordering::Relaxed);
            (self.add)(headers);
        }
    }

    pub fn added(&self) -> bool {
        self.added.load(Ordering::Relaxed)
    }
}

/// A constructor's answer when handed another type's definition (the
/// registry never does that).
fn not_mine(kind: &str) -> String {
    format!("not a {kind} definition")
}

/// Add `name` (lower case) to the answer's `Vary` unless a `Vary` line
/// names it already, in any case, or says `*`: one list, no duplicates,
/// whoever (the upstream, another item) put the first one there.
pub(crate) fn add_vary(h: &mut http::HeaderMap, name: &'static str) {
    let already = h
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(name) || t.trim() == "*");
    if !already {
        h.append(http::header::VARY, http::HeaderValue::from_static(name));
    }
}
