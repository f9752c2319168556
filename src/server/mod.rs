//! Listeners: binding, the accept loops with a connection limit, serving
//! each connection (plain, TLS, parked and resumed), and the graceful drain.

mod activity;
mod bind;
pub mod client_socket;
mod coalesce;
pub mod conn;
mod drive;
mod gate;
mod lazy_socket;
pub mod lot;
mod parkable;
mod service;
mod streams;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::AsyncRead;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::ListenerLabels;
use crate::proxy::{ConnInfo, Shared};
use activity::Activity;
pub use bind::{bind, bind_traffic, Listener};
use conn::{Builders, Protocol};
use lazy_socket::LazySocket;
use lot::{ParkingLot, Resting, Resumed};
use service::{http_builders, proxy_service};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} ({listener}): {source}")]
    Bind { listener: &'static str, addr: SocketAddr, source: std::io::Error },
}

/// What the accept loops share.
#[derive(Clone)]
pub struct Serving {
    /// The request path's share of the process (snapshot, metrics, log).
    pub proxy: Arc<Shared>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub permits: Arc<Semaphore>,
    pub builders: Arc<Builders>,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    /// Where resting plain connections wait; `None` if it could not start
    /// (they then rest in their tasks).
    lot: Option<Arc<ParkingLot>>,
}

/// When a visit of a connection to its task must have brought a request.
#[derive(Debug, Clone, Copy)]
pub struct Due {
    /// A connection that serves nothing by then is closed.
    expires: Instant,
    /// A new connection's first head must be whole by then, however its
    /// bytes trickle (see `Deadlines`).
    first_head_by: Option<Instant>,
}

impl Due {
    fn new_connection(first_request_by: Instant) -> Self {
        Due { expires: first_request_by, first_head_by: Some(first_request_by) }
    }

    fn resumed(expires: Instant) -> Self {
        Due { expires, first_head_by: None }
    }
}

/// A connection's place under the connection limit and in
/// `rampart_connections_active`; both are given back when it drops. It
/// travels with the connection, into the parking lot and out again.
pub struct ConnSlot {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl ConnSlot {
    fn new(permit: OwnedSemaphorePermit, gauge: Gauge) -> Self {
        gauge.inc();
        ConnSlot { _permit: permit, gauge }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Serving {
    /// Must be called within the runtime: it starts the parking lot.
    pub fn new(proxy: Arc<Shared>, shutdown: CancellationToken) -> Self {
        let settings = proxy.state.load().config.server.clone();
        let mut serving = Serving {
            proxy,
            shutdown,
            tracker: TaskTracker::new(),
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            builders: Arc::new(http_builders(&settings)),
            idle_timeout: settings.idle_timeout,
            header_timeout: settings.client_header_timeout,
            lot: None,
        };
        match ParkingLot::new() {
            Ok((lot, poller)) => {
                serving.lot = Some(Arc::clone(&lot));
                // After the lot is set: resumed connections park there again.
                let resuming = serving.clone();
                let resume: lot::Resume = Box::new(move |stream, peer, slot, expires| {
                    let this = resuming.clone();
                    match stream {
                        Resumed::Plain(stream) => resuming.tracker.spawn(async move {
                            this.resume_plain(LazySocket::new(stream), peer, slot, expires).await
                        }),
                        Resumed::Tls(tls) => resuming.tracker.spawn(async move {
                            let due = Due::resumed(expires);
                            this.serve_tls_resting(*tls, Protocol::Http1, Bytes::new(), peer, slot, due).await
                        }),
                    };
                });
                let sweep = (serving.idle_timeout.min(serving.header_timeout) / 8)
                    .clamp(Duration::from_millis(10), Duration::from_secs(5));
                let run = Arc::clone(&lot).run(poller, sweep, serving.shutdown.clone(), resume);
                serving.tracker.spawn(run);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the parking lot cannot start; resting connections stay in their tasks")
            }
        }
        serving
    }

    /// Accept plain-HTTP connections and serve the proxy on them.
    pub fn spawn_http(&self, listener: Listener, name: &'static str) {
        self.spawn_accept_loop(listener, name, |this, stream, peer, slot| async move {
            this.serve_plain(stream, peer, slot).await
        });
    }

    /// Accept connections until shutdown, within the shared connection
    /// limit, counting them in `rampart_connections_active{listener}`, and
    /// hand each one to `serve` on its own task.
    pub fn spawn_accept_loop<F, Fut>(&self, listener: Listener, name: &'static str, serve: F)
    where
        F: Fn(Serving, std::net::TcpStream, SocketAddr, ConnSlot) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        self.tracker.spawn(async move {
            let gauge = this.proxy.metrics.connections_active.get_or_create(&ListenerLabels { listener: name }).clone();
            // One wait for the drain, kept across connections: a new one per
            // select took the token's lock twice per connection.
            let shutdown = this.shutdown.clone();
            let mut cancelled = std::pin::pin!(shutdown.cancelled());
            loop {
                let permit = tokio::select! {
                    _ = &mut cancelled => return,
                    p = Arc::clone(&this.permits).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                };
                let (stream, peer) = tokio::select! {
                    _ = &mut cancelled => return,
                    r = listener.accept() => match r {
                        Ok(pair) => pair,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!(listener = name, error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                crate::busy_poll::note_work();
                let slot = ConnSlot::new(permit, gauge.clone());
                // Boxed: the task then moves a pointer around, not the
                // whole connection's state (1.3 KiB, copied about ten times
                // between here and the task's first poll).
                this.tracker.spawn(Box::pin(serve(this.clone(), stream, peer, slot)));
            }
        });
    }

    async fn serve_plain(&self, stream: std::net::TcpStream, peer: SocketAddr, slot: ConnSlot) {
        let first_request_by = Instant::now() + self.header_timeout;
        let mut stream = LazySocket::new(stream);
        let Some((protocol, first_bytes)) = self.first_bytes(&mut stream, peer).await else { return };
        let info = Arc::new(ConnInfo::new(peer, false));
        if let Some((resting, served)) =
            self.serve_io(stream, protocol, first_bytes, info, Due::new_connection(first_request_by)).await
        {
            self.park(resting, peer, slot, self.rest_until(served, first_request_by));
        }
    }

    /// Wait for the client's first bytes and tell the protocol from them.
    /// Nothing of hyper's exists until the client sends something; one that
    /// sends nothing within `client_header_timeout` is cut off like a slow
    /// header. `None`: the connection is done (closed, failed, timed out, or
    /// the process drains).
    async fn first_bytes<S: AsyncRead + Unpin>(&self, stream: &mut S, peer: SocketAddr) -> Option<(Protocol, Bytes)> {
        let sniffed = tokio::select! {
            _ = self.shutdown.cancelled() => return None,
            r = Box::pin(tokio::time::timeout(self.header_timeout, conn::sniff(stream))) => r,
        };
        match sniffed {
            Ok(Ok(first)) => first,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "connection failed before a request");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "no request before the header timeout");
                None
            }
        }
    }

    /// Serve a plain HTTP/1.1 connection again after it left the parking lot.
    async fn resume_plain(&self, stream: LazySocket, peer: SocketAddr, slot: ConnSlot, expires: Instant) {
        let info = Arc::new(ConnInfo::new(peer, false));
        let served = self.serve_io(stream, Protocol::Http1, bytes::Bytes::new(), info, Due::resumed(expires)).await;
        if let Some((resting, served)) = served {
            self.park(resting, peer, slot, self.rest_until(served, expires));
        }
    }

    fn park(&self, stream: LazySocket, peer: SocketAddr, slot: ConnSlot, expires: Instant) {
        let Some(lot) = &self.lot else { return };
        match stream.into_std() {
            Ok(stream) => lot.park(Resting::Plain(stream), peer, slot, expires),
            Err(e) => tracing::debug!(error = %e, "cannot park a connection; closing it"),
        }
    }

    /// Serve a TLS connection over its session, parking it whenever it
    /// rests. Its first request is due within `client_header_timeout`.
    ///
    /// A client that offered no ALPN protocol (wrk, many HTTP libraries and
    /// monitoring agents) is told apart by its first bytes, as on plain
    /// TCP: HTTP/1.1 then gets our own builder, header timeout and parking,
    /// not hyper-util's auto builder, which never parks.
    pub async fn serve_tls_session(
        &self,
        mut tls: lot::TlsClient,
        protocol: Protocol,
        peer: SocketAddr,
        slot: ConnSlot,
    ) {
        let first_request_by = Instant::now() + self.header_timeout;
        let (protocol, first_bytes) = match protocol {
            Protocol::Detect => match self.first_bytes(&mut tls, peer).await {
                Some(first) => first,
                None => return,
            },
            known => (known, Bytes::new()),
        };
        self.serve_tls_resting(tls, protocol, first_bytes, peer, slot, Due::new_connection(first_request_by)).await;
    }

    /// The same, for a connection that must send a request by `due`
    /// (it may come back from the parking lot).
    async fn serve_tls_resting(
        &self,
        mut tls: lot::TlsClient,
        protocol: Protocol,
        first_bytes: Bytes,
        peer: SocketAddr,
        slot: ConnSlot,
        due: Due,
    ) {
        let expires = due.expires;
        let info = Arc::new(ConnInfo::new(peer, true));
        let served = self.serve_io(tls, protocol, first_bytes, info, due).await;
        let Some((resting, served)) = served else { return };
        tls = resting;
        let Some(lot) = &self.lot else { return };
        // A TLS 1.3 client that has not asked for anything yet still has
        // its session ticket held; it goes before the connection parks.
        if !tls.get_mut().0.send_held(expires, &self.shutdown).await {
            return;
        }
        match tls.get_mut().0.detach() {
            Ok(()) => lot.park(Resting::Tls(Box::new(tls)), peer, slot, self.rest_until(served, expires)),
            Err(e) => tracing::debug!(error = %e, "cannot park a connection; closing it"),
        }
    }

    /// Until when a connection parking now may wait for its next request:
    /// `idle_timeout` (counted from the end of its last request, which was
    /// [`conn::PARK_AFTER`] ago) if it served one on this visit, else the
    /// deadline it already had. Bytes that brought no request (a TLS client
    /// trickling a record) do not buy time.
    fn rest_until(&self, served: bool, expires: Instant) -> Instant {
        if served {
            Instant::now() + self.idle_timeout.saturating_sub(conn::PARK_AFTER)
        } else {
            expires
        }
    }

    /// Serve the proxy over any accepted stream (plain TCP, or TLS). Returns
    /// the stream when it rests and should go to the parking lot, with
    /// whether it served a request this time. Resting in its task instead,
    /// it is closed at `expires` unless it serves a request.
    pub async fn serve_io<I: conn::ClientIo>(
        &self,
        io: I,
        protocol: Protocol,
        first_bytes: bytes::Bytes,
        info: Arc<ConnInfo>,
        due: Due,
    ) -> Option<(I, bool)> {
        let activity = Arc::new(Activity::default());
        let service = proxy_service(Arc::clone(&self.proxy), Arc::clone(&info), Arc::clone(&activity));
        let ctx = conn::ConnCtx {
            activity: Arc::clone(&activity),
            builders: &self.builders,
            shutdown: &self.shutdown,
            idle_timeout: self.idle_timeout,
            header_timeout: self.header_timeout,
            rest_deadline: due.expires,
            first_head_by: due.first_head_by,
            lot: self.lot.as_ref().is_some_and(|lot| lot.is_open()),
        };
        let Some(resting) = conn::serve(io, protocol, first_bytes, service, ctx).await else {
            if let Some(tunnel) = info.take_tunnel() {
                // Still holding the connection's slot (the caller's).
                tokio::select! {
                    _ = tunnel => {}
                    _ = self.shutdown.cancelled() => tracing::debug!("closing an upgraded connection for the drain"),
                }
            }
            return None;
        };
        // A fresh `Activity` per visit: any request begun was this visit's.
        Some((resting, activity.begun() != 0))
    }

    /// Stop accepting, let connections finish what they are doing, and wait
    /// up to `timeout` for them. Returns whether everything drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.proxy.set_ready(false);
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(timeout, self.tracker.wait()).await.is_ok()
    }
}
