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
//! counted, not inferred from timing, so however slow a driver poll is,
//! an idle proxy stops spinning after one window.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Connections accepted and requests begun, process-wide.
static WORK: AtomicU64 = AtomicU64::new(0);

/// Count a unit of work (a connection accepted, a request begun): a busy
/// poller that sees the count move keeps spinning. A relaxed increment.
pub fn note_work() {
    WORK.fetch_add(1, Ordering::Relaxed);
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
    /// `None` when `window` is zero: busy polling is off.
    pub fn new(window: Duration) -> Option<Arc<Self>> {
        (!window.is_zero())
            .then(|| Arc::new(BusyPoll { window, woken: Notify::new(), waiting: AtomicBool::new(false) }))
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
            spin_while_busy(self.window, &WORK).await;
            let woken = self.woken.notified();
            self.waiting.store(true, Ordering::Release);
            woken.await;
        }
    }
}

/// Yield until `window` passes without `work` moving. Returns how many
/// times it yielded (for the tests).
async fn spin_while_busy(window: Duration, work: &AtomicU64) -> u64 {
    let mut yields = 0;
    let mut seen = work.load(Ordering::Relaxed);
    let mut last_work = Instant::now();
    loop {
        tokio::task::yield_now().await;
        yields += 1;
        let now = Instant::now();
        let count = work.load(Ordering::Relaxed);
        if count != seen {
            (seen, last_work) = (count, now);
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
        // Slow polls (a busy neighbour task) are not work: only counts are.
        let neighbour = tokio::spawn(async {
            loop {
                std::thread::sleep(Duration::from_micros(200));
                tokio::task::yield_now().await;
            }
        });
        let work = AtomicU64::new(0);
        let started = Instant::now();
        let yields = spin_while_busy(Duration::from_millis(20), &work).await;
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert!(yields > 1, "it returned without polling");
        neighbour.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn counted_work_keeps_it_spinning() {
        // Work counted every 2 ms, ten times, against a 10 ms window: the
        // spin outlasts the work and ends one window after it.
        let work = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&work);
        let worker = tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(2)).await;
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        spin_while_busy(Duration::from_millis(10), &work).await;
        assert!(worker.is_finished(), "the spin stopped while work was still arriving");
        assert_eq!(work.load(Ordering::Relaxed), 10);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_wake_up_restarts_a_waiting_spinner() {
        let poll = BusyPoll::new(Duration::from_micros(100)).unwrap();
        let spinner = tokio::spawn(Arc::clone(&poll).run());
        // Let it spin out its window and start waiting.
        while !poll.waiting.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        poll.on_unpark();
        assert!(!poll.waiting.load(Ordering::Acquire), "the wake-up was not taken");
        // It spins again, then waits again.
        while !poll.waiting.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        spinner.abort();
    }
}
