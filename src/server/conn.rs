//! Serving one accepted connection: hyper-util's auto builder (HTTP/1.1, or
//! HTTP/2 by prior knowledge / ALPN), with graceful shutdown on drain and an
//! idle timeout that hyper does not provide on its own.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::body::BoxError;

/// Whether a connection has moved bytes lately, and whether a request is
/// being handled on it; together they say whether it is idle. Reads and
/// writes only set a flag (no clock read on the hot path); the idle timer
/// samples and clears it a few times per timeout period.
#[derive(Debug, Default)]
pub struct Activity {
    moved: AtomicBool,
    requests: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        self.moved.store(true, Ordering::Relaxed);
    }

    /// Mark a request as in progress until the guard drops.
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        RequestGuard(Arc::clone(self))
    }

    /// Resolves once the connection has been idle for about `limit`
    /// (within a quarter of it).
    async fn idle_for(&self, limit: Duration) {
        let tick = (limit / 4).max(Duration::from_millis(10));
        let mut idle = Duration::ZERO;
        loop {
            tokio::time::sleep(tick).await;
            let moved = self.moved.swap(false, Ordering::Relaxed);
            if moved || self.requests.load(Ordering::Relaxed) > 0 {
                idle = Duration::ZERO;
            } else {
                idle += tick;
                if idle >= limit {
                    return;
                }
            }
        }
    }
}

pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// An IO stream that records activity on every successful read or write.
    pub struct ActivityIo<I> {
        #[pin]
        inner: I,
        activity: Arc<Activity>,
    }
}

impl<I> ActivityIo<I> {
    pub fn new(inner: I, activity: Arc<Activity>) -> Self {
        activity.touch();
        ActivityIo { inner, activity }
    }
}

impl<I: AsyncRead> AsyncRead for ActivityIo<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl<I: AsyncWrite> AsyncWrite for ActivityIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Serve one connection until the client leaves, it idles out, or the
/// process drains (then in-flight requests finish and the connection closes).
pub async fn serve<I, S, B>(
    io: I,
    activity: Arc<Activity>,
    builder: &auto::Builder<TokioExecutor>,
    service: S,
    shutdown: CancellationToken,
    idle_timeout: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let io = TokioIo::new(ActivityIo::new(io, Arc::clone(&activity)));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = activity.idle_for(idle_timeout), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}
