//! An open connection to an upstream server with the buffers it keeps
//! from one request to the next: reading into them, acknowledging what
//! arrived, shedding what a large exchange grew before it parks, and
//! checking a parked one is still usable.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::net::TcpStream;

/// Read buffer growth: enough for a typical head plus a small body in one
/// read; large bodies read up to [`MAX_READ`] at a time. 128 KiB, not 64:
/// a 100 KiB answer then comes in one read after its head (6.3 syscalls
/// per proxied request instead of 7.3, and 3 reads instead of 6 for its
/// chunked form; `benches/README.md`), while a body in flight still holds
/// at most one such buffer beyond what the client has not taken.
pub(super) const READ_CHUNK: usize = 8 * 1024;
pub(super) const MAX_READ: usize = 128 * 1024;
/// A parked connection keeps buffers of at most this much each.
pub(super) const MAX_IDLE_BUFFER: usize = 16 * 1024;

/// An open connection to a server and its buffers (both reused from one
/// request to the next).
#[derive(Debug)]
pub struct Conn {
    pub(super) stream: TcpStream,
    pub(super) read_buf: BytesMut,
    /// The largest allocation `read_buf` was given. Its `capacity()` only
    /// counts the unread tail: body frames split off the front still share
    /// the allocation, which the parked connection keeps once they are sent.
    read_alloc: usize,
    /// The request head being written, encoded by the client.
    pub(super) head_buf: Vec<u8>,
    /// The owning client's `max_idle_per_server`, for parking it.
    pub(super) max_idle: usize,
    /// Data arrived since [`Conn::ack_now`] last acknowledged.
    unacked: bool,
}

impl Conn {
    pub(super) fn new(stream: TcpStream) -> Self {
        Conn { stream, read_buf: BytesMut::new(), read_alloc: 0, head_buf: Vec::new(), max_idle: 0, unacked: false }
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
    pub(super) fn poll_read_more(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let want = want.clamp(READ_CHUNK, MAX_READ);
        if self.read_buf.capacity() - self.read_buf.len() < want {
            self.read_buf.reserve(want);
            self.read_alloc = self.read_alloc.max(self.read_buf.capacity());
        }
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read_buf);
        if let Poll::Ready(Ok(n)) = read {
            self.unacked |= n > 0;
        }
        read
    }

    /// Acknowledge what has arrived now, not at the delayed-ACK timer. Only
    /// once per read that brought data: a wait that follows no new data
    /// (tokio's budget, say) has no ACK pending.
    pub(super) fn ack_now(&mut self) {
        if !std::mem::take(&mut self.unacked) {
            return;
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let _ = socket2::SockRef::from(&self.stream).set_quickack(true);
    }

    /// Before parking: let go of buffers a large exchange grew (a big body
    /// read, a long request head), so an idle connection holds at most
    /// [`MAX_IDLE_BUFFER`] of each. Small ones are kept for the next request.
    pub(super) fn shed_large_buffers(&mut self) {
        if self.read_alloc > MAX_IDLE_BUFFER {
            self.read_buf = BytesMut::new();
            self.read_alloc = 0;
        }
        if self.head_buf.capacity() > MAX_IDLE_BUFFER {
            self.head_buf = Vec::new();
        }
    }
}
