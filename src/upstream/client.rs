//! The keep-alive HTTP/1.1 client used to reach upstream servers, built
//! directly on hyper's connection API (no generic pool keyed by URI, no
//! per-request task).
//!
//! Each [`Server`] keeps a stack of idle connections (LIFO: the warmest is
//! reused first, the coldest age out). A request pops a ready connection or
//! dials a new one; its [`UpstreamConn`] travels with the response (inside
//! the server's in-flight guard) and goes back on the stack only when the
//! response body ended cleanly. A connection the server closed while idle
//! is retried once on a fresh one, provided nothing was written to it.
//!
//! Idle expiry costs nothing per request: a sweep every [`IDLE_SWEEP`] drops
//! the connections that stayed below the stack's low-water mark for the
//! whole period, so a connection idles between one and two periods.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::server::Server;
use crate::body::RequestBody;

/// Idle connections are dropped after one to two of these.
const IDLE_SWEEP: Duration = Duration::from_secs(60);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

type Sender = SendRequest<RequestBody>;

/// What a client is built from; a reload reuses the old client when these
/// are unchanged (the idle connections live on the servers, which carry
/// over anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    pub max_idle_per_server: usize,
}

#[derive(Debug, Clone)]
pub struct UpstreamClient {
    settings: ClientSettings,
    h1: http1::Builder,
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: nothing reached the server.
    Connect(std::io::Error),
    /// The connect did not finish within `connect_timeout`.
    ConnectTimeout,
    /// The connection failed after the request may have been written.
    Request(hyper::Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Connect(_) => f.write_str("connect failed"),
            SendError::ConnectTimeout => f.write_str("connect timed out"),
            SendError::Request(_) => f.write_str("request failed"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Connect(e) => Some(e),
            SendError::ConnectTimeout => None,
            SendError::Request(e) => Some(e),
        }
    }
}

/// A connection lent to one exchange.
#[derive(Debug)]
pub struct UpstreamConn {
    tx: Sender,
    max_idle: usize,
}

impl UpstreamConn {
    /// The exchange ended cleanly: park the connection on `server`'s idle
    /// stack (once hyper has finished with the exchange).
    pub fn release(self, server: &Arc<Server>) {
        let UpstreamConn { mut tx, max_idle } = self;
        if max_idle == 0 || tx.is_closed() {
            return;
        }
        if tx.is_ready() {
            server.idle.push(server, tx, max_idle);
            return;
        }
        // Rare: the body ended before hyper went back to idle (or the
        // request body is still being written). Park it when ready.
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let weak = Arc::downgrade(server);
        rt.spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(IDLE_SWEEP, tx.ready()).await {
                if let Some(server) = weak.upgrade() {
                    server.idle.push(&server, tx, max_idle);
                }
            }
        });
    }
}

impl UpstreamClient {
    pub fn new(settings: ClientSettings) -> Self {
        UpstreamClient { settings, h1: http1::Builder::new() }
    }

    /// Send `req` (origin-form URI, `Host` set) to `server` on an idle
    /// connection or a new one.
    pub async fn request(
        &self,
        server: &Server,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, UpstreamConn), SendError> {
        if let Some(mut tx) = server.idle.checkout() {
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.lease(tx))),
                Err(mut e) => match e.take_message() {
                    // Closed by the server while idle, before anything was
                    // written: nothing reached it, try a fresh connection.
                    Some(back) => req = back,
                    None => return Err(SendError::Request(e.into_error())),
                },
            }
        }
        let mut tx = self.connect(server).await?;
        match tx.try_send_request(req).await {
            Ok(resp) => Ok((resp, self.lease(tx))),
            Err(e) => Err(SendError::Request(e.into_error())),
        }
    }

    fn lease(&self, tx: Sender) -> UpstreamConn {
        UpstreamConn { tx, max_idle: self.settings.max_idle_per_server }
    }

    async fn connect(&self, server: &Server) -> Result<Sender, SendError> {
        let connecting = TcpStream::connect(server.addr.0.as_str());
        let stream = match tokio::time::timeout(self.settings.connect_timeout, connecting).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Connect(e)),
            Err(_) => return Err(SendError::ConnectTimeout),
        };
        // Best effort: a failure here costs latency, not correctness.
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let (tx, conn) =
            self.h1.handshake(TokioIo::new(stream)).await.map_err(|e| SendError::Connect(std::io::Error::other(e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(tx)
    }
}

/// A server's idle connections.
#[derive(Debug, Default)]
pub struct IdleConns {
    stack: Mutex<Stack>,
    sweeping: AtomicBool,
}

#[derive(Debug, Default)]
struct Stack {
    conns: Vec<Sender>,
    /// The fewest connections held since the last sweep: the ones below
    /// it were not used for a whole period.
    low: usize,
}

impl IdleConns {
    /// The most recently parked connection still ready for a request.
    fn checkout(&self) -> Option<Sender> {
        let mut stack = self.stack.lock().ok()?;
        while let Some(tx) = stack.conns.pop() {
            stack.low = stack.low.min(stack.conns.len());
            if tx.is_ready() {
                return Some(tx);
            }
        }
        None
    }

    fn push(&self, server: &Arc<Server>, tx: Sender, max_idle: usize) {
        let Ok(mut stack) = self.stack.lock() else { return };
        if stack.conns.len() < max_idle {
            stack.conns.push(tx);
        }
        drop(stack);
        if !self.sweeping.load(Ordering::Relaxed) && !self.sweeping.swap(true, Ordering::Relaxed) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(sweep_until_gone(Arc::downgrade(server)));
            }
        }
    }

    /// Drop the connections unused since the last sweep.
    fn sweep(&self) {
        let stale: Vec<Sender> = {
            let Ok(mut stack) = self.stack.lock() else { return };
            let n = stack.low.min(stack.conns.len());
            let stale = stack.conns.drain(..n).collect();
            stack.low = stack.conns.len();
            stale
        };
        if !stale.is_empty() {
            tracing::debug!(closed = stale.len(), "idle upstream connections expired");
        }
    }

    /// Idle connections held (for tests and the status page).
    pub fn len(&self) -> usize {
        self.stack.lock().map_or(0, |s| s.conns.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Expire a server's idle connections until the server is dropped (by a
/// reload that removed it), which closes whatever it still holds.
async fn sweep_until_gone(server: Weak<Server>) {
    let mut tick = tokio::time::interval(IDLE_SWEEP);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(server) = server.upgrade() else { return };
        server.idle.sweep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamAddr;

    /// A ready sender over an in-memory pipe (nothing is ever sent).
    async fn sender() -> Sender {
        let (io, _peer) = tokio::io::duplex(64);
        let (mut tx, conn) = http1::handshake(TokioIo::new(io)).await.unwrap();
        tokio::spawn(async move {
            let _peer = _peer;
            let _ = conn.await;
        });
        tx.ready().await.unwrap();
        tx
    }

    #[tokio::test]
    async fn lifo_reuse_cap_and_sweep_of_connections_idle_a_whole_period() {
        let server = Arc::new(Server::new(&Arc::from("p"), UpstreamAddr("127.0.0.1:1".into()), 1).unwrap());
        let idle = &server.idle;
        for _ in 0..3 {
            idle.push(&server, sender().await, 2);
        }
        assert_eq!(idle.len(), 2, "capped at max_idle");
        idle.sweep(); // First period: nothing known to be unused yet.
        assert_eq!(idle.len(), 2);
        let top = idle.checkout().unwrap();
        idle.push(&server, top, 2);
        idle.sweep(); // The bottom one stayed unused for the whole period.
        assert_eq!(idle.len(), 1);
        idle.sweep(); // So did the other one since.
        assert!(idle.is_empty());
        assert!(idle.checkout().is_none());
    }

    #[tokio::test]
    async fn closed_connections_are_skipped() {
        let server = Arc::new(Server::new(&Arc::from("p"), UpstreamAddr("127.0.0.1:1".into()), 1).unwrap());
        let (io, peer) = tokio::io::duplex(64);
        let (tx, conn) = http1::handshake::<_, RequestBody>(TokioIo::new(io)).await.unwrap();
        let task = tokio::spawn(conn);
        server.idle.push(&server, sender().await, 4);
        server.idle.push(&server, tx, 4);
        drop(peer); // The server side goes away: the connection ends.
        let _ = task.await;
        assert!(server.idle.checkout().is_some_and(|tx| tx.is_ready()));
        assert!(server.idle.is_empty());
    }
}
