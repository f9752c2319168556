//! Per-request orchestration: route the request, rewrite its headers, pick a
//! server (retrying a connect failure once elsewhere), forward, and stream
//! the answer back. Everything a request needs comes from one snapshot
//! loaded at its start.

pub mod error;
pub mod exchange;
mod forward;
mod framing;
pub mod headers;
mod host;
pub mod request_id;
mod shared;
mod upgrade;

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::Either;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::body::{RequestBody, ResponseBody};
use crate::middleware::{Ctx, Forwarding};
use crate::router::{canonical_path, with_slashes_decoded, without_parameters};
use crate::state::Route;
use crate::upstream::FileRequest;
use error::ProxyError;
pub use exchange::refused_head;
use exchange::{Exchange, TrackedBody};
use headers::{
    add_forwarded, join_cookies, strip_hop_by_hop, strip_underscore_spellings, strip_untrusted_forwarding,
    untrusted_forwarding_lines, Forwarded, X_FORWARDED_PROTO, X_REQUEST_ID,
};
pub use shared::{PlainHttp, Shared};

/// Facts about the client connection a request arrived on, worked out
/// once per connection.
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The client address as a header value (`X-Real-IP`, `X-Forwarded-For`).
    pub ip_header: HeaderValue,
    /// A WebSocket tunnel to run once hyper has handed the connection over
    /// (see [`upgrade::splice`]).
    tunnel: std::sync::Mutex<Option<Tunnel>>,
}

/// The two sides of an upgraded connection, copying until either ends.
pub type Tunnel = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        ConnInfo { peer, tls, ip_header: headers::ip_header_value(peer.ip()), tunnel: std::sync::Mutex::new(None) }
    }

    /// The tunnel the connection's last request started, if any. The
    /// connection's task runs it, so it keeps the connection's place under
    /// `max_connections` and in `rampart_connections_active`, and the
    /// drain ends it.
    pub fn take_tunnel(&self) -> Option<Tunnel> {
        self.tunnel.lock().ok()?.take()
    }

    fn set_tunnel(&self, tunnel: Tunnel) {
        if let Ok(mut slot) = self.tunnel.lock() {
            *slot = Some(tunnel);
        }
    }
}

/// The hyper service function for the proxy listeners.
///
/// The request is routed and its headers rewritten here, before the future
/// is made, so the future holds only what has to outlive an await: the
/// routed request once, and no copy of what the synchronous steps used. It
/// is boxed and moved per request (`server::service`); done inside one
/// async body, it was 4.3 KiB.
pub fn serve(
    app: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Response<TrackedBody>, Infallible>> + Send + 'static {
    let mut ex = Box::new(Exchange {
        app: Arc::clone(&app),
        start: Instant::now(),
        client_ip: conn.peer.ip(),
        method: req.method().clone(),
        uri: req.uri().clone(),
        host: req.headers().get(header::HOST).cloned(),
        request_id: None,
        route: None,
        upstream: None,
        status: 0,
    });
    match route(&app, &conn, req, &mut ex) {
        Err(early) => Either::Left(std::future::ready(Ok(finish(early, ex)))),
        Ok(mut routed) => Either::Right(async move {
            let resp = forward(&app, &mut routed, &mut ex).await;
            Ok(finish(resp, ex))
        }),
    }
}

/// A request matched to its route, its headers rewritten for the upstream:
/// what the awaiting part of the proxy works on.
struct Routed {
    req: Request<RequestBody>,
    route: Arc<Route>,
    /// The path and query sent upstream.
    upstream_pq: PathAndQuery,
    /// The protocol the client asked to switch to, and its side of the switch.
    upgrade: Option<(HeaderValue, OnUpgrade, Arc<ConnInfo>)>,
    /// The client connection and the host routed by, for the forwarding
    /// headers ([`add_forwarding`]), and whether the client is a trusted proxy.
    conn: Arc<ConnInfo>,
    host: HeaderValue,
    trusted: bool,
    /// Who the client is: the peer, or behind a trusted proxy the address
    /// its `X-Forwarded-For` names ([`Ctx::client`]).
    client: std::net::IpAddr,
    /// The client's scheme is https ([`Ctx::https`]).
    https: bool,
}

/// The synchronous part: request id, redirect to HTTPS, routing and header
/// rewriting. An `Err` is the answer, sent without the route's middleware.
// The `Ok` side is larger still; boxing the answer would only add an allocation.
#[allow(clippy::result_large_err)]
fn route(
    app: &Shared,
    conn: &Arc<ConnInfo>,
    mut req: Request<Incoming>,
    ex: &mut Exchange,
) -> Result<Routed, Response<ResponseBody>> {
    // Before anything answers: the redirect to HTTPS too would leave the
    // connection open after a request whose end is in doubt.
    framing::check(req.version(), req.headers()).map_err(ProxyError::response)?;
    framing::take_expectation(req.headers_mut()).map_err(ProxyError::response)?;
    let snapshot = app.state.load();
    if snapshot.config.server.request_id {
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) if !v.is_empty() && v.len() <= 200 => v.clone(),
            _ => app.request_ids.next(),
        };
        req.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
        ex.request_id = Some(id);
    }

    if !conn.tls {
        if let Some(resp) = app.plain_http.get().and_then(|p| p.answer(&req)) {
            return Err(resp);
        }
    }

    let host = host::request_host(req.uri().authority(), req.headers()).map_err(|e| e.response())?;
    if host.set_header {
        req.headers_mut().insert(header::HOST, host.value.clone());
        // The access log names the host routed by, not the client's Host.
        ex.host = Some(host.value.clone());
    }
    let host = host.value;
    // ASCII only: `request_host` checked every byte.
    let host_str = host.to_str().map_err(|_| ProxyError::BadHost.response())?;
    if !req.uri().path().starts_with('/') {
        return Err(ProxyError::BadPath.response());
    }
    // HTTP/1.1 CONNECT in origin form (`CONNECT /x`) is malformed, and no
    // form opens a tunnel here (HTTP/2's CONNECT is refused below hyper).
    if req.method() == http::Method::CONNECT {
        return Err(ProxyError::Tunnel.response());
    }
    // `path()` says `/` for an empty path, but the target as sent is what
    // goes upstream: `GET http://host?x` (absolute form, empty path) means
    // `/?x` (RFC 9112 3.2.2); an HTTP/2 `:path` must start with `/` (RFC
    // 9113 8.3.1), so `?x` there is malformed.
    if req.uri().path_and_query().is_some_and(|pq| !pq.as_str().starts_with('/')) {
        if req.version() == Version::HTTP_2 {
            return Err(ProxyError::BadPath.response());
        }
        set_path(&mut req, "/").map_err(ProxyError::response)?;
    }
    if req.version() == Version::HTTP_2 {
        join_cookies(req.headers_mut());
    }
    let slashes = snapshot.config.server.encoded_slashes;
    if let Cow::Owned(canonical) =
        canonical_path(req.uri().path(), slashes).map_err(|_| ProxyError::BadPath.response())?
    {
        // Middleware and the upstream see the path the route was chosen by.
        set_path(&mut req, &canonical).map_err(ProxyError::response)?;
    }
    let path = req.uri().path();
    let found = snapshot.router.lookup(host_str, path).ok_or_else(|| ProxyError::NoRoute.response())?;
    // `;` parameters: Spring and Tomcat route `/admin;x/` as `/admin/`. A
    // path is served only when the route is the same read either way.
    // Likewise `encoded_slashes = "keep"`: `/admin%2Fx` is routed as it
    // is, but a backend that decodes it reads `/admin/x`.
    let decoded = if slashes == crate::config::EncodedSlashes::Keep { with_slashes_decoded(path) } else { None };
    let respelled = [without_parameters(path), decoded];
    for other in respelled.into_iter().flatten() {
        let other = other.map_err(|_| ProxyError::BadPath.response())?;
        let same = snapshot.router.lookup(host_str, &other).is_some_and(|m| std::ptr::eq(m.value, found.value));
        if !same {
            return Err(ProxyError::BadPath.response());
        }
    }
    let route = Arc::clone(found.value);
    ex.route = Some(Arc::clone(&route));

    let upstream_pq = upstream_path(&req, &route, found.prefix_len).map_err(|e| e.response())?;
    let trusted_proxies = &snapshot.config.server.trusted_proxies;
    let trusted = crate::middleware::client_ip::contains(trusted_proxies, conn.peer.ip());
    let (client, https) = match trusted {
        true => (
            crate::middleware::client_ip::resolve(conn.peer.ip(), req.headers(), trusted_proxies),
            conn.tls || forwarded_https(req.headers()),
        ),
        false => (conn.peer.ip(), conn.tls),
    };
    // The access log names the client as the middleware judge it.
    ex.client_ip = client;
    let client_upgrade = strip_connection_headers(&mut req);
    let mut req = req.map(RequestBody::from);
    let upgrade = client_upgrade.map(|proto| (proto, hyper::upgrade::on(&mut req), Arc::clone(conn)));
    Ok(Routed { req, route, upstream_pq, upgrade, conn: Arc::clone(conn), host, trusted, client, https })
}

/// The awaiting part: the route's middleware, then the upstream.
async fn forward(app: &Shared, r: &mut Routed, ex: &mut Exchange) -> Response<ResponseBody> {
    let (conn, host, trusted) = (&r.conn, &r.host, r.trusted);
    let add = move |headers: &mut HeaderMap| add_forwarding(headers, host, conn, trusted);
    let ctx = Ctx {
        metrics: &app.metrics,
        route: &r.route.name,
        route_metrics: &r.route.metrics,
        peer: conn.peer.ip(),
        client: r.client,
        tls: conn.tls,
        https: r.https,
        pool: &r.route.pool,
        upstream_pq: &r.upstream_pq,
        preserve_host: r.route.preserve_host,
        forwarding: Forwarding::new(&add),
    };
    // The response phases owed: each item's own state, handed back below.
    let (owed, early) = r.route.middleware.on_request(&mut r.req, &ctx).await;
    if let Some(resp) = early {
        return owed.on_response(resp);
    }
    if let Some(files) = &r.route.pool.files {
        let req = FileRequest {
            method: r.req.method(),
            headers: r.req.headers(),
            site_path: r.upstream_pq.path(),
            client_path: r.req.uri().path(),
            query: r.req.uri().query(),
        };
        let resp = files.serve(req).await;
        return owed.on_response(resp);
    }
    // An untrusted client's forwarding headers (the usual case) go straight
    // into the upstream head; a trusted proxy's lists are merged in the map.
    let lines;
    let extra: &[(&str, &[u8])] = if ctx.forwarding.added() || trusted {
        ctx.forwarding.apply(r.req.headers_mut());
        &[]
    } else {
        lines = untrusted_forwarding_lines(r.req.headers_mut(), &forwarded(host, conn, trusted));
        &lines
    };
    if !r.route.preserve_host {
        r.req.headers_mut().remove(header::HOST);
    }
    let resp = match forward::send(app, &r.route.pool, &mut r.req, &r.upstream_pq, extra, ex).await {
        Ok((mut resp, guard)) => {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                match r.upgrade.take() {
                    Some((proto, client_side, conn)) => {
                        let idle = app.state.load().config.server.idle_timeout;
                        let (resp, tunnel) = upgrade::splice(resp, client_side, proto, guard, idle);
                        if let Some(tunnel) = tunnel {
                            conn.set_tunnel(tunnel);
                        }
                        resp
                    }
                    // The upstream switched protocols nobody asked for.
                    None => ProxyError::Broken.response(),
                }
            } else {
                strip_hop_by_hop(resp.headers_mut());
                let (parts, body) = resp.into_parts();
                Response::from_parts(parts, ResponseBody::upstream(body, guard))
            }
        }
        Err(e) => e.response(),
    };
    owed.on_response(resp)
}

/// The answer as it leaves: the request id added, and the exchange riding
/// in the body until the body ends (for the access log and metrics).
fn finish(mut resp: Response<ResponseBody>, mut ex: Box<Exchange>) -> Response<TrackedBody> {
    if let Some(id) = &ex.request_id {
        resp.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
    }
    ex.status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, TrackedBody::new(body, ex))
}

/// The path and query sent upstream: the canonical path, less the route
/// prefix when `strip_prefix` is set, and the query exactly as received.
fn upstream_path(req: &Request<Incoming>, route: &Route, prefix_len: usize) -> Result<PathAndQuery, ProxyError> {
    if !route.strip_prefix {
        if let Some(pq) = req.uri().path_and_query() {
            return Ok(pq.clone());
        }
    }
    let path = req.uri().path();
    let rest = if route.strip_prefix { &path[prefix_len.min(path.len())..] } else { path };
    path_and_query(rest, req.uri().query())
}

fn path_and_query(path: &str, query: Option<&str>) -> Result<PathAndQuery, ProxyError> {
    let mut s = String::with_capacity(path.len() + 1 + query.map_or(0, |q| q.len() + 1));
    if !path.starts_with('/') {
        s.push('/');
    }
    s.push_str(path);
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    PathAndQuery::try_from(s).map_err(|_| ProxyError::BadPath)
}

/// Replace the request's path, keeping its query and authority.
fn set_path(req: &mut Request<Incoming>, path: &str) -> Result<(), ProxyError> {
    let pq = path_and_query(path, req.uri().query())?;
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(pq);
    *req.uri_mut() = http::Uri::from_parts(parts).map_err(|_| ProxyError::BadPath)?;
    Ok(())
}

/// Strip hop-by-hop headers (`Host` is already the request's host: see
/// [`host::request_host`]). Every request's middleware and answer see them
/// gone; the forwarding headers come later, when needed ([`Forwarding`]).
/// Returns the requested upgrade protocol, if any.
fn strip_connection_headers(req: &mut Request<Incoming>) -> Option<HeaderValue> {
    let is_h1 = req.version() <= Version::HTTP_11;
    let headers = req.headers_mut();
    // WebSocket only, as nginx's usual `Upgrade $http_upgrade` setup and
    // Traefik do: other upgrades (h2c, TLS) go out as plain requests.
    let upgrade = strip_hop_by_hop(headers)
        .filter(|proto| is_h1 && proto.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"));
    if let Some(proto) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto.clone());
    }
    upgrade
}

/// The forwarding headers: what an untrusted client claimed removed, then
/// `X-Forwarded-For`, `-Proto`, `-Host` and `X-Real-IP` set.
fn add_forwarding(headers: &mut HeaderMap, host: &HeaderValue, conn: &ConnInfo, trusted: bool) {
    if !trusted {
        strip_untrusted_forwarding(headers);
    } else {
        strip_underscore_spellings(headers);
    }
    add_forwarded(headers, &forwarded(host, conn, trusted));
}

/// A trusted proxy's `X-Forwarded-Proto` (its first value) says https: it
/// terminated TLS in front of this listener.
fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get(&X_FORWARDED_PROTO)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https")))
}

fn forwarded<'a>(host: &'a HeaderValue, conn: &'a ConnInfo, trusted: bool) -> Forwarded<'a> {
    let proto = if conn.tls { "https" } else { "http" };
    Forwarded { host_header: host, client_ip: &conn.ip_header, proto, trusted }
}
