//! The socket under a TLS session. It can leave tokio for the parking lot
//! and come back in place, so the session that wraps it never moves; and
//! it can hold back what the handshake writes.
//!
//! Holding is for the end of a TLS 1.3 handshake: the server's session
//! tickets follow the client's Finished, and tokio-rustls sends them on
//! their own as its accept completes. A client that sent its request with
//! its Finished (as most do) then gets the tickets and the response as two
//! writes, two segments and two wake-ups. Held, the tickets leave with the
//! first answer instead. During the handshake every flight leaves as soon
//! as a read finds nothing, so the handshake never waits for its client
//! with bytes held. After it, held bytes lead the next write, and are sent
//! before the connection rests or shuts down; the caller sends them at once
//! where the client waits for them (a TLS 1.2 server's final flight).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct ClientSocket {
    socket: Socket,
    /// Written but not sent yet.
    held: Vec<u8>,
    /// Whether writes are held (during the handshake).
    holding: bool,
}

#[derive(Debug)]
enum Socket {
    Live(TcpStream),
    Detached(std::net::TcpStream),
    /// Detaching or attaching failed; the connection is over.
    Gone,
}

impl ClientSocket {
    /// A socket about to carry a TLS handshake: its writes are held until
    /// a read finds nothing, or past [`ClientSocket::end_handshake`].
    pub fn handshaking(stream: TcpStream) -> Self {
        ClientSocket { socket: Socket::Live(stream), held: Vec::new(), holding: true }
    }

    /// The handshake is over: writes go through again, what is still held
    /// first. A read that finds nothing no longer sends it: hyper reads
    /// once more after each request, before there is an answer.
    pub fn end_handshake(&mut self) {
        self.holding = false;
    }

    /// Whether written bytes are waiting to be sent.
    /// Hold `bytes` instead of whatever the handshake left held (its
    /// alert): for a client that spoke plain HTTP and should read why.
    pub fn hold_instead(&mut self, bytes: &[u8]) {
        self.held.clear();
        self.held.extend_from_slice(bytes);
    }

    pub fn has_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// The socket, while it is in tokio.
    pub fn live(&self) -> Option<&TcpStream> {
        match &self.socket {
            Socket::Live(s) => Some(s),
            _ => None,
        }
    }

    /// The descriptor while the socket is out of tokio.
    pub fn detached_fd(&self) -> Option<RawFd> {
        match &self.socket {
            Socket::Detached(s) => Some(s.as_raw_fd()),
            _ => None,
        }
    }

    /// Take the socket out of tokio. What is held must have been sent
    /// ([`ClientSocket::poll_send_held`]); until then the socket stays.
    pub fn detach(&mut self) -> io::Result<()> {
        if self.has_held() {
            return Err(io::Error::other("bytes held on a resting connection"));
        }
        if let Socket::Live(s) = std::mem::replace(&mut self.socket, Socket::Gone) {
            self.socket = Socket::Detached(s.into_std()?);
        }
        Ok(())
    }

    /// Give the socket back to tokio (within the runtime).
    pub fn attach(&mut self) -> io::Result<()> {
        if let Socket::Detached(s) = std::mem::replace(&mut self.socket, Socket::Gone) {
            self.socket = Socket::Live(TcpStream::from_std(s)?);
        }
        Ok(())
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
            let n = ready!(live(&mut self.socket)?.poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            consume(&mut self.held, n);
        }
        Poll::Ready(Ok(()))
    }

    /// Write `buf`, after what is held, in one call where the socket takes
    /// it all. Counts only the bytes of `buf`.
    fn poll_write_after_held(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        while self.has_held() {
            let both = [io::IoSlice::new(&self.held), io::IoSlice::new(buf)];
            let n = ready!(live(&mut self.socket)?.poll_write_vectored(cx, &both))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let held = self.held.len();
            consume(&mut self.held, n);
            if n > held {
                return Poll::Ready(Ok(n - held));
            }
        }
        live(&mut self.socket)?.poll_write(cx, buf)
    }
}

/// `n` held bytes were sent. The buffer's memory goes once it is empty, so a
/// resting connection keeps none.
fn consume(held: &mut Vec<u8>, n: usize) {
    if n >= held.len() {
        *held = Vec::new();
    } else {
        held.drain(..n);
    }
}

fn live(socket: &mut Socket) -> io::Result<Pin<&mut TcpStream>> {
    match socket {
        Socket::Live(s) => Ok(Pin::new(s)),
        _ => Err(io::ErrorKind::NotConnected.into()),
    }
}

impl AsyncRead for ClientSocket {
    /// During the handshake, a read that finds nothing sends what is held
    /// first: the client is waiting for it.
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match live(&mut this.socket)?.poll_read(cx, buf) {
            Poll::Pending if this.holding => {
                if let Poll::Ready(Err(e)) = this.poll_send_held(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Pending
            }
            done => done,
        }
    }
}

impl AsyncWrite for ClientSocket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.holding {
            this.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        if this.has_held() {
            return this.poll_write_after_held(cx, buf);
        }
        live(&mut this.socket)?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.holding {
            let mut n = 0;
            for b in bufs {
                this.held.extend_from_slice(b);
                n += b.len();
            }
            return Poll::Ready(Ok(n));
        }
        if this.has_held() {
            // Once per connection: the first buffer joins what is held, the
            // caller writes the rest next.
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
            return this.poll_write_after_held(cx, first);
        }
        live(&mut this.socket)?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Does not send what is held: hyper flushes after each request it
    /// reads, before there is an answer to send the held bytes with (and
    /// tokio-rustls at the end of its handshake). TCP itself has nothing to
    /// flush.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        live(&mut self.get_mut().socket)?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_held(cx))?;
        live(&mut this.socket)?.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (ClientSocket, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (ClientSocket::handshaking(server), client)
    }

    async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        s.read_exact(&mut buf).await.unwrap();
        buf
    }

    #[tokio::test]
    async fn handshake_writes_leave_when_a_read_finds_nothing() {
        let (mut server, mut client) = pair().await;
        server.write_all(b"server hello").await.unwrap();
        assert!(server.has_held(), "held until the handshake reads");
        // The client answers only what it was sent; the read that finds
        // nothing sends it.
        let answer = tokio::spawn(async move {
            assert_eq!(read_n(&mut client, 12).await, b"server hello");
            client.write_all(b"finished").await.unwrap();
            client
        });
        assert_eq!(server.read(&mut [0; 8]).await.unwrap(), 8);
        assert!(!server.has_held());
        answer.await.unwrap();
    }

    #[tokio::test]
    async fn bytes_held_at_the_end_of_the_handshake_lead_the_first_write() {
        let (mut server, mut client) = pair().await;
        server.write_all(b"tickets;").await.unwrap();
        server.end_handshake();
        server.flush().await.unwrap();
        assert!(server.has_held(), "a flush does not send them");
        server.write_all(b"response").await.unwrap();
        assert!(!server.has_held());
        assert_eq!(read_n(&mut client, 16).await, b"tickets;response");
        // Later writes go straight through.
        server.write_all(b"next").await.unwrap();
        assert!(!server.has_held());
        assert_eq!(read_n(&mut client, 4).await, b"next");
    }

    #[tokio::test]
    async fn vectored_writes_and_shutdown_send_what_is_held() {
        let (mut server, mut client) = pair().await;
        let parts = [io::IoSlice::new(b"a"), io::IoSlice::new(b"bc")];
        assert_eq!(server.write_vectored(&parts).await.unwrap(), 3);
        server.end_handshake();
        let parts = [io::IoSlice::new(b""), io::IoSlice::new(b"de")];
        assert_eq!(server.write_vectored(&parts).await.unwrap(), 2);
        server.write_all(b"f").await.unwrap();
        assert_eq!(read_n(&mut client, 6).await, b"abcdef");

        let (mut server, mut client) = pair().await;
        server.write_all(b"alert").await.unwrap();
        server.shutdown().await.unwrap();
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"alert");
    }

    #[tokio::test]
    async fn after_the_handshake_a_read_that_finds_nothing_keeps_them() {
        let (mut server, mut client) = pair().await;
        server.write_all(b"tickets").await.unwrap();
        server.end_handshake();
        client.write_all(b"GET").await.unwrap();
        assert_eq!(server.read(&mut [0; 3]).await.unwrap(), 3);
        let mut more = [0; 1];
        let read = std::future::poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut more);
            Poll::Ready(Pin::new(&mut server).poll_read(cx, &mut buf))
        })
        .await;
        assert!(read.is_pending());
        assert!(server.has_held(), "kept for the answer");
        // They go before the connection rests; until then it stays.
        assert!(server.detach().is_err());
        assert!(server.live().is_some());
        std::future::poll_fn(|cx| server.poll_send_held(cx)).await.unwrap();
        server.detach().unwrap();
        assert!(server.detached_fd().is_some());
        assert_eq!(read_n(&mut client, 7).await, b"tickets");
        server.attach().unwrap();
        assert!(server.live().is_some());
    }
}
