//! Protocol upgrades (WebSocket over HTTP/1.1). Only once the upstream has
//! answered 101 are bytes copied both ways; until then hyper holds back
//! anything the client sent after its request head. The copying runs in
//! the client connection's own task once hyper has let go of the
//! connection ([`super::ConnInfo::take_tunnel`]), not in a task of its own:
//! it keeps the connection's place under `max_connections`, and the drain
//! ends it. A tunnel that moves no byte either way for `idle_timeout` is
//! closed, as nginx's `proxy_read_timeout` closes one (60 s by default
//! both), so idle tunnels cannot hold every place: applications keep
//! theirs open with pings.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::Tunnel;
use crate::body::ResponseBody;
use crate::upstream::{InFlightGuard, UpstreamBody};

/// Answer the client's upgrade with the upstream's 101, and the tunnel
/// that joins the two upgraded connections, to run once the 101 is out.
pub fn splice(
    upstream_resp: Response<UpstreamBody>,
    client_side: OnUpgrade,
    proto: HeaderValue,
    guard: InFlightGuard,
    idle_timeout: Duration,
) -> (Response<ResponseBody>, Option<Tunnel>) {
    let (mut parts, body) = upstream_resp.into_parts();
    let Some((upstream, early_bytes, _)) = body.into_upgraded() else {
        return (crate::proxy::error::ProxyError::Broken.response(), None);
    };
    crate::proxy::headers::strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, proto);
    let tunnel = Box::pin(async move {
        // The server stays "busy" for least_conn while the tunnel is open.
        let _guard = guard;
        let mut client = match client_side.await {
            Ok(c) => TokioIo::new(c),
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        // What the upstream sent right behind its 101 (already read).
        if !early_bytes.is_empty() && client.write_all(&early_bytes).await.is_err() {
            return;
        }
        let moved = Arc::new(AtomicU64::new(0));
        let mut client = Counted { inner: client, moved: Arc::clone(&moved) };
        let mut upstream = Counted { inner: upstream, moved: Arc::clone(&moved) };
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(copy);
        // Looked at four times per idle_timeout: closed within a quarter
        // of it past the timeout.
        let look = (idle_timeout / 4).max(Duration::from_millis(10));
        let (mut seen, mut since) = (0, Instant::now());
        loop {
            tokio::select! {
                ended = &mut copy => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "upgraded connection ended with an error");
                    }
                    return;
                }
                _ = tokio::time::sleep(look) => {
                    let now = moved.load(Ordering::Relaxed);
                    if now != seen {
                        (seen, since) = (now, Instant::now());
                    } else if since.elapsed() >= idle_timeout {
                        tracing::debug!(?idle_timeout, "upgraded connection idle; closing it");
                        return;
                    }
                }
            }
        }
    });
    (Response::from_parts(parts, ResponseBody::empty()), Some(tunnel))
}

/// A tunnel's side, counting the bytes read from it (what one side reads
/// the other is written) for the idle timeout.
struct Counted<T> {
    inner: T,
    moved: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
