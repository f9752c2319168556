//! Waiting on a Linux timerfd from tokio, for the benchmark's examples
//! (`paced`'s send schedule, `upstream`'s answer delays): both time with a
//! timerfd because tokio's own timers have a 1 ms grain.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// Wait until `timer` has fired at least once since the last call, and
/// consume its expiration count.
pub async fn expired(timer: &AsyncFd<OwnedFd>) -> io::Result<()> {
    loop {
        let mut ready = timer.readable().await?;
        let read = ready.try_io(|fd| {
            let mut expirations = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a buffer of 8.
            let n = unsafe { libc::read(fd.as_raw_fd(), expirations.as_mut_ptr().cast(), expirations.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
        match read {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}
