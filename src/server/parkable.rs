//! What a client stream must offer to be parked: waiting for the client's
//! next bytes without reading them, whether it may leave its task for the
//! parking lot, and corking the socket under it. Implemented for plain TCP
//! (a [`LazySocket`]) and for TLS over a
//! [`ClientSocket`](super::client_socket::ClientSocket).

use std::io;
use std::task::{Context, Poll};

use super::lazy_socket::LazySocket;

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
    /// Whether the socket is in tokio's poller (see [`LazySocket`]).
    fn is_polled(&self) -> bool {
        true
    }
}

/// TCP_CORK where the platform has it (Linux); elsewhere nothing.
fn cork_socket(socket: socket2::SockRef<'_>) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ = socket.set_cork(true);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = socket;
}

/// A plain connection: waiting for readiness registers its socket.
impl Parkable for LazySocket {
    const PARKS: bool = true;
    const LEAVES_TASK: bool = true;
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        LazySocket::poll_read_ready(self, cx)
    }
    fn cork(&self) {
        if let Some(socket) = self.sock_ref() {
            cork_socket(socket);
        }
    }
    fn is_polled(&self) -> bool {
        LazySocket::is_polled(self)
    }
}

/// A TLS connection waits on its socket too. Parking needs hyper's last read
/// to have come back empty since the last answer, and tokio-rustls only
/// says so once rustls holds no plaintext (an incomplete record waits for
/// more bytes from the socket, which is what readiness reports); bytes hyper
/// did get are replayed. rustls' own state stays with the socket, in the
/// parking lot too: only the socket under it leaves tokio.
impl Parkable for super::lot::TlsClient {
    const PARKS: bool = true;
    const LEAVES_TASK: bool = true;
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Waiting for the client: it gets what is held first.
        std::task::ready!(self.get_mut().0.poll_send_held(cx))?;
        match self.get_ref().0.live() {
            Some(socket) => socket.poll_read_ready(cx),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
    fn cork(&self) {
        if let Some(socket) = self.get_ref().0.live() {
            cork_socket(socket2::SockRef::from(socket));
        }
    }
}
