//! What a TLS handshake writes, held back (see the module documentation
//! of `client_socket` for why). During the handshake every flight leaves
//! as soon as a read finds nothing, so the handshake never waits for its
//! client with bytes held. After it, held bytes lead the next write, and
//! are sent before the connection rests or shuts down; the caller sends
//! them at once where the client waits for them (a TLS 1.2 server's final
//! flight). The buffer's memory goes once it is empty, so a serving or
//! resting connection keeps none.

use std::io;
use std::task::{ready, Context, Poll};

use tokio_util::sync::CancellationToken;

use super::ClientSocket;

impl ClientSocket {
    /// The handshake is over: writes go through again, what is still held
    /// first. A read that finds nothing no longer sends it: hyper reads
    /// once more after each request, before there is an answer.
    pub fn end_handshake(&mut self) {
        self.holding = false;
    }

    /// Hold `bytes` instead of whatever the handshake left held (its
    /// alert): for a client that spoke plain HTTP and should read why.
    pub fn hold_instead(&mut self, bytes: &[u8]) {
        self.held.clear();
        self.held.extend_from_slice(bytes);
    }

    /// Whether written bytes are waiting to be sent.
    pub fn has_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// Send what is held, by `deadline` and unless `shutdown` comes first;
    /// whether it all went (at once when nothing is held).
    pub async fn send_held(&mut self, deadline: tokio::time::Instant, shutdown: &CancellationToken) -> bool {
        if !self.has_held() {
            return true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => false,
            sent = tokio::time::timeout_at(deadline, std::future::poll_fn(|cx| self.poll_send_held(cx))) => {
                matches!(sent, Ok(Ok(())))
            }
        }
    }

    /// Send what is held.
    pub fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.has_held() {
            let n = ready!(self.socket.poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            consume(&mut self.held, n);
        }
        Poll::Ready(Ok(()))
    }

    /// Write `buf`, after what is held, in one call where the socket takes
    /// it all. Counts only the bytes of `buf`.
    pub(super) fn poll_write_after_held(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        while self.has_held() {
            let both = [io::IoSlice::new(&self.held), io::IoSlice::new(buf)];
            let n = ready!(self.socket.poll_write_vectored(cx, &both))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let held = self.held.len();
            consume(&mut self.held, n);
            if n > held {
                return Poll::Ready(Ok(n - held));
            }
        }
        self.socket.poll_write(cx, buf)
    }
}

/// `n` held bytes were sent. The buffer's memory goes once it is empty.
fn consume(held: &mut Vec<u8>, n: usize) {
    if n >= held.len() {
        *held = Vec::new();
    } else {
        held.drain(..n);
    }
}
