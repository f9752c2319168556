//! Busy polling (`[server] busy_poll`, off by default): after a runtime
//! worker wakes, keep it polling for I/O, without sleeping, until nothing
//! has happened for the configured window.
//!
//! Why: when the proxy needs less CPU than its clients and upstreams, it
//! sleeps in `epoll_wait` between events, and each event must wake it. On a
//! VM that wake-up (an IPI to an idle vCPU) is slow and is charged to the
//! sender: the client or upstream on another core pays for it. Polling a
//! little longer catches the next event awake, at the price of CPU that
//! would have been idle. HAProxy's `busy-polling` does the same without a
//! bound; this one stops after `window` of quiet, so an idle proxy sleeps.
//!
//! How: one task that yields in a loop. A yielding task makes tokio poll
//! its I/O driver with a zero timeout before running it again, so while
//! the task spins the worker sees new events without sleeping. The
//! listeners and the request service count what they do ([`note_work`]);
//! when a whole window passes with no count, the task waits until a worker
//! next wakes (`on_unpark`, tokio's `on_thread_unpark` hook). Work is
//! flagged, not inferred from timing, so however slow a driver poll is,
//! an idle proxy stops spinning after one window. Timer wake-ups (the
//! connections' 25 ms tick, the allocator's 250 ms one) each start a
//! window too: at `"200us"` that is under 1% of a core.
//!
//! One worker only (`workers = 1`, checked by the config): with several,
//! tokio lets one of them at a time own the I/O driver, and a parked
//! worker holds it while it sleeps, so a spinning one would poll nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Whether a busy poller runs: without one, [`note_work`] only reads this.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// Set by [`note_work`], cleared by the spinner that sees it.
static WORKED: AtomicBool = AtomicBool::new(false);

/// Flag a unit of work (a connection accepted, a request begun): a busy
/// poller that sees it keeps spinning. A read, and a write only when the
/// flag was clear.
pub fn note_work() {
    if ENABLED.load(Ordering::Relaxed) && !WORKED.load(Ordering::Relaxed) {
        WORKED.store(true, Ordering::Relaxed);
    }
}

/// The spinner and the hook that restarts it.
#[derive(Debug)]
pub struct BusyPoll {
    window: Duration,
    woken: Notify,
    /// The spinner is waiting for a wake-up (so `on_unpark` has something
    /// to do); it saves a `notify_one` per driver poll while spinning.
    waiting: AtomicBool,
}

impl BusyPoll {
    /// `None` when `window` is zero: busy polling is off. Otherwise work
    /// is flagged from now on.
    pub fn new(window: Duration) -> Option<Arc<Self>> {
        if window.is_zero() {
            return None;
        }
        ENABLED.store(true, Ordering::Relaxed);
        Some(Arc::new(BusyPoll { window, woken: Notify::new(), waiting: AtomicBool::new(false) }))
    }

    /// A worker woke from sleep: spin again. Called by tokio on the worker
    /// thread, so it must stay cheap and never block.
    pub fn on_unpark(&self) {
        if self.waiting.swap(false, Ordering::AcqRel) {
            self.woken.notify_one();
        }
    }

    /// Spin for as long as work keeps arriving within `window`, then wait
    /// for the next wake-up; forever (the runtime drops it at shutdown).
    pub async fn run(self: Arc<Self>) {
        loop {
            spin_while_busy(self.window, &WORKED).await;
            let woken = self.woken.notified();
            self.waiting.store(true, Ordering::Release);
            woken.await;
        }
    }
}

/// Yield until `window` passes without `worked` being set (it is cleared
/// each time it is seen). Returns how many times it yielded (for the tests).
async fn spin_while_busy(window: Duration, worked: &AtomicBool) -> u64 {
    let mut yields = 0;
    let mut last_work = Instant::now();
    loop {
        tokio::task::yield_now().await;
        yields += 1;
        let now = Instant::now();
        if worked.load(Ordering::Relaxed) && worked.swap(false, Ordering::Relaxed) {
            last_work = now;
        } else if now.duration_since(last_work) >= window {
            return yields;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_off() {
        assert!(BusyPoll::new(Duration::ZERO).is_none());
        assert!(BusyPoll::new(Duration::from_micros(50)).is_some());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn spinning_ends_once_a_window_passes_without_work() {
        // Slow polls (a busy neighbour task) are not work: only the flag is.
        let neighbour = tokio::spawn(async {
            loop {
                std::thread::sleep(Duration::from_micros(200));
                tokio::task::yield_now().await;
            }
        });
        let worked = AtomicBool::new(false);
        let started = Instant::now();
        let spin = tokio::time::timeout(Duration::from_secs(10), spin_while_busy(Duration::from_millis(20), &worked));
        let yields = spin.await.expect("the spin did not end");
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert!(yields >= 1);
        neighbour.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn flagged_work_keeps_it_spinning() {
        // Work flagged every millisecond, twenty times, against a 200 ms
        // window: the spin outlasts the work and ends one window after it.
        let worked = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&worked);
        let worker = tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                flag.store(true, Ordering::Relaxed);
            }
        });
        let spin = tokio::time::timeout(Duration::from_secs(10), spin_while_busy(Duration::from_millis(200), &worked));
        spin.await.expect("the spin did not end");
        assert!(worker.is_finished(), "the spin stopped while work was still arriving");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_wake_up_restarts_a_waiting_spinner() {
        let poll = BusyPoll::new(Duration::from_micros(100)).unwrap();
        let spinner = tokio::spawn(Arc::clone(&poll).run());
        let waiting = || {
            let poll = Arc::clone(&poll);
            async move {
                while !poll.waiting.load(Ordering::Acquire) {
                    tokio::task::yield_now().await;
                }
            }
        };
        // It spins out its window and waits; a wake-up sets it spinning
        // again, and it waits again after another window.
        tokio::time::timeout(Duration::from_secs(10), waiting()).await.expect("it never waited");
        poll.on_unpark();
        tokio::task::yield_now().await;
        tokio::time::timeout(Duration::from_secs(10), waiting()).await.expect("it did not wait again");
        assert!(!spinner.is_finished());
        spinner.abort();
    }
}
