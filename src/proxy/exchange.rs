//! What is known about one request/response exchange, and the body wrapper
//! that counts response bytes and, when the response is finished (or the
//! client went away), writes the access-log line and the request metrics.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use http_body::{Body, Frame, SizeHint};

use crate::access_log::{rfc3339_now, AccessRecord};
use crate::body::{BoxError, ResponseBody};
use crate::state::Route;

use super::Shared;

pub struct Exchange {
    pub app: Arc<Shared>,
    pub start: Instant,
    pub client_ip: IpAddr,
    pub method: Method,
    pub uri: Uri,
    pub host: Option<HeaderValue>,
    pub request_id: Option<HeaderValue>,
    pub route: Option<Arc<Route>>,
    pub upstream: Option<Arc<str>>,
    /// The answer's status; 0 until the answer is made.
    pub status: u16,
}

/// An exchange dropped before its answer was made: the request's future
/// was dropped under it, because its client left (the connection ended, or
/// an HTTP/2 stream was reset). It is logged and counted as 499, as when
/// the client leaves mid-upload and as nginx does, rather than not at all.
/// (Once made, the answer's [`TrackedBody`] logs the exchange.)
impl Drop for Exchange {
    fn drop(&mut self) {
        if self.status == 0 {
            self.status = 499;
            self.finish(0);
        }
    }
}

impl Exchange {
    fn finish(&self, bytes: u64) {
        let elapsed = self.start.elapsed();
        let route_metrics = self.route.as_ref().map_or(&self.app.no_route_metrics, |r| &r.metrics);
        route_metrics.record(&self.app.metrics, &self.method, self.status, elapsed.as_secs_f64());
        if self.app.access_log.enabled() {
            let host = self.host.as_ref().and_then(|h| h.to_str().ok()).or_else(|| self.uri.host()).unwrap_or("");
            self.app.access_log.log(&AccessRecord {
                time: &rfc3339_now(),
                client_ip: self.client_ip,
                method: self.method.as_str(),
                host,
                path: self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                status: self.status,
                bytes,
                duration_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
                upstream: self.upstream.as_deref(),
                request_id: self.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
                route: self.route.as_ref().map(|r| &*r.name),
            });
        }
    }
}

/// A request head hyper refused before the proxy saw it (malformed, or too
/// large; hyper answered `status` itself, with no body): counted under no
/// route and logged with its method and path unknown (`-`), as nginx logs
/// its 400s. The client's address is the peer's: no header was read.
pub fn refused_head(app: &Shared, client_ip: IpAddr, status: u16) {
    let unknown = Method::from_bytes(b"-").unwrap_or_default();
    app.no_route_metrics.record(&app.metrics, &unknown, status, 0.0);
    if app.access_log.enabled() {
        app.access_log.log(&AccessRecord {
            time: &rfc3339_now(),
            client_ip,
            method: "-",
            host: "",
            path: "-",
            status,
            bytes: 0,
            duration_ms: 0.0,
            upstream: None,
            request_id: "",
            route: None,
        });
    }
}

/// The body handed to hyper: the real body plus the exchange to close.
pub struct TrackedBody {
    inner: ResponseBody,
    exchange: Option<Box<Exchange>>,
    bytes: u64,
}

impl TrackedBody {
    pub fn new(inner: ResponseBody, exchange: Box<Exchange>) -> Self {
        TrackedBody { inner, exchange: Some(exchange), bytes: 0 }
    }

    /// See [`ResponseBody::in_memory_to_end`].
    pub fn in_memory_to_end(&self) -> bool {
        self.inner.in_memory_to_end()
    }

    /// See [`ResponseBody::send_through`].
    pub fn send_through(&mut self, queue: &std::sync::Arc<crate::body::SendQueue>) -> bool {
        self.inner.send_through(queue)
    }

    /// A body with no exchange attached (admin answers).
    pub fn untracked(inner: ResponseBody) -> Self {
        TrackedBody { inner, exchange: None, bytes: 0 }
    }

    fn close(&mut self) {
        if let Some(ex) = self.exchange.take() {
            ex.finish(self.bytes);
        }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.close();
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // ResponseBody is Unpin only through pin-project; keep it pinned in place.
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.close(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
