//! The clock that busy HTTP/1.1 connections are watched by: one task that
//! ticks for all of them while any watches (see `Activity::watch`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One clock for every connection watcher: a task ticks every `period`
/// while anyone watches. A timer per connection cost a timer-wheel insert
/// and removal each, and, being the earliest timer more often than not on
/// a loaded single thread, an eventfd write to re-arm the driver (about one
/// per three short connections).
pub struct Ticker {
    period: Duration,
    tick: tokio::sync::Notify,
    watchers: AtomicUsize,
    first_watcher: tokio::sync::Notify,
}

impl Ticker {
    pub fn new(period: Duration) -> Arc<Self> {
        Arc::new(Ticker {
            period,
            tick: tokio::sync::Notify::new(),
            watchers: AtomicUsize::new(0),
            first_watcher: tokio::sync::Notify::new(),
        })
    }

    /// Tick until `shutdown`; asleep while nobody watches.
    pub async fn run(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut interval = tokio::time::interval(self.period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while self.watchers.load(Ordering::Acquire) == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.first_watcher.notified() => {}
                }
                interval.reset();
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => self.tick.notify_waiters(),
            }
        }
    }

    /// The time between ticks.
    pub(super) fn period(&self) -> Duration {
        self.period
    }

    /// Resolves at the next tick.
    pub(super) async fn tick(&self) {
        self.tick.notified().await;
    }

    /// Counts a watcher until the guard drops, waking the ticker for the first.
    pub(super) fn watching(&self) -> Watching<'_> {
        if self.watchers.fetch_add(1, Ordering::AcqRel) == 0 {
            self.first_watcher.notify_one();
        }
        Watching(self)
    }
}

/// A watcher counted by its [`Ticker`] while it lives.
pub(super) struct Watching<'a>(&'a Ticker);

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    const TICK: Duration = Duration::from_millis(25);

    #[tokio::test(start_paused = true)]
    async fn the_ticker_sleeps_while_nobody_watches() {
        let ticker = Ticker::new(TICK);
        let stop = tokio_util::sync::CancellationToken::new();
        let run = tokio::spawn(Arc::clone(&ticker).run(stop.clone()));
        tokio::time::sleep(TICK * 4).await;
        // Nobody watched: no tick was due, so a tick still takes a period.
        let start = Instant::now();
        {
            let _watching = ticker.watching();
            ticker.tick().await;
        }
        assert!(start.elapsed() >= TICK, "ticked after {:?}", start.elapsed());
        stop.cancel();
        run.await.unwrap();
    }
}
