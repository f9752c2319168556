//! What a client connection is doing, tracked cheaply: whether bytes moved
//! lately, whether a request is in progress, whether a write is blocked and
//! whether a request is half-read. The idle timeout and the decision to
//! park a resting HTTP/1.1 connection read it; [`ActivityIo`] feeds it.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use futures_util::task::AtomicWaker;

use super::ticker::Ticker;

mod stream;
pub use stream::ActivityIo;

/// Whether a connection has moved bytes lately, and whether a request is
/// being handled on it; together they say whether it is idle. Reads and
/// writes only set a flag (no clock read on the hot path); the idle timer
/// samples and clears it a few times per timeout period.
#[derive(Debug, Default)]
pub struct Activity {
    moved: AtomicBool,
    /// The same, for the parking watcher (each watcher clears its own).
    moved_since_park_check: AtomicBool,
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
    /// A write to the client moved bytes since the send-stall check last
    /// looked. Reads do not count: an HTTP/2 client that sends frames but
    /// reads nothing must not look busy.
    wrote: AtomicBool,
    /// Bytes arrived since the last response ended (a request may be
    /// half-read).
    read_since_response: AtomicBool,
    /// The answer about to be written is the connection's last and is all
    /// in memory: cork the socket before writing it.
    cork: AtomicBool,
    /// The request in progress has been read whole (an HTTP/1.x request
    /// without a body): a read now can only find whether the client left.
    request_read: AtomicBool,
    /// A watcher ticks for the connection (see [`Activity::watch`]): only
    /// then may that read wait for a tick.
    watched: AtomicBool,
    /// That check, on a socket not in the poller yet (see
    /// [`ActivityIo`]'s `poll_read`): one of the `EOF_CHECK_*` states.
    eof_check: AtomicU8,
    /// The read waiting for the tick that makes its check due.
    eof_check_waker: AtomicWaker,
}

/// No end-of-stream check is waiting.
const EOF_CHECK_NONE: u8 = 0;
/// A check waits for the next tick.
const EOF_CHECK_WAITING: u8 = 1;
/// A tick came: the check reads the socket (and so registers it).
const EOF_CHECK_DUE: u8 = 2;

impl Activity {
    fn touch(&self) {
        self.moved.store(true, Ordering::Relaxed);
        self.moved_since_park_check.store(true, Ordering::Relaxed);
    }

    /// Nothing is in progress on the connection: no request being read or
    /// answered, nothing left to send.
    fn at_rest(&self) -> bool {
        self.requests.load(Ordering::Relaxed) == 0
            && !self.write_blocked.load(Ordering::Relaxed)
            && !self.read_since_response.load(Ordering::Relaxed)
    }

    /// Bytes of a request have arrived and the request has not begun: a
    /// request head is in progress (hyper holds part of it).
    pub(super) fn reading_head(&self) -> bool {
        self.requests.load(Ordering::Relaxed) == 0 && self.read_since_response.load(Ordering::Relaxed)
    }

    /// Watch a busy HTTP/1.1 connection at every tick of `ticker`. With
    /// `park`, resolves with [`Watched::Rested`] once it has been at rest,
    /// moving no bytes, for a whole tick (at most three after its last
    /// activity). Resolves with [`Watched::HeaderTimeout`] once a request
    /// head has been arriving for about `header_timeout` (ticks are sampled
    /// when the task runs, so within a tick early or two late) without
    /// completing, however its bytes trickle in; and with
    /// [`Watched::Idle`] once nothing has moved, and no request been in
    /// progress, for `idle_timeout` (as [`Activity::idle_for`]). Sampling a
    /// few flags at a shared tick replaces timers armed and cleared for
    /// every connection and every request.
    pub(super) async fn watch(
        &self,
        ticker: &Ticker,
        park: bool,
        header_timeout: Duration,
        idle_timeout: Duration,
        first_head_by: Option<tokio::time::Instant>,
    ) -> Watched {
        let _watching = ticker.watching();
        let _eof_checks = EofCheckTicks::start(self);
        let ticks = |d: Duration| d.as_nanos().div_ceil(ticker.period().as_nanos().max(1));
        let (head_ticks, idle_ticks) = (ticks(header_timeout), ticks(idle_timeout));
        // The head being read: requests begun before it, and ticks it has
        // been seen.
        let mut head: Option<(usize, u128)> = None;
        let mut quiet_ticks = 0u128;
        let mut stalled_ticks = 0u128;
        // The first tick may come at once: rest is measured from it.
        ticker.tick().await;
        loop {
            self.moved_since_park_check.store(false, Ordering::Relaxed);
            ticker.tick().await;
            self.eof_check_due();
            if park && !self.moved_since_park_check.load(Ordering::Relaxed) && self.at_rest() {
                return Watched::Rested;
            }
            let requests = self.requests.load(Ordering::Relaxed);
            let moved = self.moved.swap(false, Ordering::Relaxed);
            if self.send_stalled(&mut stalled_ticks, idle_ticks) {
                return Watched::SendStalled;
            }
            if moved || requests > 0 {
                quiet_ticks = 0;
            } else {
                quiet_ticks += 1;
                if quiet_ticks >= idle_ticks {
                    return Watched::Idle;
                }
            }
            let reading_head = self.reading_head();
            let begun = self.begun.load(Ordering::Relaxed);
            // A new connection's first head: `client_header_timeout` ran
            // from its first bytes (or its handshake), not from the tick
            // that first saw the head.
            if reading_head && begun == 0 && first_head_by.is_some_and(|by| tokio::time::Instant::now() >= by) {
                return Watched::HeaderTimeout;
            }
            head = match head {
                Some((before, seen)) if reading_head && before == begun => {
                    if seen >= head_ticks {
                        return Watched::HeaderTimeout;
                    }
                    Some((before, seen + 1))
                }
                _ if reading_head => Some((begun, 1)),
                _ => None,
            };
        }
    }

    /// The next answer closes the connection and will be written at once:
    /// hold its last partial segment so the FIN leaves with it (one packet
    /// less per connection, for the client too). The socket is shut down
    /// right after, which sends everything; TCP_CORK's own 200 ms ceiling
    /// bounds any other case.
    pub fn cork_next_write(&self) {
        self.cork.store(true, Ordering::Relaxed);
    }

    /// The request in progress has been read whole and is an HTTP/1.x one:
    /// until its answer is done, hyper reads the client only to see whether
    /// it left.
    pub fn request_read(&self) {
        self.request_read.store(true, Ordering::SeqCst);
    }

    /// Whether a read should wait, without touching the socket, for the
    /// next tick: it is the check for a client that left, made while the
    /// answer is on its way, the socket is not in the poller, and a watcher
    /// ticks. Most answers come before the tick, and a one-request
    /// connection is then served without ever entering the poller (two
    /// `epoll_ctl` fewer). A slower answer gets the check a tick or two
    /// late (up to 50 ms), which is when a client that left is noticed and
    /// its upstream request dropped; a client that only half-closed gets
    /// an answer that comes before the check. Registers `cx`'s waker for
    /// that tick.
    ///
    /// The reads, the ticks and the end of the answer all run on the
    /// connection's task; the orderings and the second look at
    /// `request_read` keep a wake-up from being lost even if they did not.
    fn defer_eof_check(&self, cx: &Context<'_>) -> bool {
        if !self.request_read.load(Ordering::SeqCst) || !self.watched.load(Ordering::SeqCst) {
            return false;
        }
        if self.eof_check.load(Ordering::SeqCst) == EOF_CHECK_DUE {
            return false;
        }
        self.eof_check_waker.register(cx.waker());
        self.eof_check.store(EOF_CHECK_WAITING, Ordering::SeqCst);
        // The answer may have ended, or the watcher stopped, in between:
        // then read now.
        if !self.request_read.load(Ordering::SeqCst) || !self.watched.load(Ordering::SeqCst) {
            self.eof_check.store(EOF_CHECK_NONE, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// A tick, or the watcher stopping: a waiting check is due, and its
    /// read is woken.
    fn eof_check_due(&self) {
        if self.eof_check.compare_exchange(EOF_CHECK_WAITING, EOF_CHECK_DUE, Ordering::SeqCst, Ordering::SeqCst).is_ok()
        {
            self.eof_check_waker.wake();
        }
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

    /// One sample of the send stall: counts samples in a row where a write
    /// was blocked and none moved bytes; true once there were `limit`.
    fn send_stalled(&self, stalled: &mut u128, limit: u128) -> bool {
        let wrote = self.wrote.swap(false, Ordering::Relaxed);
        if wrote || !self.write_blocked.load(Ordering::Relaxed) {
            *stalled = 0;
            return false;
        }
        *stalled += 1;
        *stalled >= limit
    }

    /// An HTTP/2 answer's body waits for hyper to take data from it.
    pub fn body_owed(&self) {
        self.owed_bodies.fetch_add(1, Ordering::Relaxed);
    }

    /// hyper polled an HTTP/2 answer's body, which was owed or not.
    pub fn body_polled(&self, was_owed: bool) {
        self.body_polls.fetch_add(1, Ordering::Relaxed);
        if was_owed {
            self.owed_bodies.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// An owed body was dropped (its stream reset or the connection gone).
    pub fn owed_body_dropped(&self) {
        self.owed_bodies.fetch_sub(1, Ordering::Relaxed);
    }

    /// One sample of the window stall: counts samples in a row where an
    /// HTTP/2 answer waited for hyper to take it and no answer body was
    /// polled (the client's flow-control windows stayed shut, though the
    /// socket would take bytes); true once there were `limit`.
    fn window_stalled(&self, stalled: &mut u32, last_polls: &mut usize, limit: u32) -> bool {
        let polls = self.body_polls.load(Ordering::Relaxed);
        if self.owed_bodies.load(Ordering::Relaxed) == 0 || polls != *last_polls {
            *last_polls = polls;
            *stalled = 0;
            return false;
        }
        *stalled += 1;
        *stalled >= limit
    }

    /// Resolves once a write to the client has been blocked, with nothing
    /// moving, for about `limit`: for a connection shutting down, whose
    /// other watchers have stopped (hyper's graceful shutdown waits for its
    /// last bytes to go out, and a client that stopped reading would keep
    /// it waiting for ever).
    /// The same for HTTP/2 answers waiting on shut flow-control windows.
    pub(super) async fn send_stalled_for(&self, limit: Duration) {
        let tick = (limit / 4).max(Duration::from_millis(10));
        let mut stalled_ticks = 0u128;
        let (mut window_ticks, mut last_polls) = (0, self.body_polls.load(Ordering::Relaxed));
        loop {
            tokio::time::sleep(tick).await;
            if self.send_stalled(&mut stalled_ticks, 4) || self.window_stalled(&mut window_ticks, &mut last_polls, 4) {
                return;
            }
        }
    }

    /// Resolves once no request has begun or been in progress on the
    /// connection for about `limit` (within a quarter of it): for HTTP/2
    /// and connections whose protocol is not known yet. Bytes alone do not
    /// count, unlike HTTP/1's [`Activity::watch`]: HTTP/2 PINGs (ours every
    /// 30 s, and the client's answers) would keep an idle connection open
    /// for ever, and so would a client trickling frames that start nothing.
    /// Resolves with [`Watched::SendStalled`] instead if a write to the
    /// client stays blocked, with nothing moving, for as long; and as idle
    /// if answers wait that long on flow-control windows the client never
    /// opens (a zero-window stall): the connection is then told GOAWAY, and
    /// closed when its streams still cannot move ([`Self::send_stalled_for`]).
    pub(super) async fn idle_for(&self, limit: Duration) -> Watched {
        let tick = (limit / 4).max(Duration::from_millis(10));
        let mut idle = Duration::ZERO;
        let mut last_begun = self.begun();
        let mut stalled_ticks = 0u128;
        let (mut window_ticks, mut last_polls) = (0, self.body_polls.load(Ordering::Relaxed));
        loop {
            tokio::time::sleep(tick).await;
            if self.send_stalled(&mut stalled_ticks, 4) {
                return Watched::SendStalled;
            }
            if self.window_stalled(&mut window_ticks, &mut last_polls, 4) {
                tracing::debug!("HTTP/2 answers waited idle_timeout for the client's flow-control window; closing");
                return Watched::Idle;
            }
            let begun = self.begun();
            if begun != last_begun || self.requests.load(Ordering::Relaxed) > 0 {
                last_begun = begun;
                idle = Duration::ZERO;
            } else {
                idle += tick;
                if idle >= limit {
                    return Watched::Idle;
                }
            }
        }
    }
}

/// Why [`Activity::watch`] resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// At rest: the connection can be parked.
    Rested,
    /// A request head took longer than `client_header_timeout`.
    HeaderTimeout,
    /// Nothing happened for `idle_timeout`.
    Idle,
    /// A write to the client has been blocked, with no byte moving, for
    /// `idle_timeout`: the client stopped reading (nginx's `send_timeout`).
    SendStalled,
}

/// Marks a connection as watched while [`Activity::watch`] runs. When the
/// watcher stops (a drain, an idle shutdown, parking), a read waiting for
/// its tick is made due and woken: no tick would come.
struct EofCheckTicks<'a>(&'a Activity);

impl<'a> EofCheckTicks<'a> {
    fn start(activity: &'a Activity) -> Self {
        activity.watched.store(true, Ordering::SeqCst);
        EofCheckTicks(activity)
    }
}

impl Drop for EofCheckTicks<'_> {
    fn drop(&mut self) {
        self.0.watched.store(false, Ordering::SeqCst);
        self.0.eof_check_due();
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
        self.0.touch();
        self.0.read_since_response.store(false, Ordering::Relaxed);
        if self.0.request_read.load(Ordering::SeqCst) {
            self.0.request_read.store(false, Ordering::SeqCst);
            // A read still waiting is hyper's for the next request head
            // now: it must go to the socket at once.
            if self.0.eof_check.swap(EOF_CHECK_NONE, Ordering::SeqCst) == EOF_CHECK_WAITING {
                self.0.eof_check_waker.wake();
            }
        }
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
