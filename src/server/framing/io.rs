//! [`FramingIo`]: an HTTP/1 client stream whose reads pass through its
//! connection's [`RequestFraming`] guard before hyper sees them, and whose
//! flush makes the departed-client check once a request's last byte has
//! passed (the guard is what knows where a request ends).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::RequestFraming;
use crate::server::activity::Departure;

pin_project_lite::pin_project! {
    /// A stream whose reads are judged by `framing`, except the first
    /// `judged` bytes: those it judged before, under an earlier hyper
    /// connection (hyper's unparsed read buffer, handed back at parking).
    pub struct FramingIo<I> {
        #[pin]
        inner: I,
        framing: RequestFraming,
        judged: usize,
    }
}

impl<I> FramingIo<I> {
    pub fn new(inner: I, framing: RequestFraming, judged: usize) -> Self {
        FramingIo { inner, framing, judged }
    }

    /// The stream and the guard, to go on where they are.
    pub fn into_parts(self) -> (I, RequestFraming) {
        (self.inner, self.framing)
    }
}

impl<I: AsyncRead> AsyncRead for FramingIo<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.framing.refused() {
            // The rest of the refusal, then end of stream.
            buf.put_slice(this.framing.take_tail(buf.remaining()));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match this.framing.read_limit().filter(|&room| *this.judged == 0 && room < buf.remaining()) {
            // Near the head limit only (see `read_limit`): the rare path.
            Some(room) => {
                let mut limited = vec![0u8; room];
                let mut limited = ReadBuf::new(&mut limited);
                ready!(this.inner.poll_read(cx, &mut limited))?;
                buf.put_slice(limited.filled());
            }
            None => ready!(this.inner.poll_read(cx, buf))?,
        }
        let read = &mut buf.filled_mut()[before..];
        let skip = read.len().min(*this.judged);
        *this.judged -= skip;
        let keep = skip + this.framing.feed(&mut read[skip..]);
        if this.framing.refused() {
            // hyper gets the refused head up to its altered last byte, and
            // the refusal's tail in the room left (the rest at the next read).
            buf.set_filled(before + keep);
            buf.put_slice(this.framing.take_tail(buf.remaining()));
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Departure> AsyncWrite for FramingIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper flushes its stream on every pass of its connection: a request
    /// in progress whose last byte has arrived gets the departed-client
    /// check here (`activity/departure.rs`).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        if this.framing.between_requests() {
            if let Some(e) = this.inner.as_mut().departed(cx) {
                return Poll::Ready(Err(e));
            }
        }
        this.inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
