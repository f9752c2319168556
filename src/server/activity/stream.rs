//! [`ActivityIo`]: the client stream wrapped so that every read and write
//! records what it did in the connection's [`Activity`], and that makes
//! the departed-client check of a plain connection (`departure.rs`).

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Activity, Departure};
use crate::server::conn::Parkable;

impl Activity {
    fn cork_if_asked<I: Parkable>(&self, io: &I) {
        // A plain load first: the hot path pays no read-modify-write.
        if self.cork.load(Ordering::Relaxed) && self.cork.swap(false, Ordering::Relaxed) {
            io.cork();
        }
    }
}

pin_project_lite::pin_project! {
    /// An IO stream that records activity on every successful read or
    /// write, and first hands out `prefix` (bytes already read from `inner`).
    pub struct ActivityIo<I> {
        #[pin]
        pub(super) inner: I,
        activity: Arc<Activity>,
        prefix: Bytes,
    }
}

impl<I> ActivityIo<I> {
    pub fn new(inner: I, activity: Arc<Activity>, prefix: Bytes) -> Self {
        activity.touch();
        if !prefix.is_empty() {
            activity.bytes_read();
        }
        ActivityIo { inner, activity, prefix }
    }

    pub(in crate::server) fn into_parts(self) -> (I, Bytes) {
        (self.inner, self.prefix)
    }
}

impl<I: AsyncRead + Parkable> AsyncRead for ActivityIo<I> {
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
            this.activity.bytes_read();
        }
        r
    }
}

impl<I: Parkable + Unpin> Departure for ActivityIo<I> {
    fn departed(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Option<io::Error> {
        let this = self.project();
        if !I::PEEKS || !this.activity.departure_check_due(cx) {
            return None;
        }
        match this.inner.get_mut().poll_peek_closed(cx) {
            Poll::Ready(Ok(true)) => {
                Some(io::Error::new(io::ErrorKind::ConnectionAborted, "the client left before its answer"))
            }
            // Bytes wait: a pipelined request (or a body hyper has not
            // read yet). Look again later.
            Poll::Ready(Ok(false)) => {
                this.activity.check_departure_later(cx);
                None
            }
            Poll::Ready(Err(e)) => Some(e),
            // Woken when the client sends or closes.
            Poll::Pending => None,
        }
    }
}

impl Activity {
    /// Whether the write to the client blocked (see `write_blocked`). A
    /// write that starts to block starts the send-stall deadline; one that
    /// goes through again may leave the connection at rest.
    fn record_write<T>(self: &Arc<Self>, r: &Poll<io::Result<T>>) {
        let blocked = r.is_pending();
        if self.write_blocked.load(Ordering::Relaxed) != blocked {
            self.write_blocked.store(blocked, Ordering::Relaxed);
            let now = self.clock.now();
            if blocked {
                self.blocked_since.store(now, Ordering::Relaxed);
                self.deadline_from_event(now, &self.idle_limit);
            } else {
                self.rest_may_begin(now);
            }
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
        this.activity.record_write(&r);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.bytes_written();
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
        this.activity.record_write(&r);
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
