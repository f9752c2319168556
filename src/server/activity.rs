//! What a client connection is doing, tracked cheaply: when bytes last
//! moved, whether a request is in progress, whether a write is blocked and
//! whether a request head is half-read. An HTTP/1.1 connection's watcher
//! (`watch.rs`) reads it to enforce the header, idle and send timeouts and
//! to decide when a resting connection parks; HTTP/2 and closing
//! connections are sampled instead (`sampled.rs`); [`ActivityIo`]
//! (`stream.rs`) feeds it. A plain HTTP/1.1 connection's check for a
//! client that left while its answer is on its way is `departure.rs`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::task::AtomicWaker;

use super::deadlines::{Deadlines, Entry, Millis, NEVER};

mod departure;
mod sampled;
mod stream;
mod watch;
pub use departure::Departure;
pub use stream::ActivityIo;
pub use watch::Watched;

/// How near a stopped watcher's deadline is left to fire rather than
/// cancelled (see [`Activity::cancel_watcher_deadline`]).
const KEEP_NEAR_DEADLINE: Millis = 2 * departure::CHECK_AFTER;

/// Whether a connection has moved bytes lately, and whether a request is
/// being handled on it; together they say whether it is idle. Reads and
/// writes stamp the time from the shared coarse clock (one atomic load, no
/// clock read on the hot path); the watcher compares the stamps with its
/// deadlines when one is due.
#[derive(Debug)]
pub struct Activity {
    clock: Arc<Deadlines>,
    /// When bytes last moved, either way.
    last_moved: AtomicU64,
    /// When the request head being read began to arrive.
    head_began: AtomicU64,
    /// When a write to the client last moved bytes. Reads do not count: an
    /// HTTP/2 client that sends frames but reads nothing must not look busy.
    last_wrote: AtomicU64,
    /// When the write that is blocked now first blocked.
    blocked_since: AtomicU64,
    requests: AtomicUsize,
    /// HTTP/2 answers whose body hyper has not polled since it last could
    /// take from it (never polled yet, or it just handed out data): a
    /// client that opens no flow-control window keeps them so for ever.
    owed_bodies: AtomicUsize,
    /// Polls of HTTP/2 answer bodies (wrapping): while it moves, the
    /// client's windows do.
    body_polls: AtomicUsize,
    /// Requests begun on the connection, ever (wrapping): tells one request
    /// head being read from the next.
    begun: AtomicUsize,
    /// The last write to the client could not complete: hyper still holds
    /// bytes to send.
    write_blocked: AtomicBool,
    /// A write to the client moved bytes since the sampling send-stall
    /// check (HTTP/2, closing connections) last looked.
    wrote: AtomicBool,
    /// Bytes arrived since the last response ended (a request may be
    /// half-read).
    read_since_response: AtomicBool,
    /// The answer about to be written is the connection's last and is all
    /// in memory: cork the socket before writing it.
    cork: AtomicBool,
    /// A watcher runs for the connection (see [`Activity::watch`]): only
    /// then do events set deadlines, a departed-client check's included.
    watched: AtomicBool,
    /// The departed-client check of the request in progress
    /// (`departure.rs`): one of its `CHECK_*` states.
    departure: AtomicU8,
    /// When a waiting check is due.
    departure_at: AtomicU64,
    /// The connection to wake when it is.
    departure_waker: AtomicWaker,
    /// The watcher, woken by its deadline.
    watcher: AtomicWaker,
    /// The watcher's deadline on `clock` ([`NEVER`]: none), and its entry.
    wake_at: AtomicU64,
    wake_entry: AtomicU64,
    /// The watcher's limits, for the events that start a deadline: how
    /// long a head may take, how long a connection may idle, and whether
    /// a resting one parks.
    header_limit: AtomicU64,
    /// On a new connection, when its first head must be whole.
    first_head_by: AtomicU64,
    idle_limit: AtomicU64,
    rest_limit: AtomicU64,
    parks: AtomicBool,
}

fn millis(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(NEVER)
}

impl Activity {
    pub fn new(clock: Arc<Deadlines>) -> Self {
        let now = clock.now();
        Activity {
            clock,
            last_moved: AtomicU64::new(now),
            head_began: AtomicU64::new(now),
            last_wrote: AtomicU64::new(now),
            blocked_since: AtomicU64::new(now),
            requests: AtomicUsize::new(0),
            owed_bodies: AtomicUsize::new(0),
            body_polls: AtomicUsize::new(0),
            begun: AtomicUsize::new(0),
            write_blocked: AtomicBool::new(false),
            wrote: AtomicBool::new(false),
            read_since_response: AtomicBool::new(false),
            cork: AtomicBool::new(false),
            watched: AtomicBool::new(false),
            departure: AtomicU8::new(departure::CHECK_NONE),
            departure_at: AtomicU64::new(NEVER),
            departure_waker: AtomicWaker::new(),
            watcher: AtomicWaker::new(),
            wake_at: AtomicU64::new(NEVER),
            wake_entry: AtomicU64::new(0),
            header_limit: AtomicU64::new(NEVER),
            first_head_by: AtomicU64::new(NEVER),
            idle_limit: AtomicU64::new(NEVER),
            rest_limit: AtomicU64::new(NEVER),
            parks: AtomicBool::new(false),
        }
    }

    /// Bytes moved: stamped with the coarse time, which is returned.
    fn touch(&self) -> Millis {
        let now = self.clock.now();
        self.last_moved.store(now, Ordering::Relaxed);
        now
    }

    /// Bytes of the client's arrived. The first after an answer (or on a
    /// new connection) begin a request head, which has
    /// `client_header_timeout` from now to be whole.
    fn bytes_read(self: &Arc<Self>) {
        let now = self.touch();
        if self.read_since_response.load(Ordering::Relaxed) {
            return;
        }
        self.read_since_response.store(true, Ordering::Relaxed);
        if self.requests.load(Ordering::Relaxed) == 0 {
            self.head_began.store(now, Ordering::Relaxed);
            if self.watched.load(Ordering::Relaxed) {
                self.wake_watcher_at(self.head_due_by(now));
            }
        }
    }

    /// When a request head that began at `began` must be whole: within
    /// `client_header_timeout`, and a new connection's first head by the
    /// time its first bytes (or its handshake) set.
    fn head_due_by(&self, began: Millis) -> Millis {
        let by = began.saturating_add(self.header_limit.load(Ordering::Relaxed));
        if self.begun() == 0 {
            by.min(self.first_head_by.load(Ordering::Relaxed))
        } else {
            by
        }
    }

    /// A write to the client moved bytes.
    fn bytes_written(&self) {
        let now = self.touch();
        self.last_wrote.store(now, Ordering::Relaxed);
        self.wrote.store(true, Ordering::Relaxed);
    }

    /// An event started a deadline `limit` from `now`: the watcher must
    /// look then, if it would not anyway.
    fn deadline_from_event(self: &Arc<Self>, now: Millis, limit: &AtomicU64) {
        if self.watched.load(Ordering::Relaxed) {
            self.wake_watcher_at(now.saturating_add(limit.load(Ordering::Relaxed)));
        }
    }

    /// Something that kept the connection from resting ended (its last
    /// answer, a blocked write): from `now` it may park, or idle out.
    fn rest_may_begin(self: &Arc<Self>, now: Millis) {
        let rest = if self.parks.load(Ordering::Relaxed) { &self.rest_limit } else { &self.idle_limit };
        self.deadline_from_event(now, rest);
    }

    /// Have the watcher look again at `at`, unless it looks sooner.
    fn wake_watcher_at(self: &Arc<Self>, at: Millis) {
        let pending = self.wake_at.load(Ordering::Relaxed);
        if at >= pending {
            return;
        }
        if pending != NEVER {
            self.clock.cancel(Entry { id: self.wake_entry.load(Ordering::Relaxed) });
        }
        match self.clock.set(at, std::task::Waker::from(Arc::clone(self))) {
            Some(entry) => {
                self.wake_at.store(at, Ordering::Relaxed);
                self.wake_entry.store(entry.id, Ordering::Relaxed);
            }
            None => self.wake_at.store(NEVER, Ordering::Relaxed),
        }
    }

    /// Forget the watcher's deadline (it stopped).
    /// A deadline within [`KEEP_NEAR_DEADLINE`] is left to fire (it wakes
    /// nobody then): cancelling it would cost a connection that ends before
    /// it (most one-request connections, whose departed-client check set
    /// one) more than the entry costs while it waits.
    fn cancel_watcher_deadline(&self) {
        let pending = self.wake_at.swap(NEVER, Ordering::Relaxed);
        if pending != NEVER && pending > self.clock.now().saturating_add(KEEP_NEAR_DEADLINE) {
            self.clock.cancel(Entry { id: self.wake_entry.load(Ordering::Relaxed) });
        }
    }

    /// Nothing is in progress on the connection: no request being read or
    /// answered, nothing left to send.
    pub(in crate::server) fn at_rest(&self) -> bool {
        self.requests.load(Ordering::Relaxed) == 0
            && !self.write_blocked.load(Ordering::Relaxed)
            && !self.read_since_response.load(Ordering::Relaxed)
    }

    /// Bytes of a request have arrived and the request has not begun: a
    /// request head is in progress (hyper holds part of it).
    pub(super) fn reading_head(&self) -> bool {
        self.requests.load(Ordering::Relaxed) == 0 && self.read_since_response.load(Ordering::Relaxed)
    }

    /// The next answer closes the connection and will be written at once:
    /// hold its last partial segment so the FIN leaves with it (one packet
    /// less per connection, for the client too). The socket is shut down
    /// right after, which sends everything; TCP_CORK's own 200 ms ceiling
    /// bounds any other case.
    pub fn cork_next_write(&self) {
        self.cork.store(true, Ordering::Relaxed);
    }

    /// Mark a request as in progress until the guard drops.
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.begun.fetch_add(1, Ordering::Relaxed);
        RequestGuard(Arc::clone(self))
    }

    /// How many requests have begun on the connection (wrapping): a change
    /// means it did real work, so its idle time starts over. Bytes alone do
    /// not count: a TLS client trickling one byte of a record per idle
    /// period would otherwise keep its connection forever.
    pub fn begun(&self) -> usize {
        self.begun.load(Ordering::Relaxed)
    }
}

pub struct RequestGuard(Arc<Activity>);

impl RequestGuard {
    pub fn activity(&self) -> &Activity {
        &self.0
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let now = self.0.touch();
        self.0.read_since_response.store(false, Ordering::Relaxed);
        self.0.departure_check_ends();
        if self.0.requests.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.rest_may_begin(now);
        }
    }
}

impl std::task::Wake for Activity {
    /// The watcher's deadline came.
    fn wake(self: Arc<Self>) {
        self.watcher.wake();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.watcher.wake();
    }
}

#[cfg(test)]
impl Default for Activity {
    /// On a clock of its own (nothing ticks it unless a test runs it).
    fn default() -> Self {
        Activity::new(Deadlines::new(Duration::from_millis(10)))
    }
}

#[cfg(test)]
mod tests;
