//! The watcher of an HTTP/1.1 connection served by our own builder: the
//! header timeout, the idle timeout, the send stall, and rest (when the
//! connection parks). It wakes only when the earliest of its deadlines is
//! due, set on the shared coarse clock ([`Deadlines`]); events that start
//! an earlier one (a head begins, an answer ends, a write blocks, a
//! departed-client check is scheduled) move its deadline forward.
//!
//! [`Deadlines`]: crate::server::deadlines::Deadlines

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use super::departure::CHECK_WAITING;
use super::{millis, Activity};
use crate::server::deadlines::{Millis, NEVER};
use crate::server::lifecycle::PARK_AFTER;

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

impl Activity {
    /// Watch a busy HTTP/1.1 connection. With `park`, resolves with
    /// [`Watched::Rested`] once it has been at rest, moving no bytes, for
    /// [`PARK_AFTER`] (to two ticks later). Resolves with [`Watched::HeaderTimeout`] once a
    /// request head has been arriving for `header_timeout` without
    /// completing, however its bytes trickle in; with [`Watched::Idle`]
    /// once nothing has moved, and no request been in progress, for
    /// `idle_timeout`; and with [`Watched::SendStalled`] once a write has
    /// been blocked, with nothing written, for as long. Each within a
    /// tick of the coarse clock.
    pub(in crate::server) async fn watch(
        self: &Arc<Self>,
        park: bool,
        header_timeout: Duration,
        idle_timeout: Duration,
        first_head_by: Option<tokio::time::Instant>,
    ) -> Watched {
        let _serving = self.clock.serving();
        // Kept in the activity, where the events that start a deadline
        // read them too.
        self.header_limit.store(millis(header_timeout), Ordering::Relaxed);
        self.first_head_by.store(first_head_by.map_or(NEVER, |by| self.clock.at(by)), Ordering::Relaxed);
        self.idle_limit.store(millis(idle_timeout), Ordering::Relaxed);
        // Quiet for a whole PARK_AFTER however stale the stamp was: a
        // connection between two requests of a busy client must not park.
        self.rest_limit.store(millis(PARK_AFTER).saturating_add(self.clock.resolution()), Ordering::Relaxed);
        self.parks.store(park, Ordering::Relaxed);
        let _watching = Watching::start(self);
        // Rest and idleness are measured from the watcher's start.
        self.touch();
        std::future::poll_fn(|cx| {
            self.watcher.register(cx.waker());
            let now = self.clock.now();
            if self.wake_at.load(Ordering::Relaxed) <= now {
                // The deadline that woke us is spent.
                self.wake_at.store(NEVER, Ordering::Relaxed);
            }
            match self.verdict(now) {
                Ok(watched) => Poll::Ready(watched),
                Err(next) => {
                    if next != NEVER {
                        self.wake_watcher_at(next);
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// What the connection's state says at `now`: a reason to stop
    /// watching it, or when to look again.
    fn verdict(&self, now: Millis) -> Result<Watched, Millis> {
        let mut next = NEVER;
        if self.departure.load(Ordering::SeqCst) == CHECK_WAITING {
            let at = self.departure_at.load(Ordering::SeqCst);
            if now >= at {
                self.departure_check_comes_due();
            } else {
                next = at;
            }
        }
        let mut due = |at: Millis| {
            next = next.min(at);
            now >= at
        };
        let last_moved = self.last_moved.load(Ordering::Relaxed);
        let idle = self.idle_limit.load(Ordering::Relaxed);
        let rest = self.rest_limit.load(Ordering::Relaxed);
        // Rest counts from the clock's last catch-up at the earliest: an
        // answer stamped while it lagged may have ended just now. (Parking
        // late is safe; idling out late under a lagging clock would not be,
        // so the idle check keeps the stamp.)
        let quiet_since = last_moved.max(self.clock.caught_up_at());
        if self.parks.load(Ordering::Relaxed) && self.at_rest() && due(quiet_since.saturating_add(rest)) {
            return Ok(Watched::Rested);
        }
        if self.write_blocked.load(Ordering::Relaxed) {
            let progress = self.last_wrote.load(Ordering::Relaxed).max(self.blocked_since.load(Ordering::Relaxed));
            if due(progress.saturating_add(idle)) {
                return Ok(Watched::SendStalled);
            }
        }
        if self.requests.load(Ordering::Relaxed) == 0 && due(last_moved.saturating_add(idle)) {
            return Ok(Watched::Idle);
        }
        if self.reading_head() && due(self.head_due_by(self.head_began.load(Ordering::Relaxed))) {
            return Ok(Watched::HeaderTimeout);
        }
        Err(next)
    }
}

/// Marks a connection as watched while [`Activity::watch`] runs. When the
/// watcher stops (a drain, an idle shutdown, parking), its deadline is
/// dropped and a departed-client check waiting for it is made due, its
/// connection woken: nothing would wake it otherwise.
pub(super) struct Watching<'a>(&'a Activity);

impl<'a> Watching<'a> {
    pub(super) fn start(activity: &'a Activity) -> Self {
        activity.watched.store(true, Ordering::SeqCst);
        Watching(activity)
    }
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.watched.store(false, Ordering::SeqCst);
        self.0.cancel_watcher_deadline();
        self.0.departure_check_comes_due();
    }
}

#[cfg(test)]
mod tests;
