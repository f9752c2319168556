//! What a client stream must offer to be parked: waiting for the client's
//! next bytes without reading them, whether it may leave its task for the
//! parking lot, and corking the socket under it; and, where it can, seeing
//! without reading whether the client left. Every client stream sits on a
//! [`ClientSocket`], which does the work; plain TCP is the socket itself,
//! TLS a session over it.

use std::io;
use std::task::{Context, Poll};

use super::client_socket::ClientSocket;

/// A client stream that can wait for the client's next bytes without
/// reading them, so an idle connection can be parked without hyper.
pub trait Parkable {
    /// Whether parking is supported for this stream.
    const PARKS: bool;
    /// Whether it can rest outside its task, in the parking lot.
    const LEAVES_TASK: bool;
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Set TCP_CORK on the socket (see `Activity::cork_next_write`).
    fn cork(&self);
    /// Whether [`Parkable::poll_peek_closed`] can tell that the client
    /// left (see `activity/departure.rs`).
    const PEEKS: bool = false;
    /// Whether the client closed its side, seen without taking anything:
    /// `true` at its end of stream, `false` when bytes wait; pending until
    /// one or the other.
    fn poll_peek_closed(&mut self, _: &mut Context<'_>) -> Poll<io::Result<bool>> {
        Poll::Ready(Ok(false))
    }
}

/// A plain connection: waiting for readiness registers its socket.
impl Parkable for ClientSocket {
    const PARKS: bool = true;
    const LEAVES_TASK: bool = true;
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ClientSocket::poll_read_ready(self, cx)
    }
    fn cork(&self) {
        ClientSocket::cork(self)
    }
    const PEEKS: bool = true;
    fn poll_peek_closed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        ClientSocket::poll_peek_closed(self, cx)
    }
}

/// A TLS connection waits on its socket too. Parking needs hyper's last read
/// to have come back empty since the last answer, and tokio-rustls only
/// says so once rustls holds no plaintext (an incomplete record waits for
/// more bytes from the socket, which is what readiness reports); bytes hyper
/// did get are replayed. rustls' own state stays with the socket, in the
/// parking lot too: only the socket under it leaves tokio. It does not
/// peek: a socket's bytes are records, and only rustls can tell a
/// `close_notify` from data.
impl Parkable for super::lot::TlsClient {
    const PARKS: bool = true;
    const LEAVES_TASK: bool = true;
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().0.poll_read_ready(cx)
    }
    fn cork(&self) {
        self.get_ref().0.cork()
    }
}
