//! The deadlines of a busy HTTP/1.1 connection, on one tokio timer of its
//! own: when to look whether it rests (to park it), when it has been idle
//! for `idle_timeout` (no request in progress, no byte moving), when the
//! request head in progress must be whole (`client_header_timeout`), when a
//! write blocked with no progress ends it (the send stall), and when a
//! deferred check for a departed client goes to the socket.
//!
//! Each deadline is plain state. [`Deadlines::note`], called after every
//! pass over the connection, sets one when it first sees its condition (a
//! few relaxed loads of the [`Activity`]; the clock is read only then), and
//! arms the timer earlier if that one is the earliest. When the timer fires,
//! [`Deadlines::poll_due`] looks at each deadline that is due: one whose
//! condition went away is dropped, one whose connection moved meanwhile
//! starts over from now, one that held ends the watch. Nothing is
//! re-armed per request: a keep-alive connection busy with requests costs
//! at most one wake-up per [`PARK_AFTER`], and nothing is armed at all
//! while a request is being answered with nothing blocked (a one-request
//! connection arms only the departed-client check).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::{Activity, EofCheckWatch, Watched, EOF_CHECK_WAITING};
use crate::server::gate::Gate;
use crate::server::lifecycle::PARK_AFTER;

/// How long hyper's read for a departed client waits, on a socket not yet
/// in the poller, before it goes to the socket (see
/// [`Activity::defer_eof_check`]).
pub const EOF_CHECK_AFTER: Duration = Duration::from_millis(25);

pin_project_lite::pin_project! {
    /// See the module documentation.
    pub struct Deadlines<'a> {
        activity: &'a Activity,
        // Hand the connection back once it rests (else it idles out).
        park: bool,
        header_timeout: Duration,
        idle_timeout: Duration,
        // On a new connection, when its first head must be whole: the time
        // since its first bytes came counts.
        first_head_by: Option<Instant>,
        // With `park`, when to look whether the connection is still at
        // rest, having moved no bytes: set once it is seen at rest.
        rest: Option<Instant>,
        // When to look whether it is still idle: set once it is seen with
        // no request in progress.
        idle: Option<Instant>,
        // The head in progress (the requests begun before it) and when it
        // must be whole.
        head: Option<(usize, Instant)>,
        // When a write blocked since then, with nothing written, ends it.
        stall: Option<Instant>,
        // When a deferred check for a departed client goes to the socket.
        eof_check: Option<Instant>,
        // When the timer fires; `None` while nothing is pending.
        armed: Option<Instant>,
        #[pin]
        timer: Option<Sleep>,
        // The timer's waker: its wake-ups alone make [`Self::poll_due`]
        // look at the deadlines.
        gate: Gate,
        _eof_checks: EofCheckWatch<'a>,
    }
}

impl<'a> Deadlines<'a> {
    pub fn new(
        activity: &'a Activity,
        park: bool,
        header_timeout: Duration,
        idle_timeout: Duration,
        first_head_by: Option<Instant>,
    ) -> Self {
        Deadlines {
            activity,
            park,
            header_timeout,
            idle_timeout,
            first_head_by,
            rest: None,
            idle: None,
            head: None,
            stall: None,
            eof_check: None,
            armed: None,
            timer: None,
            gate: Gate::closed(),
            _eof_checks: EofCheckWatch::start(activity),
        }
    }

    /// After a pass over the connection: set the deadline of each
    /// condition it is now in and was not before, and arm the timer
    /// earlier if one of them is the earliest.
    pub fn note(self: Pin<&mut Self>, cx: &mut Context<'_>) {
        let mut this = self.project();
        let a = *this.activity;
        let mut now = None;
        let mut clock = || *now.get_or_insert_with(Instant::now);
        let mut earliest: Option<Instant> = None;
        if *this.park && this.rest.is_none() && a.at_rest() {
            // Quiet from here on.
            a.moved.store(false, Ordering::Relaxed);
            earliest = earlier(earliest, *this.rest.insert(clock() + PARK_AFTER));
        }
        if this.idle.is_none() && a.requests.load(Ordering::Relaxed) == 0 {
            a.moved_since_idle_check.store(false, Ordering::Relaxed);
            earliest = earlier(earliest, *this.idle.insert(clock() + *this.idle_timeout));
        }
        if a.reading_head() {
            let begun = a.begun();
            if this.head.is_none_or(|(before, _)| before != begun) {
                let due = match *this.first_head_by {
                    Some(by) if begun == 0 => by,
                    _ => clock() + *this.header_timeout,
                };
                *this.head = Some((begun, due));
                earliest = earlier(earliest, due);
            }
        }
        if this.stall.is_none() && a.write_blocked.load(Ordering::Relaxed) {
            a.wrote.store(false, Ordering::Relaxed);
            earliest = earlier(earliest, *this.stall.insert(clock() + *this.idle_timeout));
        }
        if this.eof_check.is_none() && a.eof_check.load(Ordering::SeqCst) == EOF_CHECK_WAITING {
            earliest = earlier(earliest, *this.eof_check.insert(clock() + EOF_CHECK_AFTER));
        }
        let Some(at) = earliest else { return };
        if this.armed.is_some_and(|armed| armed <= at) {
            return;
        }
        arm(this.timer.as_mut(), this.armed, at);
        // Registered now, with the gate's waker.
        this.gate.register(cx);
        if let Some(timer) = this.timer.as_pin_mut() {
            if timer.poll(&mut this.gate.context()).is_ready() {
                // Already due (a first head past its time): look at once.
                this.gate.open();
                cx.waker().wake_by_ref();
            }
        }
    }

    /// Resolves when a deadline ends the watch; looks at them only when
    /// the timer fired.
    pub fn poll_due(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Watched> {
        let mut this = self.project();
        if this.armed.is_none() {
            return Poll::Pending;
        }
        this.gate.register(cx);
        if !this.gate.take() {
            return Poll::Pending;
        }
        loop {
            let Some(timer) = this.timer.as_mut().as_pin_mut() else { return Poll::Pending };
            // Polled with the gate's waker, so that a poll refused for want
            // of tokio's task budget opens the gate again when it wakes us.
            if timer.poll(&mut this.gate.context()).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let a = *this.activity;
            let due = |slot: &Option<Instant>| slot.is_some_and(|at| at <= now);
            if due(this.eof_check) {
                *this.eof_check = None;
                a.eof_check_due();
            }
            if due(this.rest) {
                let moved = a.moved.swap(false, Ordering::Relaxed);
                let at_rest = a.at_rest();
                if at_rest && !moved {
                    return Poll::Ready(Watched::Rested);
                }
                *this.rest = at_rest.then(|| now + PARK_AFTER);
            }
            if due(this.stall) {
                if !a.write_blocked.load(Ordering::Relaxed) {
                    *this.stall = None;
                } else if a.wrote.swap(false, Ordering::Relaxed) {
                    *this.stall = Some(now + *this.idle_timeout);
                } else {
                    return Poll::Ready(Watched::SendStalled);
                }
            }
            if due(this.idle) {
                let moved = a.moved_since_idle_check.swap(false, Ordering::Relaxed);
                let quiet = a.requests.load(Ordering::Relaxed) == 0;
                if quiet && !moved {
                    return Poll::Ready(Watched::Idle);
                }
                *this.idle = quiet.then(|| now + *this.idle_timeout);
            }
            if let Some((before, at)) = *this.head {
                if at <= now {
                    if a.reading_head() && a.begun() == before {
                        return Poll::Ready(Watched::HeaderTimeout);
                    }
                    *this.head = None;
                }
            }
            let head = this.head.map(|(_, at)| at);
            let next = [*this.rest, *this.idle, head, *this.stall, *this.eof_check].into_iter().flatten().min();
            match next {
                Some(at) => arm(this.timer.as_mut(), this.armed, at),
                None => {
                    *this.armed = None;
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Set the timer to fire at `at`; it registers with the runtime at its
/// next poll.
fn arm(mut timer: Pin<&mut Option<Sleep>>, armed: &mut Option<Instant>, at: Instant) {
    match timer.as_mut().as_pin_mut() {
        Some(sleep) => sleep.reset(at),
        None => timer.set(Some(tokio::time::sleep_until(at))),
    }
    *armed = Some(at);
}

fn earlier(earliest: Option<Instant>, at: Instant) -> Option<Instant> {
    Some(earliest.map_or(at, |e| e.min(at)))
}
