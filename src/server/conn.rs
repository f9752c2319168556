//! Serving one accepted connection: HTTP/1.1 or HTTP/2 (by prior knowledge
//! or ALPN), with graceful shutdown on drain and an idle timeout that hyper
//! does not provide on its own.
//!
//! Memory per idle connection is what this module is careful about. The
//! protocol is decided *before* hyper gets the connection: from ALPN for TLS,
//! and otherwise (plain TCP, TLS without ALPN) from the first bytes the
//! client sends (read once, up to 4 KiB, then handed to hyper first;
//! hyper-util's auto builder would read 24 bytes and replay them, after
//! which hyper's read buffer doubles to 16 KiB).
//! So a connection that has sent nothing costs only its socket and a small
//! task. An HTTP/1.1 connection resting between requests is parked: the
//! hyper connection is dropped and only the socket waits (see
//! [`PARK_AFTER`]), in the parking lot (`lot.rs`), TLS session included.
//! HTTP/2 streams run inside their connection's task
//! ([`StreamExecutor`]). The hyper connection is boxed with only the chosen
//! protocol's state; the auto builder remains for the rare case the version
//! is still unknown (a partial HTTP/2 preface). `drive.rs` polls the hyper
//! connection and watches it.
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::activity::{Activity, ActivityIo};
use super::coalesce::CoalescingIo;
use super::drive::{drive, Http1Watch};
pub use super::parkable::Parkable;
use super::streams::{StreamExecutor, Streams};
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
    fn from_prefix(prefix: &[u8]) -> Self {
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

/// How much the first read of a plain connection takes: a typical request
/// head, so hyper usually finds the whole first request in it.
const FIRST_READ: usize = 4096;

/// Wait until the client sends something, read it, and tell the protocol
/// from it. The bytes read are handed to the protocol's server first
/// (reading instead of peeking saves a syscall per connection). `None`
/// when the client closed without sending.
pub async fn sniff<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Option<(Protocol, Bytes)>> {
    let mut buf = bytes::BytesMut::with_capacity(FIRST_READ);
    // `read_buf`, not `try_read_buf`: on a registered socket (TLS), tokio
    // then knows after a short read that it is drained, and hyper's next
    // read waits for readiness instead of making a syscall that finds
    // nothing. A plain one is not registered yet (see `LazySocket`).
    match tokio::io::AsyncReadExt::read_buf(stream, &mut buf).await? {
        0 => Ok(None),
        _ => Ok(Some((Protocol::from_prefix(&buf), buf.freeze()))),
    }
}

/// The hyper connection builders for client-facing connections, one per
/// protocol, configured alike. HTTP/2 gets a builder per connection, made
/// by `http2`, because each connection runs its streams on its own
/// [`StreamExecutor`].
pub struct Builders {
    pub http1: http1::Builder,
    pub http2: Box<dyn Fn(StreamExecutor) -> http2::Builder<StreamExecutor> + Send + Sync>,
    pub auto: auto::Builder<TokioExecutor>,
}

/// A client connection's stream, as the serving functions need it.
pub trait ClientIo: AsyncRead + AsyncWrite + Parkable + Unpin + Send + 'static {}
impl<I: AsyncRead + AsyncWrite + Parkable + Unpin + Send + 'static> ClientIo for I {}

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
    /// When an HTTP/1.1 connection resting in its task is closed if it
    /// serves no request meanwhile.
    pub rest_deadline: tokio::time::Instant,
    /// On a new connection, when its first request head must be in: the
    /// time since its first bytes came counts.
    pub first_head_by: Option<tokio::time::Instant>,
    /// Whether a parking lot takes resting connections that can leave their task.
    pub lot: bool,
}

/// Serve one connection until the client leaves, it idles out, or the
/// process drains (then in-flight requests finish and the connection closes).
/// Returns the stream instead when it rests between requests and can leave
/// its task for the parking lot.
pub async fn serve<I, S, B>(io: I, protocol: Protocol, first_bytes: Bytes, service: S, ctx: ConnCtx<'_>) -> Option<I>
where
    I: ClientIo,
    S: ConnService<B>,
    B: SendBody,
{
    // Boxed: the task stays small, and holds only the chosen protocol's state.
    match protocol {
        Protocol::Http1 => serve_http1(io, first_bytes, service, &ctx).await,
        Protocol::Http2 => {
            let io = ActivityIo::new(io, Arc::clone(&ctx.activity), first_bytes);
            let io = TokioIo::new(CoalescingIo::new(io));
            let executor = StreamExecutor::default();
            let conn = Box::pin((ctx.builders.http2)(executor.clone()).serve_connection(io, service));
            let streams = Streams::new(executor);
            Box::pin(drive(conn, Some(streams), &ctx, None)).await;
            None
        }
        Protocol::Detect => {
            let io = TokioIo::new(ActivityIo::new(io, Arc::clone(&ctx.activity), first_bytes));
            // hyper-util's builder keeps hyper's own header timer.
            let conn = Box::pin(ctx.builders.auto.serve_connection_with_upgrades(io, service));
            Box::pin(drive(conn, None, &ctx, None)).await;
            None
        }
    }
}

/// How long an HTTP/1.1 connection stays quiet, between requests, before
/// hyper's state and buffers are dropped and only the socket is kept.
pub const PARK_AFTER: Duration = Duration::from_millis(25);

/// Serve HTTP/1.1, parking the connection whenever it rests between
/// requests: hyper's connection (its 8 KiB read and write buffers, the
/// cached header map, the dispatcher) is dropped and only the socket and
/// this task wait for the next request, or the stream is returned to go to
/// the parking lot. The next bytes bring up a fresh hyper connection. Busy
/// connections never park.
async fn serve_http1<I, S, B>(mut io: I, first_bytes: Bytes, service: S, ctx: &ConnCtx<'_>) -> Option<I>
where
    I: ClientIo,
    S: ConnService<B>,
    B: SendBody,
{
    let mut prefix = first_bytes;
    // When resting in this task, the idle clock runs from the last request,
    // not from the last bytes (see `Activity::begun`).
    let mut idle_deadline = ctx.rest_deadline;
    let mut begun = ctx.activity.begun();
    loop {
        let wrapped = TokioIo::new(ActivityIo::new(io, Arc::clone(&ctx.activity), prefix));
        let conn = Box::pin(ctx.builders.http1.serve_connection(wrapped, service.clone()).with_upgrades());
        // Boxed, like every state that is not parking: the task itself then
        // only holds what a parked connection needs.
        let driven = Box::pin(drive(conn, None, ctx, Some(Http1Watch { park: I::PARKS }))).await;
        let conn = driven?;
        // Everything of hyper's is dropped here, at the end of this block,
        // including an empty read buffer that still owns its allocation.
        (io, prefix) = {
            let parts = Pin::into_inner(conn).into_parts()?;
            let (inner, unread_prefix) = parts.io.into_inner().into_parts();
            // Bytes already read but not parsed go to the next connection.
            let prefix = match (parts.read_buf.is_empty(), unread_prefix.is_empty()) {
                (true, true) => Bytes::new(),
                (true, false) => unread_prefix,
                (false, true) => parts.read_buf,
                (false, false) => [parts.read_buf, unread_prefix].concat().into(),
            };
            (inner, prefix)
        };
        if prefix.is_empty() {
            if I::LEAVES_TASK && ctx.lot {
                return Some(io);
            }
            if ctx.activity.begun() != begun {
                begun = ctx.activity.begun();
                idle_deadline = tokio::time::Instant::now() + ctx.idle_timeout;
            }
            let next_request = tokio::select! {
                r = std::future::poll_fn(|cx| io.poll_read_ready(cx)) => r.is_ok(),
                _ = ctx.shutdown.cancelled() => false,
                _ = tokio::time::sleep_until(idle_deadline) => false,
            };
            if !next_request {
                return None;
            }
        }
    }
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
