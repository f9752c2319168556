//! A server's idle keep-alive connections: a LIFO stack (the warmest is
//! reused first, the coldest age out), capped at `max_idle_per_server`.
//!
//! Idle expiry costs nothing per request: a sweep every [`IDLE_SWEEP`] drops
//! the connections that stayed below the stack's low-water mark for the
//! whole period, so a connection idles between one and two periods.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::conn::Conn;
use super::server::Server;

/// Idle connections are dropped after one to two of these.
const IDLE_SWEEP: Duration = Duration::from_secs(60);

/// A server's idle connections.
#[derive(Debug, Default)]
pub struct IdleConns {
    stack: Mutex<Stack>,
    sweeping: AtomicBool,
}

#[derive(Debug, Default)]
struct Stack {
    conns: Vec<Conn>,
    /// The fewest connections held since the last sweep: the ones below
    /// it were not used for a whole period.
    low: usize,
}

impl IdleConns {
    /// The most recently parked connection still open.
    pub(super) fn checkout(&self) -> Option<Conn> {
        loop {
            let mut conn = {
                let mut stack = self.stack.lock().ok()?;
                let conn = stack.conns.pop()?;
                stack.low = stack.low.min(stack.conns.len());
                conn
            };
            if conn.still_open() {
                return Some(conn);
            }
        }
    }

    /// Park a connection that finished an exchange cleanly.
    pub fn push(&self, server: &Arc<Server>, conn: Conn) {
        if conn.max_idle == 0 {
            return;
        }
        let Ok(mut stack) = self.stack.lock() else { return };
        if stack.conns.len() < conn.max_idle {
            stack.conns.push(conn);
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
        let stale: Vec<Conn> = {
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
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    /// A connection over loopback and the server's end of it.
    async fn conn_pair(max_idle: usize) -> (Conn, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (peer, _) = l.accept().await.unwrap();
        let mut conn = Conn::new(client);
        conn.max_idle = max_idle;
        (conn, peer)
    }

    fn server() -> Arc<Server> {
        Arc::new(Server::new(&Arc::from("p"), UpstreamAddr("127.0.0.1:1".into()), 1).unwrap())
    }

    #[tokio::test]
    async fn lifo_reuse_cap_and_sweep_of_connections_idle_a_whole_period() {
        let server = server();
        let idle = &server.idle;
        let mut peers = Vec::new();
        for _ in 0..3 {
            let (conn, peer) = conn_pair(2).await;
            peers.push(peer);
            idle.push(&server, conn);
        }
        assert_eq!(idle.len(), 2, "capped at max_idle");
        idle.sweep(); // First period: nothing known to be unused yet.
        assert_eq!(idle.len(), 2);
        let top = idle.checkout().unwrap();
        idle.push(&server, top);
        idle.sweep(); // The bottom one stayed unused for the whole period.
        assert_eq!(idle.len(), 1);
        idle.sweep(); // So did the other one since.
        assert!(idle.is_empty());
        assert!(idle.checkout().is_none());
    }

    #[tokio::test]
    async fn connections_closed_or_talking_while_idle_are_skipped() {
        let server = server();
        let (open, _open_peer) = conn_pair(4).await;
        let open_port = open.stream.local_addr().unwrap().port();
        let (closed, closed_peer) = conn_pair(4).await;
        let (chatty, mut chatty_peer) = conn_pair(4).await;
        server.idle.push(&server, open);
        server.idle.push(&server, closed);
        server.idle.push(&server, chatty);
        drop(closed_peer);
        chatty_peer.write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n").await.unwrap();
        // Let the reactor see both.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = server.idle.checkout().unwrap();
        assert_eq!(got.stream.local_addr().unwrap().port(), open_port);
        assert!(server.idle.is_empty());
    }
}
