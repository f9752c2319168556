//! Per-request orchestration: route the request, rewrite its headers, pick a
//! server (retrying a connect failure once elsewhere), forward, and stream
//! the answer back. Everything a request needs comes from one snapshot
//! loaded at its start.

pub mod error;
pub mod exchange;
pub mod headers;
pub mod request_id;
mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use crate::app::App;
use crate::body::{RequestBody, ResponseBody};
use crate::metrics::{Name, UpstreamCodeLabels};
use crate::router::normalize_path;
use crate::state::{Route, Snapshot};
use error::ProxyError;
use exchange::{Exchange, TrackedBody};
use headers::{add_forwarded, strip_hop_by_hop, Forwarded, X_REQUEST_ID};

/// Facts about the client connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// The hyper service function for the proxy listeners.
pub async fn serve(
    app: Arc<App>,
    conn: ConnInfo,
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
    let mut resp = match proxy(&app, &snapshot, conn, req, &mut ex).await {
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
    conn: ConnInfo,
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
        if let Some(resp) = app
            .tls
            .get()
            .and_then(|t| crate::tls::redirect::plain_http(t, &req))
        {
            return Ok(resp);
        }
    }

    // The URI's authority wins over Host (HTTP/2 :authority, absolute-form).
    let host: HeaderValue = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).map_err(|_| ProxyError::BadHost)?,
        None => req
            .headers()
            .get(header::HOST)
            .cloned()
            .ok_or(ProxyError::BadHost)?,
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
    let found = snapshot
        .router
        .lookup(host_str, &path)
        .ok_or(ProxyError::NoRoute)?;
    let route: &Arc<Route> = found.value;
    ex.route = Some(Arc::clone(&route.name));

    let upstream_pq = upstream_path(&req, &path, route, found.prefix_len)?;
    let client_upgrade = rewrite_request_headers(&mut req, &host, host_str, conn, route)?;
    let on_client_upgrade = client_upgrade
        .is_some()
        .then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    parts.version = Version::HTTP_11;
    let pool = &route.pool;
    // A request without a body can be replayed on another server if the
    // first connection failed before anything was sent.
    let replayable =
        http_body::Body::is_end_stream(&body) && pool.spec.retries > 0 && pool.servers.len() > 1;
    let spare_parts = replayable.then(|| clone_parts(&parts));
    let mut body = Some(RequestBody::from(body));
    let mut tried: Vec<usize> = Vec::new();
    let attempts = 1 + if replayable {
        pool.spec.retries as usize
    } else {
        0
    };

    loop {
        let idx = pool.pick(&tried).ok_or(if tried.is_empty() {
            ProxyError::NoServer
        } else {
            ProxyError::Connect
        })?;
        let server = &pool.servers[idx];
        tried.push(idx);
        ex.upstream = Some(Arc::clone(&server.label));
        let mut attempt_parts = match (&spare_parts, tried.len()) {
            (Some(p), n) if n > 1 => clone_parts(p),
            _ => std::mem::replace(&mut parts, Request::new(()).into_parts().0),
        };
        attempt_parts.uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(server.authority.clone())
            .path_and_query(upstream_pq.clone())
            .build()
            .map_err(|_| ProxyError::BadUpstreamRequest)?;
        if !route.preserve_host {
            if let Ok(v) = HeaderValue::from_str(server.authority.as_str()) {
                attempt_parts.headers.insert(header::HOST, v);
            }
        }
        let attempt_body = body.take().unwrap_or_else(RequestBody::empty);
        let guard = server.start_request();
        let sent = tokio::time::timeout(
            pool.response_timeout(),
            pool.client
                .request(Request::from_parts(attempt_parts, attempt_body)),
        )
        .await;
        let mut resp = match sent {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                let (failure, before_send) = classify(&e);
                tracing::warn!(upstream = %pool.name, server = %server.addr.0, error = %error_chain(&e), "upstream request failed");
                app.metrics
                    .upstream_requests
                    .get_or_create(&UpstreamCodeLabels {
                        upstream: Name(Arc::clone(&pool.name)),
                        server: Name(Arc::clone(&server.label)),
                        code: 0,
                    })
                    .inc();
                if before_send && replayable && tried.len() < attempts.min(pool.servers.len()) {
                    continue;
                }
                return Err(failure);
            }
            Err(_) => {
                tracing::warn!(upstream = %pool.name, server = %server.addr.0, "upstream response timed out");
                return Err(ProxyError::Timeout);
            }
        };
        app.metrics
            .upstream_requests
            .get_or_create(&UpstreamCodeLabels {
                upstream: Name(Arc::clone(&pool.name)),
                server: Name(Arc::clone(&server.label)),
                code: resp.status().as_u16(),
            })
            .inc();

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let (Some(client_side), Some(proto)) = (on_client_upgrade, client_upgrade) {
                return Ok(upgrade::splice(resp, client_side, proto, guard));
            }
            // The upstream switched protocols nobody asked for.
            return Err(ProxyError::Broken);
        }
        strip_hop_by_hop(resp.headers_mut());
        let (parts, incoming) = resp.into_parts();
        return Ok(Response::from_parts(
            parts,
            ResponseBody::upstream(incoming, guard),
        ));
    }
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
    let rest = if route.strip_prefix {
        &path[prefix_len.min(path.len())..]
    } else {
        path
    };
    let mut s =
        String::with_capacity(rest.len() + 1 + req.uri().query().map_or(0, |q| q.len() + 1));
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
fn rewrite_request_headers(
    req: &mut Request<Incoming>,
    host: &HeaderValue,
    host_str: &str,
    conn: ConnInfo,
    _route: &Route,
) -> Result<Option<HeaderValue>, ProxyError> {
    let is_h1 = req.version() <= Version::HTTP_11;
    let headers = req.headers_mut();
    let upgrade = strip_hop_by_hop(headers).filter(|_| is_h1);
    add_forwarded(
        headers,
        &Forwarded {
            client_ip: conn.peer.ip(),
            proto: if conn.tls { "https" } else { "http" },
            host: host_str,
        },
    );
    if !headers.contains_key(header::HOST) {
        headers.insert(header::HOST, host.clone());
    }
    if let Some(proto) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto.clone());
    }
    Ok(upgrade)
}

fn clone_parts(p: &http::request::Parts) -> http::request::Parts {
    let mut r = Request::new(());
    *r.method_mut() = p.method.clone();
    *r.uri_mut() = p.uri.clone();
    *r.version_mut() = p.version;
    *r.headers_mut() = p.headers.clone();
    r.into_parts().0
}

/// Map a client error to the answer, and say whether the request provably
/// never left (a failed connect), which makes it safe to try elsewhere.
fn classify(e: &hyper_util::client::legacy::Error) -> (ProxyError, bool) {
    if e.is_connect() {
        let timed_out = source_io_kind(e) == Some(std::io::ErrorKind::TimedOut)
            || error_chain(e).contains("timed out");
        return (
            if timed_out {
                ProxyError::Timeout
            } else {
                ProxyError::Connect
            },
            true,
        );
    }
    (ProxyError::Broken, false)
}

fn source_io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        s.push_str(": ");
        s.push_str(&err.to_string());
        cur = err.source();
    }
    s
}
