//! The socket's reads, writes and peeks: a direct, non-blocking syscall while it
//! is out of tokio's poller, registering it when the call would block and
//! handing over to tokio's own socket from then on; held bytes (`held.rs`)
//! lead the first write after a TLS handshake.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{gone, ClientSocket, Socket};

impl Socket {
    /// Run `call` on the unregistered socket; on `WouldBlock`, register
    /// and hand over to tokio's `poll` (which then waits for readiness).
    pub(super) fn poll_io<A, T>(
        &mut self,
        cx: &mut Context<'_>,
        mut arg: A,
        call: fn(&std::net::TcpStream, &mut A) -> io::Result<T>,
        poll: fn(Pin<&mut TcpStream>, &mut Context<'_>, &mut A) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if let Socket::Unpolled(s) = self {
            // tokio's cooperative budget, as its own sockets keep it: a
            // client that always has bytes waiting cannot hold the thread.
            let coop = ready!(tokio::task::coop::poll_proceed(cx));
            loop {
                match call(s, &mut arg) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    done => {
                        coop.made_progress();
                        return Poll::Ready(done);
                    }
                }
            }
        }
        match self.polled() {
            Ok(s) => poll(Pin::new(s), cx, &mut arg),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    pub(super) fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_io(cx, buf, |mut s, buf| s.write(buf), |s, cx, buf| s.poll_write(cx, buf))
    }

    pub(super) fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, bufs, |mut s, bufs| s.write_vectored(bufs), |s, cx, bufs| s.poll_write_vectored(cx, bufs))
    }
}

impl ClientSocket {
    /// A write syscall of the caller's own on the descriptor (`sendfile`,
    /// `sendmsg` with `MSG_MORE`: `server/sendfile.rs`), made as the
    /// socket's own writes are: direct while out of the poller, and once a
    /// call would block, after tokio reports the socket writable. Never
    /// while bytes are held (a TLS handshake's: they would be overtaken).
    pub(in crate::server) fn poll_write_by<A>(
        &mut self,
        cx: &mut Context<'_>,
        arg: A,
        call: fn(std::os::fd::RawFd, &mut A) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        if self.holding || self.has_held() {
            return Poll::Ready(Err(io::Error::other("a write of its own on a socket holding bytes")));
        }
        self.socket.poll_io(
            cx,
            (arg, call),
            |s, (arg, call)| call(s.as_raw_fd(), arg),
            |s, cx, (arg, call)| {
                let s = s.get_mut();
                loop {
                    ready!(s.poll_write_ready(cx))?;
                    match s.try_io(tokio::io::Interest::WRITABLE, || call(s.as_raw_fd(), arg)) {
                        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                        done => return Poll::Ready(done),
                    }
                }
            },
        )
    }

    /// Whether the client closed its side, seen with `recv(MSG_PEEK)`,
    /// which takes nothing from the socket: `true` at its end of stream,
    /// `false` when bytes wait. When neither, the socket enters the poller
    /// (if it is not in yet) and `cx` is woken when the client sends or
    /// closes.
    pub fn poll_peek_closed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let peeked = self.socket.poll_io(
            cx,
            [0u8; 1],
            |s, byte| s.peek(byte),
            |s, cx, byte| s.poll_peek(cx, &mut ReadBuf::new(byte)),
        );
        peeked.map_ok(|n| n == 0)
    }
}

/// `read(2)` into the unfilled part of `buf`, which may be uninitialised:
/// the kernel only writes it, and only the `n` bytes it reports are marked
/// filled.
#[allow(unsafe_code)]
fn read_into(stream: &std::net::TcpStream, buf: &mut ReadBuf<'_>) -> io::Result<()> {
    // SAFETY: the pointer and length describe `buf`'s unfilled part, which
    // stays borrowed for the call; `read` writes at most that many bytes
    // and returns how many it wrote, and only those are marked initialised.
    unsafe {
        let unfilled = buf.unfilled_mut();
        let n = libc::read(stream.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len());
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        buf.assume_init(n);
        buf.advance(n);
    }
    Ok(())
}

impl AsyncRead for ClientSocket {
    /// During a TLS handshake, a read that finds nothing sends what is
    /// held first: the client is waiting for it.
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.socket.poll_io(cx, buf, |s, buf| read_into(s, buf), |s, cx, buf| s.poll_read(cx, buf)) {
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
        this.socket.poll_write(cx, buf)
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
        this.socket.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// TCP has nothing to flush. Does not send what is held either: hyper
    /// flushes after each request it reads, before there is an answer to
    /// send the held bytes with (and tokio-rustls at the end of its
    /// handshake).
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.socket {
            Socket::Gone => Poll::Ready(Err(gone())),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Half-close (`shutdown(SHUT_WR)`), as tokio's `TcpStream` does, after
    /// what is held.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_held(cx))?;
        match &mut this.socket {
            Socket::Unpolled(s) => Poll::Ready(s.shutdown(std::net::Shutdown::Write)),
            Socket::Polled(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Gone => Poll::Ready(Err(gone())),
        }
    }
}
