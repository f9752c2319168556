//! Write coalescing for HTTP/2 connections.
//!
//! h2 hands every DATA frame of 256 bytes or more to the stream as its own
//! write and flushes before it takes the next one. Over TLS each flush became
//! a record and a `writev`, so a connection paid a syscall and a record per
//! answer even when many streams answered at once. [`CoalescingIo`] collects
//! the writes and lets a flush in the middle of h2's pass go by: it writes
//! when h2 flushes again after having read everything the client sent (the
//! end of its next pass, which it asks for by waking the connection), or
//! when the buffer is full, or on shutdown. The connection's driver polls
//! again at once when woken, so answers leave in the same turn of the task.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Past this many buffered bytes, writes go out before more are taken.
const LIMIT: usize = 64 * 1024;

pin_project_lite::pin_project! {
    /// A stream whose writes are buffered until flushed.
    pub struct CoalescingIo<I> {
        #[pin]
        inner: I,
        buf: Vec<u8>,
        // How much of `buf` the inner stream has taken.
        sent: usize,
        // A flush was let go by; the task was woken to come back.
        deferred: bool,
        // Since then a read found nothing more to read: h2 is at the end of
        // a pass, and its next flush writes.
        drained: bool,
    }
}

impl<I> CoalescingIo<I> {
    pub fn new(inner: I) -> Self {
        CoalescingIo { inner, buf: Vec::new(), sent: 0, deferred: false, drained: false }
    }
}

impl<I: AsyncWrite> CoalescingIo<I> {
    /// Write the whole buffer to the inner stream.
    fn poll_send(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        while *this.sent < this.buf.len() {
            let n = ready!(this.inner.as_mut().poll_write(cx, &this.buf[*this.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *this.sent += n;
        }
        // Given back once sent: an idle connection holds no buffer. The
        // allocator's thread cache keeps blocks of this size at hand, so
        // the next burst's is cheap.
        *this.buf = Vec::new();
        *this.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead> AsyncRead for CoalescingIo<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let read = this.inner.poll_read(cx, buf);
        if *this.deferred && read.is_pending() {
            *this.drained = true;
        }
        read
    }
}

impl<I: AsyncWrite> AsyncWrite for CoalescingIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if self.buf.len() + len > LIMIT {
            ready!(self.as_mut().poll_send(cx))?;
            if len >= LIMIT {
                // Large enough to go out as it is, without a copy.
                return self.project().inner.poll_write_vectored(cx, bufs);
            }
        }
        let this = self.project();
        if this.buf.capacity() == 0 {
            // Room for a whole burst at once: growing by doubling copied the
            // buffer up to seven times per burst.
            this.buf.reserve_exact(LIMIT);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.as_mut().project();
        if !this.buf.is_empty() && !*this.drained {
            if !*this.deferred {
                *this.deferred = true;
                cx.waker().wake_by_ref();
            }
            return Poll::Ready(Ok(()));
        }
        ready!(self.as_mut().poll_send(cx))?;
        let this = self.project();
        (*this.deferred, *this.drained) = (false, false);
        this.inner.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_send(cx))?;
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;

    /// A client side that has nothing to read and records each write.
    #[derive(Default)]
    struct Wire(Vec<Vec<u8>>);

    impl AsyncRead for Wire {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Wire {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
            self.0.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    struct Wakes(AtomicUsize);
    impl futures_util::task::ArcWake for Wakes {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn flushes_within_a_pass_wait_for_its_end_then_leave_together() {
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = futures_util::task::waker(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let mut io = CoalescingIo::new(Wire::default());
        let mut io = Pin::new(&mut io);
        for frame in [&b"head"[..], b"-a", b"-b"] {
            assert!(matches!(io.as_mut().poll_write(&mut cx, frame), Poll::Ready(Ok(_))));
            assert!(matches!(io.as_mut().poll_flush(&mut cx), Poll::Ready(Ok(()))));
        }
        assert!(io.inner.0.is_empty(), "nothing goes out in the middle of a pass");
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "the task is asked back once");
        // The next pass: reading finds nothing, then h2 flushes.
        let mut space = [0u8; 16];
        assert!(io.as_mut().poll_read(&mut cx, &mut ReadBuf::new(&mut space)).is_pending());
        assert!(matches!(io.as_mut().poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(io.inner.0, vec![b"head-a-b".to_vec()]);
        // And the next write waits again.
        assert!(matches!(io.as_mut().poll_write(&mut cx, b"more"), Poll::Ready(Ok(4))));
        assert!(matches!(io.as_mut().poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(io.inner.0.len(), 1);
    }

    #[tokio::test]
    async fn a_full_buffer_goes_out_first_large_writes_pass_through_and_shutdown_sends_the_rest() {
        let mut io = CoalescingIo::new(Wire::default());
        io.write_all(&[1u8; LIMIT - 10]).await.unwrap();
        io.write_all(&[2u8; 20]).await.unwrap();
        assert_eq!(io.inner.0.len(), 1, "the full buffer went out before the write that overflowed it");
        io.write_all(&[3u8; LIMIT]).await.unwrap();
        io.write_all(b"tail").await.unwrap();
        io.flush().await.unwrap();
        io.shutdown().await.unwrap();
        let sizes: Vec<usize> = io.inner.0.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![LIMIT - 10, 20, LIMIT, 4]);
        assert!(io.inner.0[1].iter().all(|&b| b == 2) && io.inner.0[2].iter().all(|&b| b == 3));
    }

    #[tokio::test]
    async fn a_burst_s_buffer_is_given_back_once_sent() {
        let mut io = CoalescingIo::new(Wire::default());
        io.write_all(b"small").await.unwrap();
        assert_eq!(io.buf.capacity(), LIMIT, "a burst's buffer is taken whole, never grown");
        io.write_all(&[7u8; 40 * 1024]).await.unwrap();
        assert_eq!(io.buf.capacity(), LIMIT);
        io.shutdown().await.unwrap();
        assert_eq!(io.buf.capacity(), 0, "an idle connection keeps no burst buffer");
    }
}
