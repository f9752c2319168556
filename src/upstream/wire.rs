//! One HTTP/1.1 exchange on an upstream connection ([`Conn`]): the request
//! written (its head, then the client's body as it streams in, sized or
//! chunked), the response head read, and the response body read as
//! frames sliced from the connection's read buffer. The body the proxy
//! holds, [`UpstreamBody`] (`body.rs`), returns the connection to its
//! server's idle stack ([`super::idle`]) when it ends cleanly and the
//! server allows reuse.

mod body;

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

use bytes::{Buf, Bytes};
use http::{Method, Response};
use http_body::Body;
use tokio::io::AsyncWrite;

use super::body::{BoxError, RequestBody};
use super::client::SendError;
use super::conn::{Conn, MAX_READ, READ_CHUNK};
use super::h1::{self, ChunkedDecoder, Decoded, ResponseFraming};

pub use body::UpstreamBody;

/// One exchange on one connection: the request still being written and
/// the response being read.
pub(super) struct Wire {
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
    /// When the last piece of the client's body went out to the server.
    last_body_write: Option<Instant>,
    received_any: bool,
    keep_alive: bool,
    state: BodyState,
    /// The body's first piece (or its end, or its failure) has been seen:
    /// the head waits for it, so a body that fails from its first bytes (a
    /// bad chunk size, a client gone) sends nothing at all upstream.
    body_started: bool,
    /// A small answer's head that came without any of its body, held until
    /// the body's first bytes ([`HOLD_HEAD_UP_TO`]).
    held_head: Option<h1::ResponseHead>,
}

/// An answer of at most this many bytes (by `Content-Length`) whose head
/// arrives without any of its body is handed on only with the body's
/// first bytes, within the same `response_timeout`. Handed on alone,
/// hyper wrote the head to the client by itself and the body in a second
/// write (`split-write` `h1-1k`: 1.45 writes per request, nginx 1.00;
/// nginx's `postpone_output` holds output under 1,460 bytes the same way).
const HOLD_HEAD_UP_TO: u64 = 16 * 1024;

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
    pub(super) fn new(conn: Conn, body: RequestBody, chunked: bool) -> Self {
        let body = (!body.is_end_stream()).then_some(body);
        Wire {
            conn,
            head_written: 0,
            body,
            chunked,
            out: Default::default(),
            write_error: None,
            last_body_write: None,
            received_any: false,
            keep_alive: false,
            state: BodyState::Done,
            body_started: false,
            held_head: None,
        }
    }

    fn request_written(&self) -> bool {
        self.head_written == self.conn.head_buf.len() && self.body.is_none() && self.out.iter().all(Bytes::is_empty)
    }

    /// Write as much of the request as can go now.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WriteError>> {
        if !self.body_started {
            ready!(self.poll_body(cx))?;
            self.body_started = true;
        }
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
                self.last_body_write = Some(Instant::now());
                let mut left = n;
                for b in &mut self.out {
                    let k = left.min(b.len());
                    b.advance(k);
                    left -= k;
                }
                continue;
            }
            if self.body.is_none() {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_body(cx))?;
        }
    }

    /// Stage the body's next piece in `out` (or the end of a chunked body).
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WriteError>> {
        loop {
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
            return Poll::Ready(Ok(()));
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
    pub(super) fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        method: &Method,
    ) -> Poll<Result<h1::ResponseHead, SendError>> {
        self.pump_request(cx)?;
        loop {
            if let Some(head) = self.held_head.take() {
                if !self.conn.read_buf.is_empty() {
                    return Poll::Ready(Ok(head));
                }
                self.held_head = Some(head);
            } else if !self.conn.read_buf.is_empty() {
                self.received_any = true;
                match h1::parse_response_head(&mut self.conn.read_buf, method) {
                    // 100 Continue, 103 Early Hints: not passed on.
                    Ok(Some(head)) if head.status.is_informational() && head.status.as_u16() != 101 => continue,
                    Ok(Some(head)) => match head.framing {
                        ResponseFraming::Length(n)
                            if n > 0 && n <= HOLD_HEAD_UP_TO && self.conn.read_buf.is_empty() =>
                        {
                            self.held_head = Some(head);
                        }
                        _ => return Poll::Ready(Ok(head)),
                    },
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(SendError::Protocol(e))),
                }
            }
            let read = ready!(self.conn.poll_read_more(cx, READ_CHUNK));
            if matches!(read, Ok(0) | Err(_)) {
                if let Some(head) = self.held_head.take() {
                    // The body's read meets the same end or failure, as it
                    // did before heads were held.
                    return Poll::Ready(Ok(head));
                }
            }
            match read {
                Ok(0) => {
                    let e = self.write_error.take().unwrap_or_else(|| io::ErrorKind::UnexpectedEof.into());
                    return Poll::Ready(Err(SendError::Io(e)));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(SendError::Io(e))),
            }
        }
    }

    /// When the last piece of the client's body went out, if any did.
    pub(super) fn last_body_write(&self) -> Option<Instant> {
        self.last_body_write
    }

    /// Everything the client sent so far is out, and its body is not done:
    /// the exchange is waiting for the client, not for the server.
    pub(super) fn waiting_for_client_body(&self) -> bool {
        self.write_error.is_none()
            && self.head_written == self.conn.head_buf.len()
            && self.body.is_some()
            && self.out.iter().all(Bytes::is_empty)
    }

    /// Whether any response byte arrived (a request is replayed on a
    /// fresh connection only if none did).
    pub(super) fn received_any(&self) -> bool {
        self.received_any
    }

    /// The response `head` introduces, its body read from this exchange.
    /// The response, whose body fails if the server then sends nothing
    /// for `read_timeout` while it is waited for (nginx's
    /// `proxy_read_timeout`).
    pub(super) fn into_response(
        mut self: Box<Self>,
        head: h1::ResponseHead,
        read_timeout: Duration,
    ) -> Response<UpstreamBody> {
        self.keep_alive = head.keep_alive;
        self.state = match head.framing {
            ResponseFraming::Empty | ResponseFraming::Length(0) => BodyState::Done,
            ResponseFraming::Length(n) => BodyState::Length(n),
            ResponseFraming::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
            ResponseFraming::UntilClose => BodyState::UntilClose,
        };
        let mut resp = Response::new(UpstreamBody::new(self, read_timeout));
        *resp.status_mut() = head.status;
        // The answer is the proxy's, in its own version (RFC 9110 6.2), an
        // HTTP/1.0 upstream's too: hyper writes the response's version.
        *resp.version_mut() = http::Version::HTTP_11;
        *resp.headers_mut() = head.headers;
        if let Some(reason) = head.reason {
            resp.extensions_mut().insert(reason);
        }
        resp
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
                    Decoded::NeedMore => decoder.read_hint(),
                },
                BodyState::UntilClose => {
                    if !buf.is_empty() {
                        return Poll::Ready(Ok(Some(buf.split().freeze())));
                    }
                    MAX_READ
                }
            };
            let read = self.conn.poll_read_more(cx, want);
            if read.is_pending() {
                self.conn.ack_now();
                return Poll::Pending;
            }
            if ready!(read)? == 0 {
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

#[cfg(test)]
mod tests;
