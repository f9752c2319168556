//! The keep-alive HTTP/1.1 client used to reach upstream servers.
//!
//! It speaks HTTP/1.1 itself (framing in [`super::h1`]) instead of going
//! through hyper's client, because a proxy's upstream side is simple and
//! hot: the request head is written straight from the headers into a
//! reused buffer, the response is read into a buffer the body frames are
//! sliced from, and everything runs inside the task that serves the client
//! — no connection task, no channel, no wake-up hop per request. That cut
//! proxy CPU per small request by about 8% (see `benches/README.md`).
//!
//! Each [`Server`] keeps a stack of idle connections ([`super::idle`]). A
//! request pops one that is still
//! open or dials a new one; the connection travels inside the response
//! body ([`UpstreamBody`]) and goes back on the stack only when both the
//! request and the response ended cleanly and the server allows reuse.
//!
//! A reused connection can turn out to be closed by the server just as the
//! request is written (the keep-alive race). Like Go's transport and nginx,
//! such a request is sent again on a fresh connection only if it is safe to
//! replay: no body, idempotent method, and no response byte seen.

use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::h1::{self, ChunkedDecoder, Decoded, ProtocolError, RequestFraming, ResponseFraming};
use super::server::{InFlightGuard, Server};
use crate::body::{BoxError, RequestBody};

const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Read buffer growth: enough for a typical head plus a small body in one
/// read; large bodies read up to [`MAX_READ`] at a time.
const READ_CHUNK: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;
/// A parked connection keeps at most this much read buffer.
const MAX_IDLE_BUFFER: usize = 16 * 1024;

/// What a client is built from; a reload reuses the old client when these
/// are unchanged (the idle connections live on the servers, which carry
/// over anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    pub max_idle_per_server: usize,
}

#[derive(Debug, Clone)]
pub struct UpstreamClient {
    settings: ClientSettings,
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: nothing reached the server.
    Connect(io::Error),
    /// The connect did not finish within `connect_timeout`.
    ConnectTimeout,
    /// The connection failed after the request may have been written.
    Io(io::Error),
    /// The server's answer was not valid HTTP/1.1.
    Protocol(ProtocolError),
    /// The client's request body failed (it went away mid-upload, or a
    /// body limit stopped it): not the server's fault.
    ClientBody(BoxError),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Connect(_) => f.write_str("connect failed"),
            SendError::ConnectTimeout => f.write_str("connect timed out"),
            SendError::Io(_) => f.write_str("request failed"),
            SendError::Protocol(_) => f.write_str("bad response"),
            SendError::ClientBody(_) => f.write_str("client request body failed"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Connect(e) | SendError::Io(e) => Some(e),
            SendError::ConnectTimeout => None,
            SendError::Protocol(e) => Some(e),
            SendError::ClientBody(e) => Some(&**e),
        }
    }
}

/// An open connection to a server and its buffers (both reused from one
/// request to the next).
#[derive(Debug)]
pub struct Conn {
    pub(super) stream: TcpStream,
    read_buf: BytesMut,
    head_buf: Vec<u8>,
    /// The owning client's `max_idle_per_server`, for parking it.
    pub(super) max_idle: usize,
}

impl Conn {
    pub(super) fn new(stream: TcpStream) -> Self {
        Conn { stream, read_buf: BytesMut::new(), head_buf: Vec::new(), max_idle: 0 }
    }

    /// Whether a parked connection is still usable: the server has not
    /// closed it or sent anything unasked. Costs a syscall only when the
    /// reactor saw the socket become readable.
    pub(super) fn still_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Read what has arrived, with room for `want` more bytes (clamped).
    fn poll_read_more(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let want = want.clamp(READ_CHUNK, MAX_READ);
        if self.read_buf.capacity() - self.read_buf.len() < want {
            self.read_buf.reserve(want);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read_buf)
    }
}

impl UpstreamClient {
    pub fn new(settings: ClientSettings) -> Self {
        UpstreamClient { settings }
    }

    /// Send `req` (origin-form URI, `Host` set, hop-by-hop headers gone) to
    /// `server` on an idle connection or a new one, and wait for the
    /// response head. The body streams from the returned response.
    pub async fn request(
        &self,
        server: &Server,
        req: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let (parts, body) = req.into_parts();
        let framing = request_framing(&parts, &body);
        let replayable = matches!(framing, RequestFraming::Empty { .. }) && is_idempotent(&parts.method);
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut body = Some(body);
        let mut parked = server.idle.checkout();
        loop {
            let reused = parked.is_some();
            let mut conn = match parked.take() {
                Some(conn) => conn,
                // Boxed: connecting is the rare path, and its state (the
                // connect future and its timer) would otherwise grow this
                // future, which is moved several times per request.
                None => Box::pin(self.connect(server)).await?,
            };
            conn.max_idle = self.settings.max_idle_per_server;
            h1::encode_request_head(&parts.method, path, &parts.headers, framing, &mut conn.head_buf);
            let body = body.take().unwrap_or_else(RequestBody::empty);
            let mut wire = Box::new(Wire::new(conn, body, framing == RequestFraming::Chunked));
            match poll_fn(|cx| wire.poll_head(cx, &parts.method)).await {
                Ok(head) => {
                    let mut resp = Response::new(());
                    *resp.status_mut() = head.status;
                    *resp.version_mut() = head.version;
                    *resp.headers_mut() = head.headers;
                    wire.keep_alive = head.keep_alive;
                    wire.state = match head.framing {
                        ResponseFraming::Empty | ResponseFraming::Length(0) => BodyState::Done,
                        ResponseFraming::Length(n) => BodyState::Length(n),
                        ResponseFraming::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
                        ResponseFraming::UntilClose => BodyState::UntilClose,
                    };
                    let body = UpstreamBody { wire: Some(wire), guard: None };
                    return Ok(resp.map(|()| body));
                }
                Err(e) if reused && replayable && !wire.received_any && e.may_be_stale_connection() => {
                    tracing::debug!(error = %e, "reused upstream connection was closed; sending again on a new one");
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn connect(&self, server: &Server) -> Result<Conn, SendError> {
        let connecting = TcpStream::connect(server.addr.0.as_str());
        let stream = match tokio::time::timeout(self.settings.connect_timeout, connecting).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Connect(e)),
            Err(_) => return Err(SendError::ConnectTimeout),
        };
        // Best effort: a failure here costs latency, not correctness.
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        Ok(Conn::new(stream))
    }
}

impl SendError {
    fn may_be_stale_connection(&self) -> bool {
        matches!(self, SendError::Io(_))
    }
}

/// Methods a server must treat as safe to repeat (RFC 9110 9.2.2): the
/// ones retried after a failure that may have reached the server.
pub fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// How to frame the request body: the exact size when known (from the
/// body or the client's Content-Length), chunked otherwise.
fn request_framing(parts: &http::request::Parts, body: &RequestBody) -> RequestFraming {
    let declared = || parts.headers.get(http::header::CONTENT_LENGTH);
    if body.is_end_stream() {
        let expects_body = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
        return RequestFraming::Empty { content_length_zero: expects_body || declared().is_some() };
    }
    // The header is only consulted when the body cannot say its size.
    let declared_len = || declared().and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match body.size_hint().exact().or_else(declared_len) {
        Some(n) => RequestFraming::Length(n),
        None => RequestFraming::Chunked,
    }
}

/// One exchange on one connection: the request still being written and
/// the response being read.
struct Wire {
    conn: Conn,
    /// Bytes of `conn.head_buf` already written.
    head_written: usize,
    /// The request body still to send; `None` once it ended.
    body: Option<RequestBody>,
    chunked: bool,
    /// Encoded bytes waiting to be written (chunk size line, data, CRLF).
    out: [Bytes; 3],
    /// Writing stopped: the server stopped reading (it may still answer).
    write_error: Option<io::Error>,
    received_any: bool,
    keep_alive: bool,
    state: BodyState,
}

enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

enum WriteError {
    Io(io::Error),
    Body(BoxError),
}

impl Wire {
    fn new(conn: Conn, body: RequestBody, chunked: bool) -> Self {
        let body = (!body.is_end_stream()).then_some(body);
        Wire {
            conn,
            head_written: 0,
            body,
            chunked,
            out: Default::default(),
            write_error: None,
            received_any: false,
            keep_alive: false,
            state: BodyState::Done,
        }
    }

    fn request_written(&self) -> bool {
        self.head_written == self.conn.head_buf.len() && self.body.is_none() && self.out.iter().all(Bytes::is_empty)
    }

    /// Write as much of the request as can go now.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WriteError>> {
        loop {
            let stream = Pin::new(&mut self.conn.stream);
            if self.head_written < self.conn.head_buf.len() {
                let n =
                    ready!(stream.poll_write(cx, &self.conn.head_buf[self.head_written..])).map_err(WriteError::Io)?;
                if n == 0 {
                    return Poll::Ready(Err(WriteError::Io(io::ErrorKind::WriteZero.into())));
                }
                self.head_written += n;
                continue;
            }
            if self.out.iter().any(|b| !b.is_empty()) {
                let slices: [IoSlice<'_>; 3] =
                    [IoSlice::new(&self.out[0]), IoSlice::new(&self.out[1]), IoSlice::new(&self.out[2])];
                let n = ready!(stream.poll_write_vectored(cx, &slices)).map_err(WriteError::Io)?;
                if n == 0 {
                    return Poll::Ready(Err(WriteError::Io(io::ErrorKind::WriteZero.into())));
                }
                let mut left = n;
                for b in &mut self.out {
                    let k = left.min(b.len());
                    b.advance(k);
                    left -= k;
                }
                continue;
            }
            let Some(body) = self.body.as_mut() else { return Poll::Ready(Ok(())) };
            match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers are not forwarded (few servers read them).
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    self.out = if self.chunked {
                        [h1::chunk_header(data.len()), data, Bytes::from_static(b"\r\n")]
                    } else {
                        [data, Bytes::new(), Bytes::new()]
                    };
                }
                Some(Err(e)) => return Poll::Ready(Err(WriteError::Body(e))),
                None => {
                    self.body = None;
                    if self.chunked {
                        self.out[0] = Bytes::from_static(b"0\r\n\r\n");
                    }
                }
            }
        }
    }

    /// Keep the request going unless it is done or writing already failed.
    /// A client body failure ends the exchange; a write failure only stops
    /// writing (the server may have answered already).
    fn pump_request(&mut self, cx: &mut Context<'_>) -> Result<(), SendError> {
        if self.write_error.is_some() || self.request_written() {
            return Ok(());
        }
        match self.poll_write(cx) {
            Poll::Ready(Err(WriteError::Body(e))) => Err(SendError::ClientBody(e)),
            Poll::Ready(Err(WriteError::Io(e))) => {
                self.write_error = Some(e);
                Ok(())
            }
            Poll::Ready(Ok(())) | Poll::Pending => Ok(()),
        }
    }

    /// Write the request and read until a final response head arrives.
    fn poll_head(&mut self, cx: &mut Context<'_>, method: &Method) -> Poll<Result<h1::ResponseHead, SendError>> {
        self.pump_request(cx)?;
        loop {
            if !self.conn.read_buf.is_empty() {
                self.received_any = true;
                match h1::parse_response_head(&mut self.conn.read_buf, method) {
                    // 100 Continue, 103 Early Hints: not passed on.
                    Ok(Some(head)) if head.status.is_informational() && head.status.as_u16() != 101 => continue,
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(SendError::Protocol(e))),
                }
            }
            match ready!(self.conn.poll_read_more(cx, READ_CHUNK)) {
                Ok(0) => {
                    let e = self.write_error.take().unwrap_or_else(|| io::ErrorKind::UnexpectedEof.into());
                    return Poll::Ready(Err(SendError::Io(e)));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(SendError::Io(e))),
            }
        }
    }

    /// The next piece of the response body; `None` at its end.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BoxError>> {
        loop {
            let buf = &mut self.conn.read_buf;
            let want = match &mut self.state {
                BodyState::Done => return Poll::Ready(Ok(None)),
                BodyState::Length(left) => {
                    if !buf.is_empty() {
                        let n = (*left).min(buf.len() as u64);
                        *left -= n;
                        if *left == 0 {
                            self.state = BodyState::Done;
                        }
                        return Poll::Ready(Ok(Some(buf.split_to(n as usize).freeze())));
                    }
                    usize::try_from(*left).unwrap_or(MAX_READ)
                }
                BodyState::Chunked(decoder) => match decoder.decode(buf)? {
                    Decoded::Data(d) => return Poll::Ready(Ok(Some(d))),
                    Decoded::Done => {
                        self.state = BodyState::Done;
                        continue;
                    }
                    Decoded::NeedMore => READ_CHUNK,
                },
                BodyState::UntilClose => {
                    if !buf.is_empty() {
                        return Poll::Ready(Ok(Some(buf.split().freeze())));
                    }
                    MAX_READ
                }
            };
            if ready!(self.conn.poll_read_more(cx, want))? == 0 {
                if matches!(self.state, BodyState::UntilClose) {
                    self.keep_alive = false;
                    self.state = BodyState::Done;
                    continue;
                }
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()));
            }
        }
    }

    fn reusable(&self) -> bool {
        self.keep_alive
            && matches!(self.state, BodyState::Done)
            && self.write_error.is_none()
            && self.request_written()
            && self.conn.read_buf.is_empty()
    }
}

/// A response body read from an upstream connection. When it ends cleanly
/// the connection goes back to the server's idle stack; dropped early, the
/// connection is closed (which is how a client that left cancels its
/// upstream request).
pub struct UpstreamBody {
    wire: Option<Box<Wire>>,
    /// The server's in-flight slot, held until the body ends.
    guard: Option<InFlightGuard>,
}

impl fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBody").field("open", &self.wire.is_some()).finish()
    }
}

impl UpstreamBody {
    /// Hold `guard` until the body ends. An already finished body (HEAD,
    /// 204, 304, empty) releases it, and its connection, at once.
    pub fn attach(&mut self, guard: InFlightGuard) {
        self.guard = Some(guard);
        if self.is_end_stream() {
            self.finish();
        }
    }

    /// Whether the rest of the body has already been read from the server,
    /// so all of it can be written out at once.
    pub fn in_memory_to_end(&self) -> bool {
        match self.wire.as_deref() {
            None => true,
            Some(wire) => match wire.state {
                BodyState::Done => true,
                BodyState::Length(n) => wire.conn.read_buf.len() as u64 >= n,
                BodyState::Chunked(_) | BodyState::UntilClose => false,
            },
        }
    }

    /// The connection after a `101 Switching Protocols`, with any bytes of
    /// the new protocol already read, and the in-flight slot.
    pub fn into_upgraded(mut self) -> Option<(TcpStream, BytesMut, Option<InFlightGuard>)> {
        let wire = self.wire.take()?;
        let Conn { stream, read_buf, .. } = wire.conn;
        Some((stream, read_buf, self.guard.take()))
    }

    fn finish(&mut self) {
        let Some(wire) = self.wire.take() else { return };
        match self.guard.take() {
            Some(guard) if wire.reusable() => {
                let Wire { mut conn, .. } = *wire;
                if conn.read_buf.capacity() > MAX_IDLE_BUFFER {
                    conn.read_buf = BytesMut::new();
                }
                guard.release(conn);
            }
            _ => {}
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(wire) = this.wire.as_mut() else { return Poll::Ready(None) };
        if let Err(e) = wire.pump_request(cx) {
            this.wire = None;
            this.guard = None;
            return Poll::Ready(Some(Err(Box::new(e))));
        }
        match wire.poll_data(cx) {
            Poll::Ready(Ok(Some(data))) => {
                // hyper stops polling once `is_end_stream` says so: finish
                // with the last data frame, not on a later poll.
                if matches!(wire.state, BodyState::Done) {
                    this.finish();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Ok(None)) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                this.wire = None;
                this.guard = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.wire.as_ref().is_none_or(|w| matches!(w.state, BodyState::Done))
    }

    fn size_hint(&self) -> SizeHint {
        match self.wire.as_ref().map(|w| &w.state) {
            None | Some(BodyState::Done) => SizeHint::with_exact(0),
            Some(BodyState::Length(n)) => SizeHint::with_exact(*n),
            Some(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamAddr;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_request_with_a_streamed_body_goes_out_chunked_and_the_connection_is_reused() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.ends_with(b"0\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
                .await
                .unwrap();
            // Keep the connection open until the client has parked it.
            let _ = s.read(&mut buf).await;
            String::from_utf8(got).unwrap()
        });
        let server = Arc::new(Server::new(&Arc::from("p"), UpstreamAddr(addr.to_string()), 1).unwrap());
        let client =
            UpstreamClient::new(ClientSettings { connect_timeout: Duration::from_secs(5), max_idle_per_server: 4 });
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(2);
        let stream_body = http_body_util::StreamBody::new(tokio_stream_from(rx));
        let body = RequestBody::Boxed { body: http_body_util::BodyExt::boxed_unsync(stream_body) };
        let req = Request::post("/up").header("host", "h").body(body).unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"hello ")))).await.unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"world")))).await.unwrap();
        drop(tx);
        let resp = client.request(&server, req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        body.attach(server.start_request());
        let collected = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"abc");
        assert_eq!(server.idle.len(), 1, "parked for the next request");
        assert_eq!(server.in_flight(), 0);
        drop(server);
        let wire = seen.await.unwrap();
        assert!(wire.starts_with("POST /up HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n"), "{wire}");
        assert!(wire.ends_with("6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"), "{wire}");
    }

    /// An mpsc receiver as a `Stream`, without another dependency.
    fn tokio_stream_from<T>(rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
    }
}
