//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/api/status`,
//! `POST /api/reload` and the status page at `/`. It keeps answering while
//! the proxy drains, so `/readyz` can say 503 to the load balancer.

mod status;
mod traffic;

use std::convert::Infallible;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::body::ResponseBody;
use crate::metrics;
use crate::proxy::error::plain_response;

pub use status::status_json;

/// Run the admin listener until `stop` is cancelled.
pub async fn run(app: Arc<App>, listener: TcpListener, stop: CancellationToken) {
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
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(Arc::clone(&app), req));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(error = %e, "admin connection error");
            }
        });
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
        (&Method::GET, "/metrics") => {
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
        (&Method::GET, "/api/status") => json(status_json(&app)),
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
        (&Method::GET, "/") => {
            let mut r = Response::new(ResponseBody::full(status::PAGE));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            r
        }
        _ => plain_response(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(resp)
}

fn json(v: serde_json::Value) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(v.to_string()));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
