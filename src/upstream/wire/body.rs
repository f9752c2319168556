//! The response body of one upstream exchange, as the proxy sees it:
//! frames sliced from the connection's read buffer (the request still
//! being written meanwhile), the server's in-flight slot held until the
//! body ends, `response_timeout` as a stall timer armed only when a read
//! must wait, and the connection handed back to the server's idle stack
//! when the body ends cleanly (closed when it is dropped early: that is how
//! a client that left cancels its upstream request).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::{BodyState, Wire};
use crate::upstream::body::BoxError;
use crate::upstream::conn::Conn;
use crate::upstream::server::InFlightGuard;

/// A response body read from an upstream connection. When it ends cleanly
/// the connection goes back to the server's idle stack; dropped early, the
/// connection is closed (which is how a client that left cancels its
/// upstream request).
pub struct UpstreamBody {
    /// The exchange, until the body ends (the tests look at its socket).
    pub(super) wire: Option<Box<Wire>>,
    /// The server's in-flight slot, held until the body ends.
    guard: Option<InFlightGuard>,
    /// How long the server may send nothing while the body is waited for.
    read_timeout: Duration,
    /// Armed at the first wait only (most bodies arrive with their head and
    /// never wait), and moved on when a wait follows data.
    stall: Option<Pin<Box<Sleep>>>,
    /// Data came since the stall timer was last set.
    moved: bool,
}

impl UpstreamBody {
    /// The body `wire` reads; no in-flight slot until [`Self::attach`].
    pub(super) fn new(wire: Box<Wire>, read_timeout: Duration) -> Self {
        UpstreamBody { wire: Some(wire), guard: None, read_timeout, stall: None, moved: false }
    }
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

    /// Called when the server has nothing for us: whether it has been
    /// silent for `read_timeout` since it last sent data while we waited.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let moved = std::mem::take(&mut self.moved);
        let stall = match &mut self.stall {
            Some(stall) => {
                if moved {
                    stall.as_mut().reset(Instant::now() + self.read_timeout);
                }
                stall
            }
            None => self.stall.insert(Box::pin(tokio::time::sleep(self.read_timeout))),
        };
        stall.as_mut().poll(cx).is_ready()
    }

    fn finish(&mut self) {
        let Some(wire) = self.wire.take() else { return };
        match self.guard.take() {
            Some(guard) if wire.reusable() => {
                let Wire { mut conn, .. } = *wire;
                conn.shed_large_buffers();
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
                this.moved = true;
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
            Poll::Pending if this.stalled(cx) => {
                this.wire = None;
                this.guard = None;
                Poll::Ready(Some(Err(Box::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "upstream sent nothing for response_timeout in the middle of its answer",
                )))))
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
