//! The keep-alive HTTP/1.1 client used to reach upstream servers.
//!
//! Why its own client and not hyper's: against hyper's
//! `client::conn::http1` driven the same way (the connection future polled
//! in the request's task, never spawned, the pair back on the same idle
//! stack; `benches/experiments/hyper-upstream-client.patch`), a proxied
//! request costs 26.0-26.5k user-space instructions here instead of
//! 39.6-39.7k for 1 KiB answers (hyper's 1.5x) and 29.8-30.6k instead of
//! 40.3-40.4k for 100 KiB ones (1.3x), with the same syscalls per small
//! request (4.2-4.3); chunked answers from `examples/upstream` 1.5x and 1.2x
//! (callgrind, `benches/README.md`). Most of the gap is hyper's general
//! response-head parse into a `HeaderMap` (about 6.5k instructions per
//! head), the owned `http::Request` it needs (a header map cloned, the path
//! parsed again) and its request and body channels between the exchange and
//! the connection. hyper does read a 100 KiB body in fewer `recvfrom`s.
//!
//! It speaks HTTP/1.1 itself (framing in [`super::h1`]): the request head
//! is written straight from the headers into a reused buffer, the response
//! is read into a buffer the body frames are sliced from, and everything
//! runs inside the task that serves the client — no connection task, no
//! channel, no wake-up hop per request. Against hyper's client with its
//! connection in a task of its own, that cut proxy CPU per small request
//! by about 8% when it came.
//!
//! Each [`Server`] keeps a stack of idle connections ([`super::idle`]). A
//! request pops one that is still open or dials a new one; the exchange on
//! it ([`super::wire`]) travels inside the response body ([`UpstreamBody`])
//! and puts the connection back on the stack only when both the request and
//! the response ended cleanly and the server allows reuse.
//!
//! A reused connection can turn out to be closed by the server just as the
//! request is written (the keep-alive race). Like Go's transport and nginx,
//! such a request is sent again on a fresh connection only if it is safe to
//! replay: no body, idempotent method, and no response byte seen.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::task::Poll;
use std::time::Duration;

use http::{HeaderMap, Method, Response};
use http_body::Body;
use tokio::net::TcpStream;

use super::body::{BoxError, RequestBody};
use super::conn::Conn;
use super::h1::{self, ProtocolError, RequestFraming};
use super::server::Server;
use super::wire::{UpstreamBody, Wire};

const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// What a client is built from; a reload reuses the old client when these
/// are unchanged (the idle connections live on the servers, which carry
/// over anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    /// How long the server may take to answer once the request is out, and
    /// how long an upload may stand still (see [`UpstreamClient::request`]).
    pub response_timeout: Duration,
    pub max_idle_per_server: usize,
}

#[derive(Debug, Clone)]
pub struct UpstreamClient {
    settings: ClientSettings,
}

/// The head of a request to send upstream, borrowed from wherever the
/// proxy keeps it: the method, the origin-form path and query, and the
/// headers as they go out (hop-by-hop ones gone, `Host` set).
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    /// Header lines written after `headers`, name and value: the proxy's
    /// forwarding headers, written straight into the head rather than
    /// inserted into the map first (1.6k of an `h1-1k` request's 26k
    /// instructions; benches/README.md).
    pub extra: &'a [(&'a str, &'a [u8])],
}

#[cfg(test)]
impl<'a> RequestHead<'a> {
    /// The head of `parts` as it stands, its URI in origin form.
    pub fn of(parts: &'a http::request::Parts) -> Self {
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        RequestHead { method: &parts.method, path_and_query, headers: &parts.headers, extra: &[] }
    }
}

/// A connection taken for one request ([`UpstreamClient::connection`]):
/// an idle one from the server's stack, or a new one.
#[derive(Debug)]
pub struct Checkout {
    conn: Conn,
    reused: bool,
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
    /// No response head within `response_timeout` of the request's last
    /// byte going out, or an upload the server stopped reading for as long.
    Timeout,
    /// The server read all the body the client had sent, and the client
    /// sent no more for `response_timeout`: the client's fault.
    ClientBodyTimeout,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Connect(_) => f.write_str("connect failed"),
            SendError::ConnectTimeout => f.write_str("connect timed out"),
            SendError::Io(_) => f.write_str("request failed"),
            SendError::Protocol(_) => f.write_str("bad response"),
            SendError::ClientBody(_) => f.write_str("client request body failed"),
            SendError::Timeout => f.write_str("no response in time"),
            SendError::ClientBodyTimeout => f.write_str("client request body stalled"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Connect(e) | SendError::Io(e) => Some(e),
            SendError::ConnectTimeout | SendError::Timeout | SendError::ClientBodyTimeout => None,
            SendError::Protocol(e) => Some(e),
            SendError::ClientBody(e) => Some(&**e),
        }
    }
}

impl UpstreamClient {
    pub fn new(settings: ClientSettings) -> Self {
        UpstreamClient { settings }
    }

    /// Send a request to `server` on an idle connection or a new one, and
    /// wait for the response head: [`Self::connection`] then
    /// [`Self::send_on`].
    pub async fn request(
        &self,
        server: &Server,
        head: RequestHead<'_>,
        body: RequestBody,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let conn = self.connection(server).await?;
        self.send_on(server, conn, head, body).await
    }

    /// A connection to `server`: an idle one, else a new one. Nothing of a
    /// request has moved yet, so on failure the caller still holds its
    /// body and may try another server with it, bodied or not.
    pub async fn connection(&self, server: &Server) -> Result<Checkout, SendError> {
        match server.idle.checkout() {
            Some(conn) => Ok(Checkout { conn, reused: true }),
            // Boxed: connecting is the rare path, and its state (the
            // connect future and its timer) would otherwise grow the
            // caller's future, which is moved several times per request.
            None => Ok(Checkout { conn: Box::pin(self.connect(server)).await?, reused: false }),
        }
    }

    /// Send a request on `conn` and wait for the response head. The body
    /// streams from the returned response. The head is borrowed, not
    /// consumed, so a caller can send the same head to another server
    /// without copying it.
    ///
    /// `response_timeout` counts from the last byte of the request that
    /// went out, not from the start: an upload that keeps moving is never
    /// cut off (nginx buffers the body first, so its `proxy_read_timeout`
    /// starts after it too), and one that stops for that long ends the
    /// exchange, blamed on whichever side stopped it.
    pub async fn send_on(
        &self,
        server: &Server,
        conn: Checkout,
        head: RequestHead<'_>,
        body: RequestBody,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let framing = request_framing(head, &body);
        let replayable = matches!(framing, RequestFraming::Empty { .. }) && is_idempotent(head.method);
        let mut body = Some(body);
        let Checkout { conn, mut reused } = conn;
        let mut next = Some(conn);
        let timeout = self.settings.response_timeout;
        let mut timer = std::pin::pin!(tokio::time::sleep(timeout));
        loop {
            // A block, so the connection's slot in this future is free again
            // once the exchange owns it.
            let mut wire = {
                let mut conn = match next.take() {
                    Some(conn) => conn,
                    None => Box::pin(self.connect(server)).await?,
                };
                conn.max_idle = self.settings.max_idle_per_server;
                h1::encode_request_head(
                    head.method,
                    head.path_and_query,
                    head.headers,
                    head.extra,
                    framing,
                    &mut conn.head_buf,
                );
                let body = body.take().unwrap_or_else(RequestBody::empty);
                Box::new(Wire::new(conn, body, framing == RequestFraming::Chunked))
            };
            let answer = poll_fn(|cx| {
                if let Poll::Ready(answer) = wire.poll_head(cx, head.method) {
                    return Poll::Ready(answer);
                }
                // The timer runs from the start; on expiry it moves on to
                // the last write's time plus the timeout when that is later,
                // so a moving upload costs one timer reset per timeout.
                while timer.as_mut().poll(cx).is_ready() {
                    let now = tokio::time::Instant::now();
                    match wire.last_body_write().map(|at| at + timeout) {
                        Some(deadline) if deadline > now => timer.as_mut().reset(deadline),
                        _ if wire.waiting_for_client_body() => return Poll::Ready(Err(SendError::ClientBodyTimeout)),
                        _ => return Poll::Ready(Err(SendError::Timeout)),
                    }
                }
                Poll::Pending
            });
            match answer.await {
                Ok(resp_head) => return Ok(wire.into_response(resp_head, timeout)),
                Err(e) if reused && replayable && !wire.received_any() && e.may_be_stale_connection() => {
                    tracing::debug!(error = %e, "reused upstream connection was closed; sending again on a new one");
                    reused = false;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn connect(&self, server: &Server) -> Result<Conn, SendError> {
        let connecting = TcpStream::connect(server.addr.0.as_str());
        let stream = tokio::select! {
            connected = tokio::time::timeout(self.settings.connect_timeout, connecting) => match connected {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(SendError::Connect(e)),
                Err(_) => return Err(SendError::ConnectTimeout),
            },
            () = server.retired() => {
                let left = io::Error::new(io::ErrorKind::ConnectionAborted, "the server left its pool");
                return Err(SendError::Connect(left));
            }
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
fn request_framing(head: RequestHead<'_>, body: &RequestBody) -> RequestFraming {
    let declared = || head.headers.get(http::header::CONTENT_LENGTH);
    if body.is_end_stream() {
        let expects_body = matches!(*head.method, Method::POST | Method::PUT | Method::PATCH);
        return RequestFraming::Empty { content_length_zero: expects_body || declared().is_some() };
    }
    // The header is only consulted when the body cannot say its size.
    let declared_len = || declared().and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match body.size_hint().exact().or_else(declared_len) {
        Some(n) => RequestFraming::Length(n),
        None => RequestFraming::Chunked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamAddr;
    use bytes::Bytes;
    use http_body::Frame;
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
        let client = UpstreamClient::new(ClientSettings {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(30),
            max_idle_per_server: 4,
        });
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(2);
        let stream_body = http_body_util::StreamBody::new(tokio_stream_from(rx));
        let body = RequestBody::Boxed { body: http_body_util::BodyExt::boxed_unsync(stream_body) };
        let (head, body) = http::Request::post("/up").header("host", "h").body(body).unwrap().into_parts();
        tx.send(Ok(Frame::data(Bytes::from_static(b"hello ")))).await.unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"world")))).await.unwrap();
        drop(tx);
        let resp = client.request(&server, RequestHead::of(&head), body).await.unwrap();
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
