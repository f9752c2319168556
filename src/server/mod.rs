//! Listeners: binding, the accept loops with a connection limit, the
//! parking lot's start, and the graceful drain. Each connection's life,
//! from accept to close, is in `lifecycle.rs`.

mod activity;
mod bind;
pub mod client_socket;
mod coalesce;
pub mod conn;
mod deadlines;
mod drive;
pub mod framing;
mod lifecycle;
mod linger;
pub mod lot;
mod parkable;
mod sendfile;
mod service;
mod streams;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::ListenerLabels;
use crate::proxy::Shared;
pub use bind::{bind, bind_traffic, Listener};
use conn::Builders;
use deadlines::Deadlines;
use lot::ParkingLot;
use service::http_builders;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} ({listener}): {source}")]
    Bind { listener: &'static str, addr: SocketAddr, source: std::io::Error },
}

/// How coarse connection deadlines are: each fires within this after its
/// time (see `deadlines.rs`). The grain of [`lifecycle::PARK_AFTER`] and of
/// the held departed-client read: a finer one would wake the process more
/// often for nothing those need.
const DEADLINE_RESOLUTION: Duration = lifecycle::PARK_AFTER;

/// How many idle connections the parking lot closes at once when a new
/// connection finds `max_connections` reached (nginx drains 32 too).
const MAKE_ROOM_BATCH: usize = 32;

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
    /// `max_header_bytes`, which the request framing guard holds reads to.
    pub max_header_bytes: usize,
    /// The coarse clock connections stamp their activity with, and their
    /// deadlines.
    deadlines: Arc<Deadlines>,
    /// Where resting plain connections wait; `None` if it could not start
    /// (they then rest in their tasks).
    lot: Option<Arc<ParkingLot>>,
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
            max_header_bytes: settings.max_header_bytes,
            deadlines: Deadlines::new(DEADLINE_RESOLUTION),
            lot: None,
        };
        serving.tracker.spawn(Arc::clone(&serving.deadlines).run(serving.shutdown.clone()));
        match ParkingLot::new() {
            Ok((lot, poller)) => {
                serving.lot = Some(Arc::clone(&lot));
                // After the lot is set: resumed connections park there again.
                let resuming = serving.clone();
                let resume: lot::Resume =
                    Box::new(move |stream, peer, slot, expires| resuming.resume(stream, peer, slot, expires));
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
                // Accept, then take a place under the limit: a place taken
                // first would be held by every listener waiting in accept,
                // and with http and https one connection fewer was served
                // (none at all with max_connections = 1). At the limit, a
                // listener holds the one connection it accepted until a
                // place frees; the rest wait in the kernel's backlog.
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
                let permit = match Arc::clone(&this.permits).try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        // At the limit: idle connections in the parking lot
                        // give up their places (`ParkingLot::make_room`).
                        let made = this.lot.as_ref().map_or(0, |lot| lot.make_room(MAKE_ROOM_BATCH));
                        if made > 0 {
                            tracing::warn!(
                                listener = name,
                                closed = made,
                                "max_connections reached; closed idle keep-alive connections for new ones"
                            );
                        }
                        tokio::select! {
                            _ = &mut cancelled => return,
                            p = Arc::clone(&this.permits).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                        }
                    }
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

    /// Stop accepting, let connections finish what they are doing, and wait
    /// up to `timeout` for them. Returns whether everything drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.proxy.set_ready(false);
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(timeout, self.tracker.wait()).await.is_ok()
    }
}
