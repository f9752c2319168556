//! The pacing timer: a `timerfd`, since tokio's own timers have a 1 ms
//! grain, which would send a millisecond's requests in one burst at any
//! `--tick`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Fires every `tick`, on the runtime's reactor.
pub struct Ticker(AsyncFd<OwnedFd>);

impl Ticker {
    pub fn new(tick: Duration) -> io::Result<Ticker> {
        // SAFETY: an OwnedFd keeps its descriptor open, and the same, until dropped.
        let fd = unsafe { AsyncFd::register_with_interest(timerfd(tick)?, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Ticker(fd))
    }

    /// Wait for the timer to fire at least once since the last call.
    pub async fn wait(&self) -> io::Result<()> {
        crate::timerfd::expired(&self.0).await
    }
}

/// A non-blocking timer descriptor that fires every `tick`.
fn timerfd(tick: Duration) -> io::Result<OwnedFd> {
    // SAFETY: creates a new descriptor; no pointers are passed.
    let raw = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just created and nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let every = libc::timespec { tv_sec: tick.as_secs() as libc::time_t, tv_nsec: tick.subsec_nanos() as libc::c_long };
    let spec = libc::itimerspec { it_interval: every, it_value: every };
    // SAFETY: `spec` lives across the call; the old value is not asked for.
    if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}
