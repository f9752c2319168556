//! A static file's body past [`super::CHUNK`]: read in `CHUNK`-sized
//! pieces as the client takes them, so memory stays flat whatever the
//! file's size.
//!
//! The reads are plain blocking `read(2)` calls on the worker thread, as
//! nginx makes them without `aio`: from the page cache a 64 KiB read takes
//! microseconds, less than handing it to tokio's blocking pool and waking
//! the connection's task again (two context switches per piece). The cost
//! is that a file system which stalls (a network mount, a cold spinning
//! disk) stalls the worker's other connections with it; static sites
//! belong on local disks.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::super::body::BoxError;
use super::CHUNK;

/// `left` bytes of a file from `offset` (read with `pread`, so the file
/// may be shared).
pub(super) struct FileBody {
    file: Arc<File>,
    offset: u64,
    left: u64,
    /// Whether a frame was given out.
    started: bool,
}

impl FileBody {
    pub(super) fn new(file: Arc<File>, offset: u64, len: u64) -> Self {
        FileBody { file, offset, left: len, started: false }
    }

    /// Whether nothing was read yet.
    pub(super) fn untouched(&self) -> bool {
        !self.started
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.started = true;
        let want = self.left.min(CHUNK as u64) as usize;
        let mut buf = BytesMut::zeroed(want);
        let mut filled = 0;
        while filled < want {
            match self.file.read_at(&mut buf[filled..], self.offset + filled as u64) {
                // The file shrank under us: end with an error, so the
                // client sees a truncated answer rather than waiting for
                // bytes its Content-Length still promises.
                Ok(0) => {
                    self.left = 0;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while read",
                    )
                    .into())));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.left = 0;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
        self.left -= want as u64;
        self.offset += want as u64;
        Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests;
