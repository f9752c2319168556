//! How HTTP/2 connections, and connections shutting down, are watched:
//! by sampling the connection's [`Activity`] on a tokio timer of their own,
//! a few times per limit. Their limits are long (`idle_timeout`) and few
//! connections are in these states at once, so a timer each costs less
//! than the events and deadlines that HTTP/1.1's watcher (`watch.rs`) keeps
//! for its per-request limits.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Activity, Watched};

impl Activity {
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
    pub(in crate::server) async fn send_stalled_for(&self, limit: Duration) {
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

    /// Resolves once no request has begun or been in progress for about
    /// `limit` (within a quarter of it), whatever else moves: for an HTTP/2
    /// connection shutting down, whose client may never acknowledge the
    /// PING that hyper's graceful shutdown waits for.
    pub(in crate::server) async fn no_requests_for(&self, limit: Duration) {
        let tick = (limit / 4).max(Duration::from_millis(10));
        let (mut quiet, mut last_begun) = (Duration::ZERO, self.begun());
        loop {
            tokio::time::sleep(tick).await;
            let begun = self.begun();
            if begun != last_begun || self.requests.load(Ordering::Relaxed) > 0 {
                (quiet, last_begun) = (Duration::ZERO, begun);
            } else {
                quiet += tick;
                if quiet >= limit {
                    return;
                }
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
    pub(in crate::server) async fn idle_for(&self, limit: Duration) -> Watched {
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
