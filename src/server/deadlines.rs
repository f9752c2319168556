//! Coarse deadlines for client connections: one clock for all of them, and
//! a wake-up per connection only when one of its own deadlines is due.
//!
//! A connection's watcher (`activity/watch.rs`) sets at most one deadline
//! at a time here: the earliest of its header, rest, idle, send-stall and
//! departed-client checks. One task ticks every `resolution` while any
//! connection is served: it advances the coarse clock and wakes the
//! connections whose deadline has passed, and no other.
//!
//! Why not a tokio timer per connection: an HTTP/1.1 connection needs a
//! deadline for its header timeout, then one for its rest, again for every
//! request. tokio's timer wheel makes each the driver's earliest more often
//! than not on a loaded single thread, and re-arming the driver then costs
//! an eventfd write (about one per three short connections, measured in
//! `benches/README.md`). Here a deadline is a map entry under an
//! uncontended lock, and the clock the connections stamp their activity
//! with is one atomic load, not a clock read per read and write. Pingora's
//! `fast_timeout` makes the same trade. The deadlines are filed on a
//! timer wheel (`wheel.rs`).

mod wheel;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A time on a [`Deadlines`] clock: milliseconds since it started.
pub type Millis = u64;

/// No deadline.
pub const NEVER: Millis = Millis::MAX;

/// One deadline set with [`Deadlines::set`], to cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub(super) id: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Deadlines {
    resolution: Duration,
    epoch: Instant,
    /// The coarse clock: milliseconds since `epoch`, as of the last tick.
    now: AtomicU64,
    /// When the clock last caught up after lagging (its task waited its
    /// turn, or the process was stopped): see [`Deadlines::caught_up_at`].
    caught_up_at: AtomicU64,
    /// Who to wake, by when.
    entries: Mutex<wheel::Wheel>,
    /// Connections being served: the clock ticks while there are any.
    served: AtomicUsize,
    first_served: tokio::sync::Notify,
}

impl Deadlines {
    pub fn new(resolution: Duration) -> Arc<Self> {
        Arc::new(Deadlines {
            resolution,
            epoch: Instant::now(),
            now: AtomicU64::new(0),
            caught_up_at: AtomicU64::new(0),
            entries: Mutex::new(wheel::Wheel::new(Millis::try_from(resolution.as_millis()).unwrap_or(NEVER))),
            served: AtomicUsize::new(0),
            first_served: tokio::sync::Notify::new(),
        })
    }

    /// The coarse time: at most one `resolution` behind while a connection
    /// is served (see [`Deadlines::serving`]).
    pub fn now(&self) -> Millis {
        self.now.load(Ordering::Relaxed)
    }

    /// How far the coarse clock may lag behind the present, and so how
    /// much earlier than it says a stamp taken from it may be.
    pub fn resolution(&self) -> Millis {
        Millis::try_from(self.resolution.as_millis()).unwrap_or(NEVER)
    }

    /// `t` on this clock.
    pub fn at(&self, t: Instant) -> Millis {
        Millis::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(NEVER)
    }

    /// Bring the coarse clock to the present (one clock read).
    fn refresh(&self) -> Millis {
        let now = self.at(Instant::now());
        let was = self.now.fetch_max(now, Ordering::Relaxed);
        if now > was.saturating_add(2 * self.resolution()) {
            self.caught_up_at.fetch_max(now, Ordering::Relaxed);
        }
        now.max(was)
    }

    /// When the clock last jumped ahead by more than two ticks. A stamp
    /// taken from it before then may be late by up to the jump (the work it
    /// stamps happened while the clock stood still), so a judgement of how
    /// long something has been quiet counts from here at the earliest.
    pub fn caught_up_at(&self) -> Millis {
        self.caught_up_at.load(Ordering::Relaxed)
    }

    /// Wake `waker` once the clock reaches `at` (at once if it has).
    pub fn set(&self, at: Millis, waker: Waker) -> Option<Entry> {
        if at <= self.now() {
            waker.wake();
            return None;
        }
        let id = self.entries.lock().unwrap_or_else(PoisonError::into_inner).insert(at, waker);
        Some(Entry { id })
    }

    /// Forget a deadline (a no-op once it has fired).
    pub fn cancel(&self, entry: Entry) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).remove(entry.id);
    }

    /// Count a connection as served until the guard drops: the clock ticks
    /// while any is. The first one brings the clock to the present at once.
    pub fn serving(&self) -> Serving<'_> {
        if self.served.fetch_add(1, Ordering::AcqRel) == 0 {
            self.refresh();
            self.first_served.notify_one();
        }
        Serving(self)
    }

    /// Tick while connections are served, and until the last one is gone
    /// once `shutdown` is cancelled; asleep while none is.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.resolution);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while self.served.load(Ordering::Acquire) == 0 {
                if shutdown.is_cancelled() {
                    return;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = self.first_served.notified() => {}
                }
                interval.reset();
            }
            interval.tick().await;
            self.fire(self.refresh());
        }
    }

    /// Wake everyone whose deadline is `now` or before.
    fn fire(&self, now: Millis) {
        let mut due = Vec::new();
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).expire(now, &mut due);
        for waker in due {
            waker.wake();
        }
    }
}

/// A connection counted as served by its [`Deadlines`] while it lives.
pub struct Serving<'a>(&'a Deadlines);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0.served.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    const RESOLUTION: Duration = Duration::from_millis(10);

    struct Flag(AtomicBool);
    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn flag() -> (Arc<Flag>, Waker) {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        (Arc::clone(&flag), Waker::from(flag))
    }

    /// A clock with its task running, the token that stops it, and the task.
    fn running() -> (Arc<Deadlines>, CancellationToken, tokio::task::JoinHandle<()>) {
        let deadlines = Deadlines::new(RESOLUTION);
        let stop = CancellationToken::new();
        let run = tokio::spawn(Arc::clone(&deadlines).run(stop.clone()));
        (deadlines, stop, run)
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_wakes_its_owner_within_a_tick_after_it_and_not_before() {
        let (deadlines, stop, run) = running();
        let serving = deadlines.serving();
        let (early, early_waker) = flag();
        let (late, late_waker) = flag();
        let (cancelled, cancelled_waker) = flag();
        deadlines.set(deadlines.now() + 100, early_waker);
        deadlines.set(deadlines.now() + 300, late_waker);
        let entry = deadlines.set(deadlines.now() + 100, cancelled_waker).unwrap();
        deadlines.cancel(entry);
        tokio::time::sleep(Duration::from_millis(95)).await;
        assert!(!early.0.load(Ordering::SeqCst), "woken before its deadline");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(early.0.load(Ordering::SeqCst), "not woken within a tick of its deadline");
        assert!(!late.0.load(Ordering::SeqCst) && !cancelled.0.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(late.0.load(Ordering::SeqCst));
        assert!(!cancelled.0.load(Ordering::SeqCst), "a cancelled deadline fired");
        drop(serving);
        stop.cancel();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_sleeps_while_nothing_is_served_and_is_current_once_something_is() {
        let (deadlines, stop, run) = running();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(deadlines.now(), 0, "the clock ticked with nothing served");
        let serving = deadlines.serving();
        assert!(deadlines.now() >= 5000, "the first connection saw a stale clock: {}", deadlines.now());
        // A deadline already passed wakes at once.
        let (passed, passed_waker) = flag();
        assert_eq!(deadlines.set(deadlines.now(), passed_waker), None);
        assert!(passed.0.load(Ordering::SeqCst));
        drop(serving);
        stop.cancel();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_that_lagged_says_when_it_caught_up() {
        let (deadlines, stop, run) = running();
        let serving = deadlines.serving();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ticking = deadlines.caught_up_at();
        assert!(ticking < 20, "ticking one resolution at a time is no catch-up: {ticking}");
        // Its task held up (a busy thread, a stopped process): the next
        // tick jumps, and says so.
        tokio::time::advance(Duration::from_millis(300)).await;
        tokio::time::sleep(RESOLUTION).await;
        assert!(deadlines.caught_up_at() >= 400, "{}", deadlines.caught_up_at());
        drop(serving);
        stop.cancel();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn on_shutdown_the_clock_ticks_until_the_last_connection_is_gone() {
        let (deadlines, stop, run) = running();
        let serving = deadlines.serving();
        stop.cancel();
        let (woken, waker) = flag();
        deadlines.set(deadlines.now() + 50, waker);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(woken.0.load(Ordering::SeqCst), "a draining connection's deadline did not fire");
        assert!(!run.is_finished());
        drop(serving);
        run.await.unwrap();
    }
}
