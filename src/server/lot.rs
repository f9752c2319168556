//! The parking lot: HTTP/1.1 connections resting between requests, plain
//! and TLS, held without a task and without a tokio registration until
//! their client sends again.
//!
//! A resting connection parked inside its own task still costs the task
//! (its future is sized for the busiest state, about 2.5 KiB) and tokio's
//! per-socket readiness record (256 bytes). Here a plain connection costs
//! one slab entry: the socket, the client's address and its [`ConnSlot`],
//! and nothing on the heap of its own (a small allocation left behind by
//! each connection would pin the allocator's pages that its busy phase
//! used); a TLS one adds its boxed session. The sockets are
//! watched by a private `mio` poller whose own descriptor is registered with
//! tokio, so one task serves the whole lot; a socket that turns readable
//! (a request, or the client closing) is handed back to tokio and served on
//! a new task. Parking and resuming each cost two `epoll_ctl` calls, paid
//! only by connections that rested for [`super::lifecycle::PARK_AFTER`].
//! A TLS connection parks with its session: its stream sits on a
//! [`ClientSocket`] whose socket can leave tokio and come back in place,
//! so the session itself never has to be taken apart.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Token};
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client_socket::ClientSocket;
use super::ConnSlot;

/// How many readiness events one poll of the lot takes.
const EVENTS_PER_POLL: usize = 256;

/// Resting connections, by slab key (which is also their poller token).
pub struct ParkingLot {
    registry: mio::Registry,
    parked: Mutex<Slab<Parked>>,
    /// Set when the lot stops: connections parked later are closed.
    closed: AtomicBool,
}

/// A TLS client connection's stream.
pub type TlsClient = tokio_rustls::server::TlsStream<ClientSocket>;

/// A resting connection's stream, out of tokio.
pub enum Resting {
    Plain(std::net::TcpStream),
    /// The session, its socket out of tokio's poller.
    Tls(Box<TlsClient>),
}

/// A connection leaving the lot: a TLS session with its socket back in
/// tokio, or a plain socket to be registered only when it must wait.
pub enum Resumed {
    /// Not registered with tokio: its client has spoken (or closed), so the
    /// first read usually finds something (see [`ClientSocket::plain`]).
    Plain(std::net::TcpStream),
    Tls(Box<TlsClient>),
}

impl Resting {
    fn raw_fd(&self) -> Option<RawFd> {
        match self {
            Resting::Plain(s) => Some(s.as_raw_fd()),
            Resting::Tls(tls) => tls.get_ref().0.unpolled_fd(),
        }
    }

    fn resume(self) -> io::Result<Resumed> {
        match self {
            Resting::Plain(s) => Ok(Resumed::Plain(s)),
            Resting::Tls(mut tls) => {
                tls.get_mut().0.register()?;
                Ok(Resumed::Tls(tls))
            }
        }
    }
}

/// One resting connection.
struct Parked {
    stream: Resting,
    peer: SocketAddr,
    slot: ConnSlot,
    /// When it is closed if its client sends nothing: `idle_timeout` after
    /// its last request, or `client_header_timeout` after it was accepted
    /// if it never sent one. Kept across visits that served no request.
    expires: Instant,
}

/// The lot's poller, owned by the task that runs the lot.
pub struct LotPoller(mio::Poll);

/// What the lot calls with a connection whose client sent something: its
/// stream, client address, slot and expiry, for parking it again.
pub type Resume = Box<dyn Fn(Resumed, SocketAddr, ConnSlot, Instant) + Send + Sync>;

impl ParkingLot {
    pub fn new() -> io::Result<(Arc<Self>, LotPoller)> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let lot = ParkingLot { registry, parked: Mutex::new(Slab::new()), closed: AtomicBool::new(false) };
        Ok((Arc::new(lot), LotPoller(poll)))
    }

    /// Park a resting connection until its client sends again or it idles
    /// out at `expires`. If it cannot be parked it is closed, which is what
    /// an idle connection may expect.
    pub fn park(&self, stream: Resting, peer: SocketAddr, slot: ConnSlot, expires: Instant) {
        let Some(fd) = stream.raw_fd() else { return };
        let Ok(mut parked) = self.parked.lock() else { return };
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let entry = parked.vacant_entry();
        // Registered under the lock: an event for this token always finds
        // this connection (or, after it left, a later one, which is then
        // woken for nothing and parks again).
        if let Err(e) = self.registry.register(&mut SourceFd(&fd), Token(entry.key()), mio::Interest::READABLE) {
            tracing::debug!(error = %e, "cannot park a connection; closing it");
            return;
        }
        entry.insert(Parked { stream, peer, slot, expires });
        tracing::trace!(%peer, "parked");
    }

    /// Whether the lot takes connections (it stops on shutdown, or if its
    /// poller fails; connections then rest in their tasks).
    pub fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    /// Take a connection out of the lot.
    fn take(&self, key: usize) -> Option<Parked> {
        let parked = self.parked.lock().ok()?.try_remove(key)?;
        // The socket stays open (it goes back to tokio), so its
        // registration here must go explicitly.
        if let Some(fd) = parked.stream.raw_fd() {
            let _ = self.registry.deregister(&mut SourceFd(&fd));
        }
        Some(parked)
    }

    /// Close the connections whose time is up.
    fn close_expired(&self) {
        let now = Instant::now();
        let expired: Vec<Parked> = {
            let Ok(mut parked) = self.parked.lock() else { return };
            let keys: Vec<usize> = parked.iter().filter(|(_, p)| p.expires <= now).map(|(key, _)| key).collect();
            keys.into_iter().filter_map(|key| parked.try_remove(key)).collect()
        };
        // Closed outside the lock, which parking threads wait on. Closing a
        // socket also removes it from the poller.
        drop(expired);
    }

    /// Close up to `n` parked connections, those that expire first (idle
    /// longest, or never sent a request) first, so that their places under
    /// `max_connections` go to new clients. nginx does the same with its
    /// idle keep-alive connections when `worker_connections` runs out (32
    /// at a time); without it, idle clients holding every place would keep
    /// new ones waiting until `idle_timeout`. Returns how many it closed.
    pub fn make_room(&self, n: usize) -> usize {
        let closed: Vec<Parked> = {
            let Ok(mut parked) = self.parked.lock() else { return 0 };
            let mut by_expiry: Vec<(Instant, usize)> = parked.iter().map(|(key, p)| (p.expires, key)).collect();
            let n = n.min(by_expiry.len());
            if n == 0 {
                return 0;
            }
            // The `n` earliest at the front, in linear time: this runs at
            // the limit, where the lot may hold every connection.
            by_expiry.select_nth_unstable(n - 1);
            by_expiry[..n].iter().filter_map(|&(_, key)| parked.try_remove(key)).collect()
        };
        // Closed outside the lock, as the expired ones.
        let count = closed.len();
        drop(closed);
        count
    }

    /// Run the lot until `shutdown`: hand connections whose client sent
    /// something to `resume`, close expired ones (looked for every `sweep`).
    /// On shutdown every parked connection is closed (they are idle).
    pub async fn run(self: Arc<Self>, poller: LotPoller, sweep: Duration, shutdown: CancellationToken, resume: Resume) {
        // SAFETY: the descriptor is the poller's own epoll descriptor, which
        // `mio::Poll` owns, keeps open and returns unchanged from `as_raw_fd`
        // for as long as it lives; the `AsyncFd` owns the poller.
        #[allow(unsafe_code)]
        let registered = unsafe { AsyncFd::register_with_interest(poller.0, tokio::io::Interest::READABLE) };
        match registered {
            Ok(poller) => self.serve(poller, sweep, &shutdown, &resume).await,
            Err(e) => {
                tracing::warn!(error = %e, "the parking lot cannot start; resting connections stay in their tasks")
            }
        }
        self.closed.store(true, Ordering::Release);
        // Closed outside the lock, like the idle ones.
        let all = self.parked.lock().map(|mut parked| std::mem::take(&mut *parked));
        drop(all);
    }

    async fn serve(
        &self,
        mut poller: AsyncFd<mio::Poll>,
        sweep_every: Duration,
        shutdown: &CancellationToken,
        resume: &Resume,
    ) {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        let mut sweep = tokio::time::interval(sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sweep.tick() => self.close_expired(),
                ready = poller.readable_mut() => {
                    let mut guard = match ready {
                        Ok(guard) => guard,
                        Err(e) => {
                            tracing::warn!(error = %e, "the parking lot stopped; resting connections stay in their tasks");
                            return;
                        }
                    };
                    loop {
                        if let Err(e) = guard.get_inner_mut().poll(&mut events, Some(Duration::ZERO)) {
                            if e.kind() == io::ErrorKind::Interrupted {
                                continue;
                            }
                            tracing::warn!(error = %e, "the parking lot stopped; resting connections stay in their tasks");
                            return;
                        }
                        let mut count = 0;
                        for event in events.iter() {
                            count += 1;
                            let Some(parked) = self.take(event.token().0) else { continue };
                            match parked.stream.resume() {
                                Ok(stream) => resume(stream, parked.peer, parked.slot, parked.expires),
                                Err(e) => tracing::debug!(error = %e, "cannot resume a parked connection"),
                            }
                        }
                        if count < EVENTS_PER_POLL {
                            // Drained: an event after this point wakes the
                            // task again (tokio keeps readiness that arrives
                            // after the guard was taken).
                            guard.clear_ready();
                            break;
                        }
                    }
                }
            }
        }
    }
}
