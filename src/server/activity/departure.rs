//! The check for a client that left while its answer is on its way, on a
//! plain HTTP/1.1 connection: the request's upstream exchange is dropped
//! then, as nginx does with `proxy_ignore_client_abort off`, instead of
//! running to an answer nobody reads.
//!
//! hyper can make the check itself, by reading the socket while an answer
//! is on its way (its `half_close(false)`). But that read first reserves
//! room in hyper's read buffer, which the request's URI and header slices
//! still share, so every request then cost a fresh 8 KiB buffer: 342
//! instructions per `h1-1k` request at 10 connections, 1.3k at 1,000,
//! where the allocator's thread cache no longer absorbs them
//! (`benches/README.md`). Plain connections are served with
//! `half_close(true)` instead, and the check is ours: once a request has
//! arrived whole (the framing guard has seen its last byte) and has been
//! in progress for [`CHECK_AFTER`], the socket is peeked at (`recv` with
//! `MSG_PEEK`: nothing is taken from it). End of stream: the client left,
//! and hyper's flush fails, which ends the connection and the request
//! with it. Bytes waiting (a pipelined request): the check comes again
//! [`CHECK_AFTER`] later. Nothing yet: the peek waits for readiness, on
//! the connection's task. A client that only half-closed looks the same
//! as one that left; it gets answers that come within [`CHECK_AFTER`].
//!
//! Most answers come before the check is due, and then it costs one entry
//! on the coarse clock and no syscall; a one-request connection is served
//! without ever entering the poller (see `ClientSocket`).
//!
//! The check rides on hyper's flush ([`Departure`], called by the framing
//! guard's `poll_flush`): hyper flushes its stream on every pass of its
//! connection, and the stream is the only way to the socket while hyper
//! owns it. TLS connections keep hyper's own read, since only rustls can
//! tell a `close_notify` from data.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Context;

use super::Activity;
use crate::server::deadlines::Millis;

/// How long a request that has arrived whole is in progress before the
/// socket is looked at for a departed client.
pub(super) const CHECK_AFTER: Millis = 25;

/// No check is waiting.
pub(super) const CHECK_NONE: u8 = 0;
/// A check waits for its time.
pub(super) const CHECK_WAITING: u8 = 1;
/// Its time came: the next flush peeks at the socket.
pub(super) const CHECK_DUE: u8 = 2;

/// A client stream under hyper's HTTP/1 connection that can tell, when
/// hyper flushes it, whether its client left (see the module doc).
pub trait Departure {
    /// Called while a request is in progress and all its bytes have
    /// arrived. `Some(error)` once the client is seen gone: hyper's flush
    /// fails with it, which ends the connection.
    fn departed(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Option<io::Error>;
}

impl Activity {
    /// Whether to peek at the socket for a departed client now. The first
    /// call of a request schedules the check, [`CHECK_AFTER`] later; `cx`
    /// is woken when it is due.
    ///
    /// The flushes, the watcher and the end of the answer all run on the
    /// connection's task; the orderings and the second look at `watched`
    /// keep a wake-up from being lost even if they did not.
    pub(super) fn departure_check_due(self: &Arc<Self>, cx: &Context<'_>) -> bool {
        if self.requests.load(Ordering::Relaxed) == 0 {
            // Between requests hyper reads the socket itself.
            return false;
        }
        match self.departure.load(Ordering::SeqCst) {
            CHECK_DUE => true,
            CHECK_WAITING => {
                self.departure_waker.register(cx.waker());
                false
            }
            _ => {
                self.check_departure_later(cx);
                false
            }
        }
    }

    /// Have the check made [`CHECK_AFTER`] from now, when the watcher's
    /// deadline wakes `cx`. Without a watcher there is no check (hyper-util's
    /// builder, HTTP/2); a watcher that stops makes a waiting one due.
    pub(super) fn check_departure_later(self: &Arc<Self>, cx: &Context<'_>) {
        if !self.watched.load(Ordering::SeqCst) {
            self.departure.store(CHECK_NONE, Ordering::SeqCst);
            return;
        }
        self.departure_waker.register(cx.waker());
        let at = self.clock.now().saturating_add(CHECK_AFTER);
        self.departure_at.store(at, Ordering::SeqCst);
        self.departure.store(CHECK_WAITING, Ordering::SeqCst);
        if !self.watched.load(Ordering::SeqCst) {
            self.departure.store(CHECK_NONE, Ordering::SeqCst);
            return;
        }
        self.wake_watcher_at(at);
    }

    /// A waiting check is due (its time came, or the watcher stopped):
    /// the connection is woken to make it.
    pub(super) fn departure_check_comes_due(&self) {
        if self.departure.compare_exchange(CHECK_WAITING, CHECK_DUE, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            self.departure_waker.wake();
        }
    }

    /// The request's answer ended: the next request gets a check of its
    /// own. A deadline still set wakes the watcher for nothing.
    pub(super) fn departure_check_ends(&self) {
        self.departure.store(CHECK_NONE, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests;
