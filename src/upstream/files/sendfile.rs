//! A static file's body sent by `sendfile(2)` instead of being copied
//! from memory into the socket: the body's side. hyper's HTTP/1 write path
//! takes bytes, not a descriptor, so a body sent this way hands hyper
//! *placeholders*, slices of one static zero buffer ([`ZERO`], never
//! allocated or written), and registers in its connection's
//! [`SendQueue`] which file range each one stands for. The connection's
//! IO layer (`server/sendfile.rs`), under hyper, writes what precedes a
//! placeholder as usual and sends the placeholder's range from the file.
//!
//! hyper keeps a body's buffers as they are (its `Queue` write strategy:
//! pointers to them in a `writev`), so a placeholder reaches the IO layer
//! at its own address, advanced by exactly what the layer reported
//! written. [`plan`] checks that, for every write, against the queue's
//! front: a placeholder that is not the next registered range, or not
//! where the bytes already sent put it, refuses the write, and the
//! connection fails. The zero bytes themselves are never written.
//!
//! Only the server decides to send a body this way ([`StaticBody::send_through`]),
//! on a plain HTTP/1 connection whose IO layer does the sending, and only
//! while the body is still the file's own: middleware that reads a body
//! (compression, the cache) wraps it first, and then it gives real bytes.

use std::collections::VecDeque;
use std::fs::File;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::super::body::BoxError;
use super::stream::FileBody;

/// The most one placeholder stands for: a file's body is cut into
/// placeholders of at most this many bytes.
pub const PLACEHOLDER_MAX: usize = 1 << 20;

/// The placeholders' bytes: read by nobody (in `.bss`, so no memory is
/// touched), recognised by their address.
static ZERO: [u8; PLACEHOLDER_MAX] = [0; PLACEHOLDER_MAX];

/// Whether `buf` is (part of) a placeholder.
pub fn is_placeholder(buf: &[u8]) -> bool {
    let (start, at) = (ZERO.as_ptr() as usize, buf.as_ptr() as usize);
    !buf.is_empty() && at >= start && at < start + PLACEHOLDER_MAX
}

/// Where in [`ZERO`] a placeholder slice starts: how much of its range
/// was already sent (hyper advanced the slice by that much).
fn placeholder_offset(buf: &[u8]) -> usize {
    buf.as_ptr() as usize - ZERO.as_ptr() as usize
}

/// A file range a placeholder stands for.
#[derive(Debug)]
pub struct Piece {
    file: Arc<File>,
    offset: u64,
    len: usize,
    /// How much of it was sent.
    done: usize,
}

/// A connection's placeholders not yet sent, in the order hyper writes
/// them. Shared by the connection's service (whose bodies register) and
/// its IO layer (which sends them).
#[derive(Debug, Default)]
pub struct SendQueue {
    /// Set by the connection's serving once its IO layer sends placeholders.
    armed: AtomicBool,
    pieces: Mutex<VecDeque<Piece>>,
}

/// What a write of some iovecs must do.
#[derive(Debug)]
pub enum Plan {
    /// No placeholder among them: write them all.
    Pass,
    /// Write the first `count` (the next one is a placeholder): `MSG_MORE`.
    Prefix { count: usize },
    /// Send `len` bytes of `file` from `offset`, and report what was sent
    /// to [`SendQueue::sent`].
    Send { file: Arc<File>, offset: u64, len: usize },
    /// The first is a placeholder that does not match the queue: the
    /// connection must fail.
    Refuse(&'static str),
}

impl SendQueue {
    pub fn arm(&self) {
        self.armed.store(true, Ordering::Relaxed);
    }

    /// Whether bodies may be sent through this queue.
    pub fn armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    fn pieces(&self) -> MutexGuard<'_, VecDeque<Piece>> {
        // A panic while held leaves a consistent queue (pushes and pops only).
        self.pieces.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, piece: Piece) {
        self.pieces().push_back(piece);
    }

    /// Whether every registered range was sent.
    pub fn is_empty(&self) -> bool {
        self.pieces().is_empty()
    }

    /// What a write of `bufs` must do.
    pub fn plan(&self, bufs: &[IoSlice<'_>]) -> Plan {
        plan(bufs, self.pieces().front())
    }

    /// `n` bytes of the front range were sent (`n` at most what
    /// [`Plan::Send`] asked for).
    pub fn sent(&self, n: usize) {
        let mut pieces = self.pieces();
        if let Some(front) = pieces.front_mut() {
            front.done = (front.done + n).min(front.len);
            if front.done == front.len {
                pieces.pop_front();
            }
        }
    }
}

/// What a write of `bufs` must do, `front` being the next range to send.
pub fn plan(bufs: &[IoSlice<'_>], front: Option<&Piece>) -> Plan {
    let Some(at) = bufs.iter().position(|b| is_placeholder(b)) else { return Plan::Pass };
    if at > 0 {
        return Plan::Prefix { count: at };
    }
    let Some(piece) = front else { return Plan::Refuse("a placeholder with no file range registered") };
    let buf = &bufs[0];
    if placeholder_offset(buf) != piece.done || buf.len() != piece.len - piece.done {
        return Plan::Refuse("a placeholder that is not the next registered file range");
    }
    Plan::Send { file: Arc::clone(&piece.file), offset: piece.offset + piece.done as u64, len: buf.len() }
}

/// A file range an answer sends, whole.
#[derive(Debug)]
pub(super) struct Sendable {
    pub file: Arc<File>,
    pub offset: u64,
    pub len: u64,
}

/// A static file's body: its bytes (from memory, or read from the file),
/// or, once sent through a [`SendQueue`], placeholders for its range.
pub struct StaticBody {
    data: Data,
    /// The same bytes as a file range, where the answer has the file open.
    sendable: Option<Sendable>,
    through: Option<Arc<SendQueue>>,
}

enum Data {
    Memory(Option<Bytes>),
    Read(FileBody),
}

impl StaticBody {
    pub(super) fn memory(bytes: Bytes, sendable: Option<Sendable>) -> Self {
        StaticBody { data: Data::Memory(Some(bytes).filter(|b| !b.is_empty())), sendable, through: None }
    }

    /// `len` bytes of `file` from `offset`, read as the client takes them
    /// (see `stream.rs`), or sent by `sendfile`.
    pub fn file(file: Arc<File>, offset: u64, len: u64) -> Self {
        let sendable = Sendable { file: Arc::clone(&file), offset, len };
        StaticBody { data: Data::Read(FileBody::new(file, offset, len)), sendable: Some(sendable), through: None }
    }

    /// From now on, answer with placeholders registered in `queue`, if the
    /// body has its file range and has not begun. Whether it will.
    pub fn send_through(&mut self, queue: &Arc<SendQueue>) -> bool {
        let untouched = match &self.data {
            Data::Memory(b) => b.is_some(),
            Data::Read(r) => r.untouched(),
        };
        if !untouched || self.sendable.as_ref().is_none_or(|s| s.len == 0) {
            return false;
        }
        self.through = Some(Arc::clone(queue));
        self.data = Data::Memory(None);
        true
    }

    /// Whether the rest of the body is in memory.
    pub fn in_memory_to_end(&self) -> bool {
        self.through.is_none() && matches!(self.data, Data::Memory(_))
    }
}

impl Body for StaticBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let (Some(queue), Some(range)) = (&this.through, &mut this.sendable) {
            if range.len == 0 {
                return Poll::Ready(None);
            }
            let len = range.len.min(PLACEHOLDER_MAX as u64) as usize;
            queue.push(Piece { file: Arc::clone(&range.file), offset: range.offset, len, done: 0 });
            range.offset += len as u64;
            range.len -= len as u64;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZERO[..len])))));
        }
        match &mut this.data {
            Data::Memory(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Data::Read(r) => Pin::new(r).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match (&self.through, &self.sendable, &self.data) {
            (Some(_), Some(range), _) => range.len == 0,
            (_, _, Data::Memory(b)) => b.is_none(),
            (_, _, Data::Read(r)) => r.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.through, &self.sendable, &self.data) {
            (Some(_), Some(range), _) => SizeHint::with_exact(range.len),
            (_, _, Data::Memory(b)) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            (_, _, Data::Read(r)) => r.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests;
