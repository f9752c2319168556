//! What a client connection is doing, tracked cheaply: whether bytes moved
//! lately, whether a request is in progress, whether a write is blocked and
//! whether a request is half-read. The idle timeout and the decision to
//! park a resting HTTP/1.1 connection read it; [`ActivityIo`] feeds it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conn::Parkable;

/// Whether a connection has moved bytes lately, and whether a request is
/// being handled on it; together they say whether it is idle. Reads and
/// writes only set a flag (no clock read on the hot path); the idle timer
/// samples and clears it a few times per timeout period.
#[derive(Debug, Default)]
pub struct Activity {
    moved: AtomicBool,
    /// The same, for the parking watcher (each watcher clears its own).
    moved_since_park_check: AtomicBool,
    requests: AtomicUsize,
    /// The last write to the client could not complete: hyper still holds
    /// bytes to send.
    write_blocked: AtomicBool,
    /// Bytes arrived since the last response ended (a request may be
    /// half-read).
    read_since_response: AtomicBool,
    /// The answer about to be written is the connection's last and is all
    /// in memory: cork the socket before writing it.
    cork: AtomicBool,
    /// A request began since [`Activity::take_served`] last looked: the
    /// connection did real work, so its idle time starts over. Bytes alone
    /// do not count: a TLS client trickling one byte of a record per idle
    /// period would otherwise keep its connection forever.
    served: AtomicBool,
}

impl Activity {
    fn touch(&self) {
        self.moved.store(true, Ordering::Relaxed);
        self.moved_since_park_check.store(true, Ordering::Relaxed);
    }

    /// Nothing is in progress on the connection: no request being read or
    /// answered, nothing left to send.
    fn at_rest(&self) -> bool {
        self.requests.load(Ordering::Relaxed) == 0
            && !self.write_blocked.load(Ordering::Relaxed)
            && !self.read_since_response.load(Ordering::Relaxed)
    }

    /// Resolves once the connection has been at rest, moving no bytes, for
    /// `quiet` (at most twice that after its last activity).
    pub(super) async fn at_rest_for(&self, quiet: Duration) {
        loop {
            self.moved_since_park_check.store(false, Ordering::Relaxed);
            tokio::time::sleep(quiet).await;
            if !self.moved_since_park_check.load(Ordering::Relaxed) && self.at_rest() {
                return;
            }
        }
    }

    /// The next answer closes the connection and will be written at once:
    /// hold its last partial segment so the FIN leaves with it (one packet
    /// less per connection, for the client too). The socket is shut down
    /// right after, which sends everything; TCP_CORK's own 200 ms ceiling
    /// bounds any other case.
    pub fn cork_next_write(&self) {
        self.cork.store(true, Ordering::Relaxed);
    }

    /// Mark a request as in progress until the guard drops.
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.served.store(true, Ordering::Relaxed);
        RequestGuard(Arc::clone(self))
    }

    /// Whether a request began since the last call.
    pub fn take_served(&self) -> bool {
        self.served.swap(false, Ordering::Relaxed)
    }

    /// Resolves once the connection has been idle for about `limit`
    /// (within a quarter of it).
    pub(super) async fn idle_for(&self, limit: Duration) {
        let tick = (limit / 4).max(Duration::from_millis(10));
        let mut idle = Duration::ZERO;
        loop {
            tokio::time::sleep(tick).await;
            let moved = self.moved.swap(false, Ordering::Relaxed);
            if moved || self.requests.load(Ordering::Relaxed) > 0 {
                idle = Duration::ZERO;
            } else {
                idle += tick;
                if idle >= limit {
                    return;
                }
            }
        }
    }
}

impl Activity {
    fn cork_if_asked<I: Parkable>(&self, io: &I) {
        // A plain load first: the hot path pays no read-modify-write.
        if self.cork.load(Ordering::Relaxed) && self.cork.swap(false, Ordering::Relaxed) {
            io.cork();
        }
    }
}

pub struct RequestGuard(Arc<Activity>);

impl RequestGuard {
    pub fn activity(&self) -> &Activity {
        &self.0
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.read_since_response.store(false, Ordering::Relaxed);
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// An IO stream that records activity on every successful read or
    /// write, and first hands out `prefix` (bytes already read from `inner`).
    pub struct ActivityIo<I> {
        #[pin]
        inner: I,
        activity: Arc<Activity>,
        prefix: Bytes,
    }
}

impl<I> ActivityIo<I> {
    pub fn new(inner: I, activity: Arc<Activity>, prefix: Bytes) -> Self {
        activity.touch();
        if !prefix.is_empty() {
            activity.read_since_response.store(true, Ordering::Relaxed);
        }
        ActivityIo { inner, activity, prefix }
    }

    pub(super) fn into_parts(self) -> (I, Bytes) {
        (self.inner, self.prefix)
    }
}

impl<I: AsyncRead> AsyncRead for ActivityIo<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            if this.prefix.is_empty() {
                // An empty slice still owns the buffer it was cut from.
                *this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
            this.activity.read_since_response.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl Activity {
    fn wrote<T>(&self, r: &Poll<io::Result<T>>) {
        let blocked = r.is_pending();
        if self.write_blocked.load(Ordering::Relaxed) != blocked {
            self.write_blocked.store(blocked, Ordering::Relaxed);
        }
    }
}

impl<I: AsyncWrite + Parkable> ActivityIo<I> {
    /// A write to the client, with the bookkeeping around it: the cork an
    /// answer asked for, whether the write blocked, whether bytes moved.
    fn write_with(
        self: Pin<&mut Self>,
        write: impl FnOnce(Pin<&mut I>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        this.activity.cork_if_asked(&*this.inner);
        let r = write(this.inner);
        this.activity.wrote(&r);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }
}

impl<I: AsyncWrite + Parkable> AsyncWrite for ActivityIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.write_with(|io| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write_with(|io| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let r = this.inner.poll_flush(cx);
        this.activity.wrote(&r);
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
