//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/api/status`,
//! `POST /api/reload` and the status page at `/`. It keeps answering while
//! the proxy drains, so `/readyz` can say 503 to the load balancer.

mod slots;
mod status;
mod traffic;

use std::convert::Infallible;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::body::plain_response;
use crate::body::ResponseBody;
use crate::metrics;

pub use status::status_json;

/// Admin clients (Prometheus, probes, an operator) need a handful of
/// connections; past this many, the oldest idle one is closed for a new one
/// (`slots.rs`), and a new one is refused only when all are busy.
const MAX_ADMIN_CONNECTIONS: usize = 256;

/// No admin exchange takes long, and Prometheus reconnects: a connection is
/// closed after this long whatever it does, so none is held for ever.
const ADMIN_CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(300);

/// Run the admin listener until `stop` is cancelled.
pub async fn run(app: Arc<App>, listener: TcpListener, stop: CancellationToken) {
    let slots = slots::Slots::new(MAX_ADMIN_CONNECTIONS);
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = slots.admit() else {
            tracing::warn!(
                limit = MAX_ADMIN_CONNECTIONS,
                "every admin connection has a request in flight; closing a new one"
            );
            continue;
        };
        // The proxy's own slowloris guard, read per connection so a reload
        // applies to the next one.
        let header_timeout = app.state.load().config.server.client_header_timeout;
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let conn = slot.conn();
            let service = service_fn(move |req| {
                let in_flight = conn.begin();
                let app = Arc::clone(&app);
                async move {
                    let Ok(resp) = handle(app, req).await;
                    Ok::<_, Infallible>(resp.map(|body| InFlightBody { body, _in_flight: in_flight }))
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
            builder.http2().timer(TokioTimer::new());
            let serving = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                served = tokio::time::timeout(ADMIN_CONNECTION_LIFETIME, serving) => match served {
                    Ok(Err(e)) => tracing::debug!(error = %e, "admin connection error"),
                    Ok(Ok(())) => {}
                    Err(_) => tracing::debug!("admin connection open too long; closed"),
                },
                () = slot.closed() => tracing::debug!("idle admin connection closed to make room for a new one"),
            }
        });
    }
}

/// An admin answer's body, holding its request's place among the
/// connection's requests in flight until it has been sent: a connection
/// still sending an answer is not idle.
struct InFlightBody {
    body: ResponseBody,
    _in_flight: slots::InFlight,
}

impl http_body::Body for InFlightBody {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<ResponseBody>, Infallible> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => plain_response(StatusCode::OK, "ok\n"),
        (&Method::GET | &Method::HEAD, "/readyz") => {
            if app.is_ready() {
                plain_response(StatusCode::OK, "ready\n")
            } else {
                plain_response(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        // HEAD wherever GET: hyper sends the head alone.
        (&Method::GET | &Method::HEAD, "/metrics") => {
            status::refresh_gauges(&app);
            // Content negotiation: OpenMetrics for Prometheus, which asks
            // for it; the classic text format for everything else (curl,
            // promtool), which reads an OpenMetrics counter as malformed.
            let (body, content_type) = if metrics::wants_openmetrics(req.headers().get(header::ACCEPT)) {
                (app.metrics.encode(), metrics::OPENMETRICS_CONTENT_TYPE)
            } else {
                (app.metrics.encode_prometheus_text(), metrics::PROMETHEUS_TEXT_CONTENT_TYPE)
            };
            let mut r = Response::new(ResponseBody::full(body));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
        (&Method::GET | &Method::HEAD, "/api/status") => json(status_json(&app)),
        (&Method::POST, "/api/reload") => match app.reload().await {
            Ok(()) => json(serde_json::json!({ "ok": true })),
            Err(errors) => {
                let mut r = json(
                    serde_json::json!({ "ok": false, "errors": errors.0.iter().map(|e| e.to_string()).collect::<Vec<_>>() }),
                );
                *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                r
            }
        },
        (&Method::POST, "/api/cache/purge") => purge(&app, req).await,
        (&Method::GET | &Method::HEAD, "/") => {
            let mut r = Response::new(ResponseBody::full(status::PAGE));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            r
        }
        (_, path) => match allowed_methods(path) {
            Some(allow) => {
                let mut r = plain_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
                r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
                r
            }
            None => plain_response(StatusCode::NOT_FOUND, "not found\n"),
        },
    };
    Ok(resp)
}

/// The methods an admin path answers, for a 405's `Allow`; `None` for a
/// path that is not the admin listener's.
fn allowed_methods(path: &str) -> Option<&'static str> {
    match path {
        "/healthz" | "/readyz" | "/metrics" | "/api/status" | "/" => Some("GET, HEAD"),
        "/api/reload" | "/api/cache/purge" => Some("POST"),
        _ => None,
    }
}

/// `POST /api/cache/purge` `{"host": H, "path_prefix": P}` (both optional:
/// any host, every path): remove matching responses from every cache, on
/// disk too; answers `{"purged": N}`.
async fn purge(app: &App, req: Request<Incoming>) -> Response<ResponseBody> {
    use http_body_util::BodyExt;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Purge {
        host: Option<String>,
        path_prefix: Option<String>,
    }
    let bad = |msg: String| {
        let mut r = json(serde_json::json!({ "error": msg }));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        r
    };
    let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let mut r = bad(format!("body: {e}"));
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            }
            return r;
        }
    };
    let p: Purge = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad(format!("expected {{\"host\": ..., \"path_prefix\": ...}}: {e}")),
    };
    let prefix = p.path_prefix.as_deref().unwrap_or("/");
    let host = p.host.as_deref().map(|h| h.split(':').next().unwrap_or(h));
    let mut purged = 0;
    for (name, cache, _) in status::caches(app) {
        let n = cache.purge(host, prefix);
        tracing::info!(cache = %name, host = host.unwrap_or("*"), path_prefix = prefix, purged = n, "cache purged");
        purged += n;
    }
    json(serde_json::json!({ "purged": purged }))
}

fn json(v: serde_json::Value) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(v.to_string()));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
