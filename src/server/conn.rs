//! What serving a connection is made of: its [`Protocol`] (from ALPN or
//! the first bytes), the hyper builders, the bounds its stream, service and
//! answer bodies meet, and [`ConnCtx`], what serving one needs besides them.
//! The connection's life that uses them is `lifecycle.rs`.
//!
//! Memory per idle connection is what this is careful about. The protocol
//! is decided *before* hyper gets the connection: from ALPN for TLS, and
//! otherwise (plain TCP, TLS without ALPN) from the first bytes the client
//! sends (read once, up to 4 KiB, then handed to hyper first; hyper-util's
//! auto builder would read 24 bytes and replay them, after which hyper's
//! read buffer doubles to 16 KiB). So a connection that has sent nothing
//! costs only its socket and a small task. HTTP/2 streams run inside their
//! connection's task ([`StreamExecutor`]). The hyper connection is boxed
//! with only the chosen protocol's state; the auto builder remains for the
//! rare case the version is still unknown (a partial HTTP/2 preface).

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::activity::Activity;
pub use super::parkable::Parkable;
pub use super::sendfile::SendsFiles;
use super::streams::StreamExecutor;
use crate::body::BoxError;

/// The HTTP/2 connection preface a prior-knowledge client starts with.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which protocol to serve a connection with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    /// Not known yet: let hyper-util's auto builder read the first bytes.
    Detect,
}

impl Protocol {
    /// From the ALPN protocol a TLS handshake negotiated.
    pub fn from_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Protocol::Http2,
            Some(b"http/1.1") => Protocol::Http1,
            _ => Protocol::Detect,
        }
    }

    /// From the first bytes a client sent (at least one).
    pub(super) fn from_prefix(prefix: &[u8]) -> Self {
        let n = prefix.len().min(H2_PREFACE.len());
        if prefix[..n] != H2_PREFACE[..n] {
            Protocol::Http1
        } else if n == H2_PREFACE.len() {
            Protocol::Http2
        } else {
            Protocol::Detect
        }
    }
}

/// The hyper connection builders for client-facing connections, one per
/// protocol, configured alike. HTTP/2 gets a builder per connection, made
/// by `http2`, because each connection runs its streams on its own
/// [`StreamExecutor`].
pub struct Builders {
    /// HTTP/1 over TLS: hyper reads while an answer is on its way, to see
    /// a client that left.
    pub http1: http1::Builder,
    /// HTTP/1 over plain TCP: `half_close(true)`, and the departed-client
    /// check is ours (`activity/departure.rs`).
    pub http1_plain: http1::Builder,
    pub http2: Box<dyn Fn(StreamExecutor) -> http2::Builder<StreamExecutor> + Send + Sync>,
    pub auto: auto::Builder<TokioExecutor>,
}

/// A client connection's stream, as the serving functions need it.
pub trait ClientIo: AsyncRead + AsyncWrite + Parkable + SendsFiles + Unpin + Send + 'static {}
impl<I: AsyncRead + AsyncWrite + Parkable + SendsFiles + Unpin + Send + 'static> ClientIo for I {}

/// The service a connection is served with: hyper's bounds, named once.
pub trait ConnService<B>:
    Service<Request<Incoming>, Response = Response<B>, Future: Send + 'static, Error: Into<BoxError>>
    + Clone
    + Send
    + 'static
{
}
impl<S, B> ConnService<B> for S
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
}

/// A response body hyper can send from any thread.
pub trait SendBody: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}
impl<B> SendBody for B
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
}

/// What serving one connection needs besides its stream and its service.
pub struct ConnCtx<'a> {
    pub activity: Arc<Activity>,
    pub builders: &'a Builders,
    /// Cancelled when the process drains.
    pub shutdown: &'a CancellationToken,
    pub idle_timeout: Duration,
    /// How long an HTTP/1.1 request head may take to arrive.
    pub header_timeout: Duration,
    /// How large a request head may be (`max_header_bytes`).
    pub max_header_bytes: usize,
    /// When an HTTP/1.1 connection resting in its task is closed if it
    /// serves no request meanwhile.
    pub rest_deadline: tokio::time::Instant,
    /// On a new connection, when its first request head must be in: the
    /// time since its first bytes came counts.
    pub first_head_by: Option<tokio::time::Instant>,
    /// Whether a parking lot takes resting connections that can leave their task.
    pub lot: bool,
    /// Where static answers register the file ranges HTTP/1 sends by
    /// `sendfile` (plain connections only; see `sendfile.rs`).
    pub files: Option<Arc<crate::body::SendQueue>>,
    /// The proxy, and the client's address, for the requests hyper refuses
    /// before they reach the service (`drive::ended_with`).
    pub proxy: &'a crate::proxy::Shared,
    pub peer: std::net::IpAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_from_the_first_bytes() {
        assert_eq!(Protocol::from_prefix(b"GET / HTTP/1.1\r\n"), Protocol::Http1);
        assert_eq!(Protocol::from_prefix(b"P"), Protocol::Detect);
        assert_eq!(Protocol::from_prefix(b"PRI * HTTP/2.0\r\n"), Protocol::Detect);
        assert_eq!(Protocol::from_prefix(b"PRI * HTTP/1.1\r\n"), Protocol::Http1);
        assert_eq!(Protocol::from_prefix(H2_PREFACE), Protocol::Http2);
        assert_eq!(Protocol::from_prefix(b"POST / HTTP/1.1\r\n"), Protocol::Http1);
    }

    #[test]
    fn protocol_from_alpn() {
        assert_eq!(Protocol::from_alpn(Some(b"h2")), Protocol::Http2);
        assert_eq!(Protocol::from_alpn(Some(b"http/1.1")), Protocol::Http1);
        assert_eq!(Protocol::from_alpn(None), Protocol::Detect);
    }
}
