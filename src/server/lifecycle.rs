//! A client connection's life, from accept to close, in the order it is
//! lived. Its states and what moves it on:
//!
//! ```text
//! new ──(plain)──────────────────────────────> sniffing ──> serving h1 | h2
//! new ──(TLS)──> handshake ──(ALPN h2, http/1.1)────────> serving h2 | h1
//!                          └─(no ALPN)─────────> sniffing
//! serving h1 ──(quiet for PARK_AFTER)──> resting ──(a lot)──> parked
//! resting, parked ──(the client's next bytes)──> serving h1
//! serving ──(drain)──> draining ──> closed
//! serving h1 ──(closed by hyper mid-request)──> lingering ──> closed
//! parked ──(a new client at max_connections)──> closed
//! any ──(a timeout, the client gone, an error, a drain)──> closed
//! ```
//!
//! - **new**: accepted by an accept loop (`mod.rs`) within
//!   `max_connections`, its [`ConnSlot`] taken; a plain socket is not in
//!   tokio's poller yet ([`ClientSocket::plain`]). Its first request is due within
//!   `client_header_timeout` ([`Due::new_connection`]).
//! - **TLS handshake**: in `tls/listener.rs`, over a
//!   [`ClientSocket`] registered at once; ALPN then names
//!   the protocol ([`Serving::serve_tls_session`]), else the first bytes do.
//! - **sniffing**: waiting for the first bytes and telling HTTP/1.1 from
//!   HTTP/2 by them ([`sniff`]); nothing of hyper's exists yet.
//! - **serving h1 / h2**: hyper drives the connection in its task
//!   ([`Serving::serve_io`], [`serve`], `drive.rs`); an HTTP/1.1 one is
//!   watched by deadlines on a shared coarse clock (`activity/watch.rs`,
//!   `deadlines.rs`: header timeout, idle, send stall, rest), an HTTP/2
//!   one for idleness and stalls.
//! - **resting**: an HTTP/1.1 connection quiet for [`PARK_AFTER`] between
//!   requests: hyper's state is dropped ([`serve_http1`]); the stream goes
//!   to the parking lot, or waits in its task when there is none, until its
//!   next bytes (serving h1 again) or `idle_timeout`.
//! - **parked**: in the parking lot (`lot.rs`), with no task, until its
//!   client sends again ([`Serving::resume`], serving h1 on a new task),
//!   its idle deadline passes ([`Serving::rest_until`]), or a new client
//!   finds `max_connections` reached and the longest-resting parked
//!   connections give up their places (`ParkingLot::make_room`).
//! - **draining**: on shutdown, answers in progress finish and each
//!   connection closes after its last (`drive.rs`); parked ones close at
//!   once; a WebSocket tunnel is cut.
//! - **lingering**: an HTTP/1 connection hyper closed while its client was
//!   still sending a request (an early answer to an upload) discards what
//!   comes for a while before it closes, so the client reads the answer
//!   (`linger.rs`).
//! - **closed**: the stream dropped, its [`ConnSlot`] given back.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncRead;
use tokio::time::Instant;

use super::activity::{Activity, ActivityIo};
use super::client_socket::ClientSocket;
use super::coalesce::CoalescingIo;
use super::conn::{ClientIo, ConnCtx, ConnService, Protocol, SendBody};
use super::drive::{drive, Driven, Http1Watch};
use super::framing::io::FramingIo;
use super::framing::RequestFraming;
use super::linger::linger;
use super::lot::{self, Resting, Resumed};
use super::sendfile::SendfileIo;
use super::service::proxy_service;
use super::streams::{StreamExecutor, Streams};
use super::{ConnSlot, Serving};
use crate::proxy::ConnInfo;

/// How long an HTTP/1.1 connection stays quiet, between requests, before
/// hyper's state and buffers are dropped and only the socket is kept.
pub const PARK_AFTER: Duration = Duration::from_millis(25);

/// When a visit of a connection to its task must have brought a request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Due {
    /// A connection that serves nothing by then is closed.
    expires: Instant,
    /// A new connection's first head must be whole by then, however its
    /// bytes trickle (see `Activity::watch`).
    first_head_by: Option<Instant>,
}

impl Due {
    pub(super) fn new_connection(first_request_by: Instant) -> Self {
        Due { expires: first_request_by, first_head_by: Some(first_request_by) }
    }

    pub(super) fn resumed(expires: Instant) -> Self {
        Due { expires, first_head_by: None }
    }
}

impl Serving {
    /// A plain connection, from accept to close.
    pub(super) async fn serve_plain(&self, stream: std::net::TcpStream, peer: SocketAddr, slot: ConnSlot) {
        let first_request_by = Instant::now() + self.header_timeout;
        let mut stream = ClientSocket::plain(stream);
        let Some((protocol, first_bytes)) = self.first_bytes(&mut stream, peer).await else { return };
        let info = Arc::new(ConnInfo::new(peer, false));
        if let Some((resting, served)) =
            self.serve_io(stream, protocol, first_bytes, info, Due::new_connection(first_request_by)).await
        {
            self.park(resting, peer, slot, self.rest_until(served, first_request_by));
        }
    }

    /// Wait for the client's first bytes and tell the protocol from them.
    /// Nothing of hyper's exists until the client sends something; one that
    /// sends nothing within `client_header_timeout` is cut off like a slow
    /// header. `None`: the connection is done (closed, failed, timed out, or
    /// the process drains).
    async fn first_bytes<S: AsyncRead + Unpin>(&self, stream: &mut S, peer: SocketAddr) -> Option<(Protocol, Bytes)> {
        let sniffed = tokio::select! {
            _ = self.shutdown.cancelled() => return None,
            r = Box::pin(tokio::time::timeout(self.header_timeout, sniff(stream))) => r,
        };
        match sniffed {
            Ok(Ok(first)) => first,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "connection failed before a request");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "no request before the header timeout");
                None
            }
        }
    }

    /// Serve a TLS connection over its session, parking it whenever it
    /// rests. Its first request is due within `client_header_timeout`.
    ///
    /// A client that offered no ALPN protocol (wrk, many HTTP libraries and
    /// monitoring agents) is told apart by its first bytes, as on plain
    /// TCP: HTTP/1.1 then gets our own builder, header timeout and parking,
    /// not hyper-util's auto builder, which never parks.
    pub async fn serve_tls_session(
        &self,
        mut tls: lot::TlsClient,
        protocol: Protocol,
        peer: SocketAddr,
        slot: ConnSlot,
    ) {
        let first_request_by = Instant::now() + self.header_timeout;
        let (protocol, first_bytes) = match protocol {
            Protocol::Detect => match self.first_bytes(&mut tls, peer).await {
                Some(first) => first,
                None => return,
            },
            known => (known, Bytes::new()),
        };
        self.serve_tls_resting(tls, protocol, first_bytes, peer, slot, Due::new_connection(first_request_by)).await;
    }

    /// The same, for a connection that must send a request by `due`
    /// (it may come back from the parking lot).
    async fn serve_tls_resting(
        &self,
        mut tls: lot::TlsClient,
        protocol: Protocol,
        first_bytes: Bytes,
        peer: SocketAddr,
        slot: ConnSlot,
        due: Due,
    ) {
        let expires = due.expires;
        let info = Arc::new(ConnInfo::new(peer, true));
        let served = self.serve_io(tls, protocol, first_bytes, info, due).await;
        let Some((resting, served)) = served else { return };
        tls = resting;
        let Some(lot) = &self.lot else { return };
        // A TLS 1.3 client that has not asked for anything yet still has
        // its session ticket held; it goes before the connection parks.
        if !tls.get_mut().0.send_held(expires, &self.shutdown).await {
            return;
        }
        match tls.get_mut().0.leave_poller() {
            Ok(()) => lot.park(Resting::Tls(Box::new(tls)), peer, slot, self.rest_until(served, expires)),
            Err(e) => tracing::debug!(error = %e, "cannot park a connection; closing it"),
        }
    }

    /// Serve the proxy over any accepted stream (plain TCP, or TLS). Returns
    /// the stream when it rests and should go to the parking lot, with
    /// whether it served a request this time. Resting in its task instead,
    /// it is closed at `expires` unless it serves a request.
    pub(super) async fn serve_io<I: ClientIo>(
        &self,
        io: I,
        protocol: Protocol,
        first_bytes: bytes::Bytes,
        info: Arc<ConnInfo>,
        due: Due,
    ) -> Option<(I, bool)> {
        // The coarse clock is current while any connection is served.
        let _serving = self.deadlines.serving();
        let activity = Arc::new(Activity::new(Arc::clone(&self.deadlines)));
        let files = I::SENDS_FILES.then(Arc::default);
        let service = proxy_service(Arc::clone(&self.proxy), Arc::clone(&info), Arc::clone(&activity), files.clone());
        let ctx = ConnCtx {
            activity: Arc::clone(&activity),
            builders: &self.builders,
            shutdown: &self.shutdown,
            idle_timeout: self.idle_timeout,
            header_timeout: self.header_timeout,
            max_header_bytes: self.max_header_bytes,
            rest_deadline: due.expires,
            first_head_by: due.first_head_by,
            lot: self.lot.as_ref().is_some_and(|lot| lot.is_open()),
            files,
            proxy: &self.proxy,
            peer: info.peer.ip(),
        };
        let Some(resting) = serve(io, protocol, first_bytes, service, ctx).await else {
            if let Some(tunnel) = info.take_tunnel() {
                // Still holding the connection's slot (the caller's).
                tokio::select! {
                    _ = tunnel => {}
                    _ = self.shutdown.cancelled() => tracing::debug!("closing an upgraded connection for the drain"),
                }
            }
            return None;
        };
        // A fresh `Activity` per visit: any request begun was this visit's.
        Some((resting, activity.begun() != 0))
    }

    /// Until when a connection parking now may wait for its next request:
    /// `idle_timeout` (counted from the end of its last request, which was
    /// [`PARK_AFTER`] ago) if it served one on this visit, else the
    /// deadline it already had. Bytes that brought no request (a TLS client
    /// trickling a record) do not buy time.
    fn rest_until(&self, served: bool, expires: Instant) -> Instant {
        if served {
            Instant::now() + self.idle_timeout.saturating_sub(PARK_AFTER)
        } else {
            expires
        }
    }

    /// Hand a resting plain connection to the parking lot.
    fn park(&self, stream: ClientSocket, peer: SocketAddr, slot: ConnSlot, expires: Instant) {
        let Some(lot) = &self.lot else { return };
        match stream.into_std() {
            Ok(stream) => lot.park(Resting::Plain(stream), peer, slot, expires),
            Err(e) => tracing::debug!(error = %e, "cannot park a connection; closing it"),
        }
    }

    /// A parked connection whose client sent something (or closed): served
    /// on a new task, as it was when it parked.
    pub(super) fn resume(&self, stream: Resumed, peer: SocketAddr, slot: ConnSlot, expires: Instant) {
        let this = self.clone();
        match stream {
            Resumed::Plain(stream) => self
                .tracker
                .spawn(async move { this.resume_plain(ClientSocket::plain(stream), peer, slot, expires).await }),
            Resumed::Tls(tls) => self.tracker.spawn(async move {
                let due = Due::resumed(expires);
                this.serve_tls_resting(*tls, Protocol::Http1, Bytes::new(), peer, slot, due).await
            }),
        };
    }

    /// Serve a plain HTTP/1.1 connection again after it left the parking lot.
    async fn resume_plain(&self, stream: ClientSocket, peer: SocketAddr, slot: ConnSlot, expires: Instant) {
        let info = Arc::new(ConnInfo::new(peer, false));
        let served = self.serve_io(stream, Protocol::Http1, bytes::Bytes::new(), info, Due::resumed(expires)).await;
        if let Some((resting, served)) = served {
            self.park(resting, peer, slot, self.rest_until(served, expires));
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
    // nothing. A plain one is not registered yet (see `ClientSocket`).
    match tokio::io::AsyncReadExt::read_buf(stream, &mut buf).await? {
        0 => Ok(None),
        _ => Ok(Some((Protocol::from_prefix(&buf), buf.freeze()))),
    }
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
            let io = ActivityIo::new(io, Arc::clone(&ctx.activity), first_bytes);
            // Guarded as HTTP/1 until the bytes are the HTTP/2 preface.
            let io = TokioIo::new(FramingIo::new(io, RequestFraming::new(ctx.max_header_bytes), 0));
            // hyper-util's builder keeps hyper's own header timer.
            let conn = Box::pin(ctx.builders.auto.serve_connection_with_upgrades(io, service));
            Box::pin(drive(conn, None, &ctx, None)).await;
            None
        }
    }
}

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
    // The request framing guard follows the connection's bytes across
    // hyper connections: `judged` of the next prefix it has seen already.
    let mut framing = RequestFraming::new(ctx.max_header_bytes);
    let mut judged = 0;
    if let Some(files) = &ctx.files {
        files.arm();
    }
    loop {
        let activity_io = ActivityIo::new(SendfileIo::new(io, ctx.files.clone()), Arc::clone(&ctx.activity), prefix);
        let wrapped = TokioIo::new(FramingIo::new(activity_io, framing, judged));
        let builder = if I::PEEKS { &ctx.builders.http1_plain } else { &ctx.builders.http1 };
        let conn = Box::pin(builder.serve_connection(wrapped, service.clone()).with_upgrades());
        // Boxed, like every state that is not parking: the task itself then
        // only holds what a parked connection needs.
        let (conn, finished) = match Box::pin(drive(conn, None, ctx, Some(Http1Watch { park: I::PARKS }))).await {
            Driven::Resting(conn) => (conn, false),
            Driven::Finished(conn) => (conn, true),
            Driven::CutOff => return None,
        };
        // Everything of hyper's is dropped here, at the end of this block,
        // including an empty read buffer that still owns its allocation.
        (io, prefix, framing, judged) = {
            let parts = Pin::into_inner(conn).into_parts()?;
            let (activity_io, framing) = parts.io.into_inner().into_parts();
            let (sendfile_io, unread_prefix) = activity_io.into_parts();
            let inner = sendfile_io.into_inner()?;
            // hyper's unparsed bytes came through the guard; the rest of
            // the prefix did not.
            let judged = parts.read_buf.len();
            // Bytes already read but not parsed go to the next connection.
            let prefix = match (parts.read_buf.is_empty(), unread_prefix.is_empty()) {
                (true, true) => Bytes::new(),
                (true, false) => unread_prefix,
                (false, true) => parts.read_buf,
                (false, false) => [parts.read_buf, unread_prefix].concat().into(),
            };
            (inner, prefix, framing, judged)
        };
        if finished {
            // A client still sending a request gets its answer read before
            // the close resets the connection (`linger.rs`).
            if framing.mid_request() {
                linger(&mut io, ctx.shutdown).await;
            }
            return None;
        }
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
