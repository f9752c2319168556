//! Listening sockets: the options set once on a listener so that every
//! connection accepted from it starts the way the proxy wants (no Nagle
//! delay, accepted only once the client has spoken).

use std::net::SocketAddr;

use tokio::io::unix::AsyncFd;
use tokio::net::TcpListener;

use super::ServerError;

/// How long (seconds) the kernel keeps a connection whose client has sent
/// nothing before handing it over anyway: the value nginx's `deferred` and
/// HAProxy's `defer-accept` use. Linux rounds it up to one SYN-ACK
/// retransmission, so a silent client reaches the proxy after about a
/// second and is then subject to `client_header_timeout` like any other.
const DEFER_ACCEPT_SECS: libc::c_int = 1;

/// Bind a TCP listener with a deep backlog and address reuse. With
/// `defer_accept`, the kernel queues a connection for `accept` only once its
/// first bytes (a request head or a ClientHello) have arrived: one wake-up
/// and one empty read fewer per connection, since HTTP clients speak first.
pub fn bind(listener: &'static str, addr: SocketAddr, defer_accept: bool) -> Result<TcpListener, ServerError> {
    bind_socket(listener, addr, defer_accept)
        .and_then(|socket| TcpListener::from_std(socket.into()))
        .map_err(|source| ServerError::Bind { listener, addr, source })
}

/// The same, as a traffic listener: its connections start out of tokio's
/// poller (see [`ClientSocket`](super::client_socket::ClientSocket)).
pub fn bind_traffic(listener: &'static str, addr: SocketAddr, defer_accept: bool) -> Result<Listener, ServerError> {
    bind_socket(listener, addr, defer_accept)
        .and_then(|socket| poll_listener(mio::net::TcpListener::from_std(socket.into())))
        .map(Listener)
        .map_err(|source| ServerError::Bind { listener, addr, source })
}

/// Register `listener` with tokio's poller, for readability.
fn poll_listener(listener: mio::net::TcpListener) -> std::io::Result<AsyncFd<mio::net::TcpListener>> {
    // SAFETY: the descriptor is the listener's own: it is open, stays so
    // while the `AsyncFd` owns the listener, and `as_raw_fd` returns that
    // same one every time.
    #[allow(unsafe_code)]
    let registered = unsafe { AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) };
    registered.map_err(std::io::Error::from)
}

/// A traffic listener. Its `accept` gives sockets that tokio does not poll
/// yet: tokio's own listener registers each one at once.
#[derive(Debug)]
pub struct Listener(AsyncFd<mio::net::TcpListener>);

impl Listener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    /// The next connection: a non-blocking socket (`accept4` with
    /// `SOCK_NONBLOCK`, by mio) and its client's address.
    pub async fn accept(&self) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
        loop {
            let mut ready = self.0.readable().await?;
            if let Ok(accepted) = ready.try_io(|listener| listener.get_ref().accept()) {
                return accepted.map(|(stream, peer)| (stream.into(), peer));
            }
        }
    }
}

fn bind_socket(listener: &'static str, addr: SocketAddr, defer_accept: bool) -> std::io::Result<socket2::Socket> {
    let socket =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    socket.set_nonblocking(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux, the
    // BSDs): one setsockopt per listener instead of one per connection.
    socket.set_nodelay(true)?;
    if defer_accept {
        match set_defer_accept(&socket, DEFER_ACCEPT_SECS) {
            Ok(()) => {}
            // Only a cost, never a fault: connections are then accepted
            // as soon as they are established.
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                tracing::debug!(listener, "deferred accept is Linux-only; accepting at once")
            }
            Err(e) => tracing::warn!(listener, error = %e, "deferred accept is not available; accepting at once"),
        }
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket)
}

/// `TCP_DEFER_ACCEPT`, which socket2 does not wrap.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_defer_accept(socket: &socket2::Socket, seconds: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is `socket`'s own and open for this call; the
    // option value points to a live `c_int` and its length is that of a
    // `c_int`, as the kernel expects for TCP_DEFER_ACCEPT.
    #[allow(unsafe_code)]
    let status = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&seconds).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_defer_accept(_: &socket2::Socket, _: libc::c_int) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// What the kernel reports for TCP_DEFER_ACCEPT on `listener`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn defer_accept_of(listener: &TcpListener) -> libc::c_int {
        use std::os::fd::AsRawFd;
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a live descriptor, a live `c_int` and its length.
        #[allow(unsafe_code)]
        let status = unsafe {
            libc::getsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                std::ptr::from_mut(&mut value).cast(),
                &mut len,
            )
        };
        assert_eq!(status, 0, "{}", std::io::Error::last_os_error());
        value
    }

    #[tokio::test]
    async fn accepted_connections_inherit_nodelay_from_the_listener() {
        let listener = bind("test", "127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap(), "answers would wait for Nagle's algorithm");
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn deferred_accept_is_set_only_when_asked() {
        let deferred = bind("test", "127.0.0.1:0".parse().unwrap(), true).unwrap();
        let at_once = bind("test", "127.0.0.1:0".parse().unwrap(), false).unwrap();
        assert!(defer_accept_of(&deferred) > 0);
        assert_eq!(defer_accept_of(&at_once), 0);
    }

    /// A client that has spoken is handed over with its bytes; one that has
    /// not waits in the kernel until the first SYN-ACK retransmission (about
    /// a second). Load can only make the accept later, never earlier.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn a_deferred_connection_arrives_with_its_first_bytes() {
        let listener = bind("test", "127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = || tokio::time::timeout(Duration::from_secs(10), listener.accept());

        let mut speaking = TcpStream::connect(addr).await.unwrap();
        speaking.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let (mut accepted, _) = accept().await.expect("a client that spoke was not handed over").unwrap();
        let mut first = [0u8; 5];
        accepted.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"GET /");

        let connected = std::time::Instant::now();
        let _silent = TcpStream::connect(addr).await.unwrap();
        let _ = accept().await.expect("a silent client was never handed over").unwrap();
        assert!(connected.elapsed() >= Duration::from_millis(500), "a silent client was handed over at once");
    }
}
