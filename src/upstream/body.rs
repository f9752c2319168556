//! The bodies that flow through the proxy: the request body on its way to
//! an upstream (the client's, streamed as it arrives; a wrapped one; none),
//! and the response body on its way to the client (an upstream's, unboxed,
//! holding the server's in-flight slot; a short one made here; a
//! transformed one). `crate::body` re-exports both for the layers above.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::Full;
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use super::files::sendfile::{SendQueue, StaticBody};
use super::server::InFlightGuard;
use super::wire::UpstreamBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// A request body on its way to an upstream.
    #[project = RequestBodyProj]
    pub enum RequestBody {
        /// The client's body, streamed as it arrives.
        Incoming { #[pin] body: Incoming },
        /// A wrapped body (size limits and the like).
        Boxed { #[pin] body: UnsyncBoxBody<Bytes, BoxError> },
        /// No body (also used to replay a bodiless request on another server).
        Empty,
    }
}

impl RequestBody {
    pub fn empty() -> Self {
        RequestBody::Empty
    }
}

impl From<Incoming> for RequestBody {
    fn from(body: Incoming) -> Self {
        RequestBody::Incoming { body }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            RequestBodyProj::Incoming { body } => body.poll_frame(cx).map_err(Into::into),
            RequestBodyProj::Boxed { body } => body.poll_frame(cx),
            RequestBodyProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Incoming { body } => body.is_end_stream(),
            RequestBody::Boxed { body } => body.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Incoming { body } => body.size_hint(),
            RequestBody::Boxed { body } => body.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

pin_project! {
    /// A response body on its way to the client.
    #[project = ResponseBodyProj]
    pub enum ResponseBody {
        /// Streamed from an upstream; it holds the server's in-flight slot
        /// until the body ends or the client goes away.
        Upstream { #[pin] body: UpstreamBody },
        /// A short body made by the proxy itself (errors, redirects, admin).
        Full { #[pin] body: Full<Bytes> },
        /// A transformed body (compression and the like).
        Boxed { #[pin] body: UnsyncBoxBody<Bytes, BoxError> },
        /// A static file's, as the static upstream made it: no middleware
        /// read it (those that do wrap it in `Boxed`), so it may still be
        /// sent by `sendfile` ([`ResponseBody::send_through`]).
        File { body: StaticBody },
    }
}

impl ResponseBody {
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        // An empty `Full` is at its end from the start.
        ResponseBody::Full { body: Full::new(data) }
    }

    /// Whether all of the body is in memory (nothing is still to come from
    /// an upstream or a transformation).
    pub fn in_memory_to_end(&self) -> bool {
        match self {
            ResponseBody::Upstream { body } => body.in_memory_to_end(),
            ResponseBody::Full { .. } => true,
            ResponseBody::Boxed { .. } => false,
            ResponseBody::File { body } => body.in_memory_to_end(),
        }
    }

    /// A static file's body, not yet begun, becomes placeholders for its
    /// file range registered in `queue` (see `upstream::files::sendfile`).
    /// Whether it did; any other body is left as it is.
    pub fn send_through(&mut self, queue: &std::sync::Arc<SendQueue>) -> bool {
        match self {
            ResponseBody::File { body } => body.send_through(queue),
            _ => false,
        }
    }

    pub fn empty() -> Self {
        ResponseBody::Full { body: Full::new(Bytes::new()) }
    }

    pub fn upstream(mut body: UpstreamBody, guard: InFlightGuard) -> Self {
        body.attach(guard);
        ResponseBody::Upstream { body }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ResponseBodyProj::Upstream { body } => body.poll_frame(cx),
            ResponseBodyProj::Full { body } => body.poll_frame(cx).map_err(|never| match never {}),
            ResponseBodyProj::Boxed { body } => body.poll_frame(cx),
            ResponseBodyProj::File { body } => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { body } => body.is_end_stream(),
            ResponseBody::Full { body } => body.is_end_stream(),
            ResponseBody::Boxed { body } => body.is_end_stream(),
            ResponseBody::File { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { body } => body.size_hint(),
            ResponseBody::Full { body } => body.size_hint(),
            ResponseBody::Boxed { body } => body.size_hint(),
            ResponseBody::File { body } => body.size_hint(),
        }
    }
}
