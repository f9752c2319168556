//! [`SendfileIo`]: the layer under hyper, on plain HTTP/1 connections,
//! that sends static file bodies with `sendfile(2)`; [`SendsFiles`], what
//! a client stream offers for it (a plain socket can; TLS cannot).
//!
//! hyper writes bytes. A static answer whose body is still the file's own
//! when it leaves the service (`service.rs`) instead hands hyper
//! placeholders, and registers in the connection's [`SendQueue`] which
//! file range each stands for (`upstream::files::sendfile`). This layer
//! looks at every write: iovecs before a placeholder go out with
//! `MSG_MORE` (so the head leaves with the file's first bytes), a
//! placeholder is sent from the file, and the count written is reported to
//! hyper, which advances its buffers by it, partial writes and `EAGAIN`
//! alike. A placeholder that is not the next registered range (or not
//! where the bytes sent so far put it), a non-vectored write while ranges
//! are pending (hyper copying bodies into one buffer would do that), or a
//! file that came up short fails the write: the connection is dropped,
//! and the placeholders' bytes are never written.
//!
//! Why: the `static-100k` row spent its difference to nginx on copying
//! 100 KiB from memory into the socket per request (benches/README.md,
//! "Custom mechanisms").

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::client_socket::ClientSocket;
use super::conn::Parkable;
use crate::body::file_sending::{is_placeholder, plan, Plan};
use crate::body::SendQueue;

/// A client stream that can send a file range itself.
pub trait SendsFiles {
    /// Whether it can: only then does a connection register file ranges.
    const SENDS_FILES: bool = false;

    /// `sendfile(2)` of `len` bytes of `file` from `offset`: how many were sent.
    fn poll_sendfile(&mut self, _: &mut Context<'_>, _: &File, _: u64, _: usize) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }

    /// A vectored write that tells the kernel more follows (`MSG_MORE`).
    fn poll_write_more(&mut self, _: &mut Context<'_>, _: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

/// TLS encrypts in user space: its bytes must pass through memory.
impl SendsFiles for super::lot::TlsClient {}

impl SendsFiles for ClientSocket {
    const SENDS_FILES: bool = true;

    fn poll_sendfile(&mut self, cx: &mut Context<'_>, file: &File, offset: u64, len: usize) -> Poll<io::Result<usize>> {
        self.poll_write_by(cx, (file.as_raw_fd(), offset, len), |socket, &mut (file, offset, len)| {
            sendfile(socket, file, offset, len)
        })
    }

    fn poll_write_more(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.poll_write_by(cx, bufs, |socket, bufs| send_more(socket, bufs))
    }
}

#[allow(unsafe_code)]
fn sendfile(socket: RawFd, file: RawFd, offset: u64, len: usize) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both descriptors are open for the call (the caller holds the
    // socket and the file); `off` is a local the kernel reads and updates.
    let n = unsafe { libc::sendfile(socket, file, &mut off, len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    crate::metrics::static_sendfile_bytes().inc_by(n as u64);
    Ok(n as usize)
}

/// `sendmsg(2)` of `bufs` with `MSG_MORE`: the kernel keeps a partial
/// segment for what follows (the file's first bytes).
#[allow(unsafe_code)]
fn send_more(socket: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix; the slices
    // stay borrowed for the call, which only reads them; the header is a
    // local, zeroed before its two fields are set.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
        libc::sendmsg(socket, &msg, libc::MSG_MORE | libc::MSG_NOSIGNAL)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// See the module documentation. With no queue (TLS), it only refuses
/// placeholders, which nothing registered then.
pub struct SendfileIo<I> {
    inner: I,
    queue: Option<Arc<SendQueue>>,
}

impl<I> SendfileIo<I> {
    pub fn new(inner: I, queue: Option<Arc<SendQueue>>) -> Self {
        SendfileIo { inner, queue }
    }

    /// The stream back, unless file ranges were registered and not sent:
    /// then the connection's answers are out of step, and it must close.
    pub fn into_inner(self) -> Option<I> {
        match &self.queue {
            Some(q) if !q.is_empty() => {
                tracing::warn!("file ranges left unsent on a connection; closing it");
                None
            }
            _ => Some(self.inner),
        }
    }
}

fn refused(why: &'static str) -> io::Error {
    tracing::warn!(why, "sendfile placeholder out of step; closing the connection");
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl<I: AsyncWrite + SendsFiles + Unpin> AsyncWrite for SendfileIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if is_placeholder(buf) {
            return Poll::Ready(Err(refused("a placeholder in a flat write")));
        }
        if this.queue.as_ref().is_some_and(|q| !q.is_empty()) {
            return Poll::Ready(Err(refused("a flat write while file ranges are pending")));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(queue) = &this.queue else {
            return match plan(bufs, None) {
                Plan::Pass => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
                _ => Poll::Ready(Err(refused("a placeholder on a connection that sends no files"))),
            };
        };
        match queue.plan(bufs) {
            Plan::Pass => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            Plan::Prefix { count } => this.inner.poll_write_more(cx, &bufs[..count]),
            Plan::Send { file, offset, len } => match ready!(this.inner.poll_sendfile(cx, &file, offset, len)) {
                // The file shrank under us: the answer cannot be completed.
                Ok(0) => Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while sent"))),
                Ok(n) => {
                    queue.sent(n);
                    Poll::Ready(Ok(n))
                }
                Err(e) => Poll::Ready(Err(e)),
            },
            Plan::Refuse(why) => Poll::Ready(Err(refused(why))),
        }
    }

    /// Always: hyper then keeps body buffers as they are (its `Queue`
    /// strategy) instead of copying them into one.
    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for SendfileIo<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: Parkable> Parkable for SendfileIo<I> {
    const PARKS: bool = I::PARKS;
    const LEAVES_TASK: bool = I::LEAVES_TASK;
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_read_ready(cx)
    }
    fn cork(&self) {
        self.inner.cork();
    }
    const PEEKS: bool = I::PEEKS;
    fn poll_peek_closed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        self.inner.poll_peek_closed(cx)
    }
}

#[cfg(test)]
mod tests;
