//! The client socket, plain or under a TLS session: one type, in one of
//! three states. **Not in tokio's poller** (reads and writes are direct,
//! non-blocking syscalls; a parked connection's socket is in this state
//! too, watched by the lot's own poller), **in the poller** (since a call
//! would have blocked, or since it was registered at once), or **gone** (a
//! registration or deregistration failed; the error was returned and every
//! later call fails at once). A socket moves from the first state to the second when a call
//! would block, and back when its connection parks; a TLS session stays
//! where it is meanwhile, wrapped around the same `ClientSocket`.
//!
//! Why plain sockets register lazily: registering a socket with the poller
//! costs an `epoll_ctl` to add it and another to remove it, plus tokio's
//! bookkeeping for it. A client that sends its whole request with the
//! connection (which deferred accept waits for) and takes its answer at
//! once never has to wait: a one-request connection (`Connection: close`,
//! HTTP/1.0) then costs two syscalls fewer, a fifth of what the proxy
//! spends on it in syscalls. HAProxy does the same. A connection that does
//! wait (the next request of a keep-alive client) is registered then, and
//! stays so; one back from the parking lot, whose client has spoken,
//! starts unregistered again. The check for a client that leaves while its
//! answer is on its way peeks at the socket only once the request has been
//! in progress for a while (`activity/departure.rs`), so a quick answer
//! goes out without it. Nothing is lost between a read that finds
//! nothing and the registration that follows it: the poller is
//! edge-triggered, and adding a socket that is already readable reports it
//! at once.
//!
//! Why TLS sockets register at once (on accept, and when they leave the
//! parking lot): a handshake always waits for its client, so a new TLS
//! socket would register within its first round trip anyway and lazy
//! registration would save nothing there. A resumed session could start
//! unregistered, but hyper reads a TLS connection while each answer is on
//! its way (only rustls can tell a client that left from data:
//! `activity/departure.rs`), and that read would register it within its
//! first request anyway; so it registers at once, for two `epoll_ctl` per
//! parking visit.
//!
//! Why a TLS socket holds writes (`held.rs`): at the end of a TLS 1.3
//! handshake the server's session tickets follow the client's Finished,
//! and tokio-rustls sends them on their own as its accept completes. A
//! client that sent its request with its Finished (as most do) then gets
//! the tickets and the response as two writes, two segments and two
//! wake-ups. Held, the tickets leave with the first answer instead. The
//! hold buffer is used only while a handshake asks for it
//! ([`ClientSocket::handshaking`]); a plain socket never holds anything.
//!
//! The syscalls and the `AsyncRead`/`AsyncWrite` impls are in `io.rs`.

mod held;
mod io;
#[cfg(test)]
mod tests;

use std::os::fd::{AsRawFd, RawFd};
use std::task::{Context, Poll};

use tokio::net::TcpStream;

/// See the module documentation.
#[derive(Debug)]
pub struct ClientSocket {
    socket: Socket,
    /// Written during a TLS handshake but not sent yet (empty, with no
    /// allocation, otherwise).
    held: Vec<u8>,
    /// Whether writes are held (during a TLS handshake).
    holding: bool,
}

#[derive(Debug)]
enum Socket {
    /// Not in tokio's poller: non-blocking syscalls on the socket (or
    /// nothing, while its connection is parked).
    Unpolled(std::net::TcpStream),
    /// In tokio's poller.
    Polled(TcpStream),
    /// A registration or deregistration failed; the connection is over.
    Gone,
}

impl ClientSocket {
    /// A plain connection's socket, out of the poller until a call would
    /// block. `stream` must be non-blocking (as `accept4` with
    /// `SOCK_NONBLOCK` and tokio's `into_std` give it).
    pub fn plain(stream: std::net::TcpStream) -> Self {
        ClientSocket { socket: Socket::Unpolled(stream), held: Vec::new(), holding: false }
    }

    /// A socket about to carry a TLS handshake, already registered: its
    /// writes are held until a read finds nothing, or past
    /// [`ClientSocket::end_handshake`].
    pub fn handshaking(stream: TcpStream) -> Self {
        ClientSocket { socket: Socket::Polled(stream), held: Vec::new(), holding: true }
    }

    /// Whether the socket is in tokio's poller (or gone: then every call
    /// fails at once, as a registered one would).
    pub fn is_polled(&self) -> bool {
        !matches!(self.socket, Socket::Unpolled(_))
    }

    /// The socket out of tokio, for a plain connection going to the
    /// parking lot. Leaving costs an `epoll_ctl` only if it was registered.
    pub fn into_std(mut self) -> std::io::Result<std::net::TcpStream> {
        self.leave_poller()?;
        match self.socket {
            Socket::Unpolled(s) => Ok(s),
            _ => Err(gone()),
        }
    }

    /// Take the socket out of tokio in place, for a TLS session going to
    /// the parking lot with its socket. What is held must have been sent
    /// ([`ClientSocket::poll_send_held`]); until then the socket stays.
    pub fn leave_poller(&mut self) -> std::io::Result<()> {
        if self.has_held() {
            return Err(std::io::Error::other("bytes held on a resting connection"));
        }
        if matches!(self.socket, Socket::Polled(_)) {
            if let Socket::Polled(s) = std::mem::replace(&mut self.socket, Socket::Gone) {
                self.socket = Socket::Unpolled(s.into_std()?);
            }
        }
        Ok(())
    }

    /// Put the socket in tokio's poller now (within the runtime), if it
    /// is not yet: a TLS session back from the parking lot.
    pub fn register(&mut self) -> std::io::Result<()> {
        self.socket.polled().map(|_| ())
    }

    /// The descriptor while the socket is out of tokio (for the parking
    /// lot's poller).
    pub fn unpolled_fd(&self) -> Option<RawFd> {
        match &self.socket {
            Socket::Unpolled(s) => Some(s.as_raw_fd()),
            _ => None,
        }
    }

    /// The socket, for options; `None` once it is gone.
    pub fn sock_ref(&self) -> Option<socket2::SockRef<'_>> {
        match &self.socket {
            Socket::Unpolled(s) => Some(socket2::SockRef::from(s)),
            Socket::Polled(s) => Some(socket2::SockRef::from(s)),
            Socket::Gone => None,
        }
    }

    /// Set TCP_CORK (see `Activity::cork_next_write`), where the platform
    /// has it (Linux); elsewhere nothing.
    pub fn cork(&self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(socket) = self.sock_ref() {
            let _ = socket.set_cork(true);
        }
    }

    /// Wait until the client sends again, without reading: what is held
    /// goes first (the client may be waiting for it), then tokio's
    /// readiness wait, which needs the registration.
    pub fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_send_held(cx))?;
        match self.socket.polled() {
            Ok(s) => s.poll_read_ready(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// The descriptor, for syscalls of a caller's own (`sendfile`): `-1` once
/// the socket is gone, on which every syscall fails with `EBADF`. A call
/// that would block must go through the socket's own writes to wait.
impl AsRawFd for ClientSocket {
    fn as_raw_fd(&self) -> RawFd {
        match &self.socket {
            Socket::Unpolled(s) => s.as_raw_fd(),
            Socket::Polled(s) => s.as_raw_fd(),
            Socket::Gone => -1,
        }
    }
}

impl Socket {
    /// The registered socket, registering it first if it is not yet.
    fn polled(&mut self) -> std::io::Result<&mut TcpStream> {
        if matches!(self, Socket::Unpolled(_)) {
            if let Socket::Unpolled(s) = std::mem::replace(self, Socket::Gone) {
                *self = Socket::Polled(TcpStream::from_std(s)?);
            }
        }
        match self {
            Socket::Polled(s) => Ok(s),
            _ => Err(gone()),
        }
    }
}

fn gone() -> std::io::Error {
    std::io::ErrorKind::NotConnected.into()
}
