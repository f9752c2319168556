//! Per-request orchestration: route the request, rewrite its headers, pick a
//! server (retrying a connect failure once elsewhere), forward, and stream
//! the answer back. Everything a request needs comes from one snapshot
//! loaded at its start.

pub mod error;
pub mod exchange;
mod forward;
pub mod headers;
pub mod request_id;
mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::app::App;
use crate::body::{RequestBody, ResponseBody};
use crate::middleware::{Ctx, RequestFacts};
use crate::router::normalize_path;
use crate::state::{Route, Snapshot};
use error::ProxyError;
use exchange::{Exchange, TrackedBody};
use headers::{add_forwarded, strip_hop_by_hop, Forwarded, X_REQUEST_ID};

/// Facts about the client connection a request arrived on, worked out
/// once per connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The client address as a header value (`X-Real-IP`, `X-Forwarded-For`).
    pub ip_header: HeaderValue,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        ConnInfo { peer, tls, ip_header: headers::ip_header_value(peer.ip()) }
    }
}

/// The hyper service function for the proxy listeners.
pub async fn serve(
    app: Arc<App>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<TrackedBody>, Infallible> {
    let snapshot = app.state.load();
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
    let mut resp = match proxy(&app, &snapshot, &conn, req, &mut ex).await {
        Ok(r) => r,
        Err(e) => e.response(),
    };
    if let Some(id) = &ex.request_id {
        resp.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
    }
    ex.status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, TrackedBody::new(body, ex)))
}

async fn proxy(
    app: &App,
    snapshot: &Snapshot,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    ex: &mut Exchange,
) -> Result<Response<ResponseBody>, ProxyError> {
    let settings = &snapshot.config.server;
    if settings.request_id {
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) if !v.is_empty() && v.len() <= 200 => v.clone(),
            _ => app.request_ids.next(),
        };
        req.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
        ex.request_id = Some(id);
    }

    if !conn.tls {
        if let Some(resp) = app.tls.get().and_then(|t| crate::tls::redirect::plain_http(t, &req)) {
            return Ok(resp);
        }
    }

    // The URI's authority wins over Host (HTTP/2 :authority, absolute-form).
    let host: HeaderValue = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).map_err(|_| ProxyError::BadHost)?,
        None => req.headers().get(header::HOST).cloned().ok_or(ProxyError::BadHost)?,
    };
    let host_str = host.to_str().map_err(|_| ProxyError::BadHost)?;
    if host_str.is_empty() {
        return Err(ProxyError::BadHost);
    }
    let raw_path = req.uri().path();
    if !raw_path.starts_with('/') {
        return Err(ProxyError::BadPath);
    }
    let path = normalize_path(raw_path).map_err(|_| ProxyError::BadPath)?;
    let found = snapshot.router.lookup(host_str, &path).ok_or(ProxyError::NoRoute)?;
    let route: &Arc<Route> = found.value;
    ex.route = Some(Arc::clone(route));

    let upstream_pq = upstream_path(&req, &path, route, found.prefix_len)?;
    let client_upgrade = rewrite_request_headers(&mut req, &host, conn);
    let mut req = req.map(RequestBody::from);
    let on_client_upgrade = client_upgrade.is_some().then(|| hyper::upgrade::on(&mut req));

    let chain = &route.middleware;
    let mut facts = RequestFacts::default();
    let ctx = Ctx { app, route: &route.name, peer: conn.peer.ip(), tls: conn.tls };
    if let Err(early) = chain.on_request(&mut req, &ctx, &mut facts).await {
        return Ok(chain.on_response(early.response, &facts, early.depth));
    }

    let (mut parts, body) = req.into_parts();
    parts.version = Version::HTTP_11;
    if !route.preserve_host {
        parts.headers.remove(header::HOST);
    }
    let resp = match forward::send(app, &route.pool, parts, body, upstream_pq, ex).await {
        Ok((mut resp, guard)) => {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                match (on_client_upgrade, client_upgrade) {
                    (Some(client_side), Some(proto)) => upgrade::splice(resp, client_side, proto, guard),
                    // The upstream switched protocols nobody asked for.
                    _ => ProxyError::Broken.response(),
                }
            } else {
                strip_hop_by_hop(resp.headers_mut());
                let (parts, body) = resp.into_parts();
                Response::from_parts(parts, ResponseBody::upstream(body, guard))
            }
        }
        Err(_) if facts.body_too_large.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)) => {
            ProxyError::BodyTooLarge.response()
        }
        Err(e) => e.response(),
    };
    Ok(chain.on_response(resp, &facts, chain.len()))
}

/// The path and query sent upstream: the normalised path, less the route
/// prefix when `strip_prefix` is set, and the query exactly as received.
fn upstream_path(
    req: &Request<Incoming>,
    path: &str,
    route: &Route,
    prefix_len: usize,
) -> Result<PathAndQuery, ProxyError> {
    let unchanged = !route.strip_prefix && path.len() == req.uri().path().len();
    if unchanged {
        if let Some(pq) = req.uri().path_and_query() {
            return Ok(pq.clone());
        }
    }
    let rest = if route.strip_prefix { &path[prefix_len.min(path.len())..] } else { path };
    let mut s = String::with_capacity(rest.len() + 1 + req.uri().query().map_or(0, |q| q.len() + 1));
    if !rest.starts_with('/') {
        s.push('/');
    }
    s.push_str(rest);
    if let Some(q) = req.uri().query() {
        s.push('?');
        s.push_str(q);
    }
    PathAndQuery::try_from(s).map_err(|_| ProxyError::BadPath)
}

/// Strip hop-by-hop headers, add the forwarding ones, and keep `Host`.
/// Returns the requested upgrade protocol, if any.
fn rewrite_request_headers(req: &mut Request<Incoming>, host: &HeaderValue, conn: &ConnInfo) -> Option<HeaderValue> {
    let is_h1 = req.version() <= Version::HTTP_11;
    let headers = req.headers_mut();
    let upgrade = strip_hop_by_hop(headers).filter(|_| is_h1);
    add_forwarded(
        headers,
        &Forwarded { host_header: host, client_ip: &conn.ip_header, proto: if conn.tls { "https" } else { "http" } },
    );
    if !headers.contains_key(header::HOST) {
        headers.insert(header::HOST, host.clone());
    }
    if let Some(proto) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto.clone());
    }
    upgrade
}
