//! Pauses finer than tokio's timers: one `timerfd` and a queue of waiters.
//!
//! tokio's timer wheel has a 1 ms grain and rounds a sleep up to the next
//! tick, so a 1 ms sleep waits 1-2 ms and a 100 µs one a whole millisecond.
//! Here every pause of one [`Pauses`] has the same length, so deadlines are
//! queued in the order they fall due; one driver task arms the timer for
//! the first of them and wakes every waiter whose deadline has passed. Under
//! load that is one timer wake-up for a batch of requests, not one each.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

/// Pauses of one fixed length, on the current thread's runtime.
pub struct Pauses {
    length: Duration,
    timer: AsyncFd<OwnedFd>,
    queue: RefCell<VecDeque<(Instant, Rc<Notify>)>>,
    /// Tells the idle driver that the queue is no longer empty.
    kick: Notify,
}

impl Pauses {
    /// A queue of pauses of `length`; its driver runs on the current `LocalSet`.
    pub fn start(length: Duration) -> io::Result<Rc<Pauses>> {
        let fd = timerfd()?;
        // SAFETY: an OwnedFd keeps its descriptor open, and the same, until dropped.
        let timer = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts().1)?;
        let pauses = Rc::new(Pauses { length, timer, queue: RefCell::new(VecDeque::new()), kick: Notify::new() });
        let driver = pauses.clone();
        tokio::task::spawn_local(async move {
            if let Err(e) = driver.drive().await {
                eprintln!("upstream: pause timer failed: {e}");
                std::process::exit(1);
            }
        });
        Ok(pauses)
    }

    /// Wait one pause. `me` is the caller's own `Notify`, reused across pauses.
    pub async fn wait(&self, me: &Rc<Notify>) {
        self.queue.borrow_mut().push_back((Instant::now() + self.length, me.clone()));
        self.kick.notify_one();
        me.notified().await;
    }

    async fn drive(&self) -> io::Result<()> {
        loop {
            let first = self.queue.borrow().front().map(|(due, _)| *due);
            let Some(due) = first else {
                self.kick.notified().await;
                continue;
            };
            let now = Instant::now();
            if due > now {
                arm(&self.timer, due - now)?;
                self.fired().await?;
            }
            let now = Instant::now();
            let mut queue = self.queue.borrow_mut();
            while queue.front().is_some_and(|(due, _)| *due <= now) {
                if let Some((_, waiter)) = queue.pop_front() {
                    waiter.notify_one();
                }
            }
        }
    }

    async fn fired(&self) -> io::Result<()> {
        crate::timerfd::expired(&self.timer).await
    }
}

/// A non-blocking, disarmed one-shot timer descriptor.
fn timerfd() -> io::Result<OwnedFd> {
    // SAFETY: creates a new descriptor; no pointers are passed.
    let raw = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just created and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Fire once, `after` from now (at least 1 ns: zero would disarm it).
fn arm(timer: &AsyncFd<OwnedFd>, after: Duration) -> io::Result<()> {
    let after = after.max(Duration::from_nanos(1));
    let value =
        libc::timespec { tv_sec: after.as_secs() as libc::time_t, tv_nsec: after.subsec_nanos() as libc::c_long };
    let spec = libc::itimerspec { it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 }, it_value: value };
    // SAFETY: `spec` lives across the call; the old value is not asked for.
    if unsafe { libc::timerfd_settime(timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
