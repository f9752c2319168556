//! Lingering close: an HTTP/1 connection that closes while its client is
//! still sending a request (an early answer to an upload: a 413 from
//! `body_limit`, a 401, an upstream's answer before the body was read) is
//! read and discarded for a while after its answer, before it is closed.
//!
//! Closing a socket with bytes arriving makes the kernel answer them with
//! a reset, and a client still writing its body then fails its write and
//! often never reads the answer that was already sent (curl reports "send
//! failure"; in a test run 16 of 40 uploads past a `body_limit` lost their
//! 413). RFC 9112 9.6 asks servers to close in stages for this reason;
//! nginx's `lingering_close` does it with `lingering_timeout` (5 s) and
//! `lingering_time` (30 s), the bounds used here. The write side is shut
//! first (the client sees the end of the answer), then reads are discarded
//! until the client closes, goes quiet for [`QUIET`], [`LONGEST`] has
//! passed, or the process drains. The connection keeps its slot
//! (`max_connections`) meanwhile.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a lingering client may send nothing (nginx's `lingering_timeout`).
pub const QUIET: Duration = Duration::from_secs(5);
/// How long a connection lingers at most (nginx's `lingering_time`).
pub const LONGEST: Duration = Duration::from_secs(30);

/// Shut the write side of `io`, then discard what the client still sends
/// (see the module doc).
pub async fn linger<I: AsyncRead + AsyncWrite + Unpin>(io: &mut I, shutdown: &CancellationToken) {
    let _ = io.shutdown().await;
    let until = Instant::now() + LONGEST;
    let mut discard = vec![0u8; 16 * 1024];
    loop {
        let quiet_until = (Instant::now() + QUIET).min(until);
        let read = tokio::select! {
            r = io.read(&mut discard) => r,
            _ = tokio::time::sleep_until(quiet_until) => return,
            _ = shutdown.cancelled() => return,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
