//! The hyper side of client connections: the HTTP/1 and HTTP/2 builders
//! made from the server settings, and the service that hands each request
//! to the proxy while counting it as in progress on its connection.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use super::activity::{Activity, RequestGuard};
use super::conn::Builders;
use crate::body::SendQueue;
use crate::config::ServerSettings;
use crate::proxy::exchange::TrackedBody;
use crate::proxy::{self, ConnInfo, Shared};

/// The same HTTP/1 settings on hyper's builder and on hyper-util's wrapper.
macro_rules! http1_settings {
    ($b:expr, $s:expr) => {
        $b.timer(TokioTimer::new())
            .header_read_timeout($s.client_header_timeout)
            .max_buf_size($s.max_header_bytes)
            .keep_alive(true)
    };
}

/// At most this much answer data waits in the proxy for each HTTP/2
/// stream's client: 64 KiB, HTTP/2's default initial window.
const H2_SEND_BUFFER: usize = 64 * 1024;

/// The same HTTP/2 settings on hyper's builder and on hyper-util's wrapper.
macro_rules! http2_settings {
    ($b:expr, $s:expr) => {
        $b.timer(TokioTimer::new())
            .max_concurrent_streams($s.h2_max_concurrent_streams)
            .max_header_list_size($s.max_header_bytes as u32)
            .max_pending_accept_reset_streams(Some(64))
            .max_local_error_reset_streams(Some(1024))
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20))
            // Per stream, for data the client's window allows but its
            // socket has not taken: hyper's 400 KiB times 256 streams let
            // one client that stops reading hold 100 MiB.
            .max_send_buf_size(H2_SEND_BUFFER)
    };
}

/// The hyper connection builders for client-facing listeners.
pub fn http_builders(s: &ServerSettings) -> Builders {
    let mut http1 = http1::Builder::new();
    http1_settings!(http1, s);
    // No per-request header timer: the connection's watcher samples it (see
    // `Activity::watch`). hyper-util's builder, for the rare connections of
    // unknown protocol, keeps hyper's.
    http1.header_read_timeout(None);
    let mut http1_plain = http1.clone();
    // hyper reads nothing while an answer is on its way; `ActivityIo`
    // checks for a client that left instead (`activity/departure.rs`).
    http1_plain.half_close(true);
    let h2_settings = s.clone();
    let http2 = Box::new(move |executor| {
        let mut http2 = http2::Builder::new(executor);
        http2_settings!(http2, h2_settings);
        http2
    });
    let mut auto = auto::Builder::new(TokioExecutor::new());
    http1_settings!(auto.http1(), s);
    http2_settings!(auto.http2(), s);
    Builders { http1, http1_plain, http2, auto }
}

/// A response body that keeps its request counted as in progress on the
/// connection until hyper is done with it (and drops it), so a connection
/// is never parked in the middle of an answer.
///
/// An error (an upstream that broke off mid-answer) is handed to hyper one
/// poll late: hyper drops an HTTP/1 connection at a body error without
/// writing what it buffered, so a head and data that came with the error
/// would never reach the client, who would see an empty reply instead of
/// a truncated answer. The extra poll lets hyper flush first.
///
/// On HTTP/2 it also tells the connection's [`Activity`] when hyper owes
/// the body a poll (see [`Activity::body_owed`]), so a client whose
/// flow-control windows stay shut is found out.
pub struct ConnBody {
    inner: TrackedBody,
    in_progress: RequestGuard,
    failed: Option<crate::body::BoxError>,
    h2: bool,
    /// Counted as owed on the connection.
    owed: bool,
}

impl ConnBody {
    fn new(inner: TrackedBody, in_progress: RequestGuard, h2: bool) -> Self {
        let owed = h2 && !http_body::Body::is_end_stream(&inner);
        if owed {
            in_progress.activity().body_owed();
        }
        ConnBody { inner, in_progress, failed: None, h2, owed }
    }
}

impl Drop for ConnBody {
    fn drop(&mut self) {
        if self.owed {
            self.in_progress.activity().owed_body_dropped();
        }
    }
}

impl http_body::Body for ConnBody {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.h2 {
            this.in_progress.activity().body_polled(std::mem::take(&mut this.owed));
        }
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                this.failed = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.h2 && !this.inner.is_end_stream() {
                    this.owed = true;
                    this.in_progress.activity().body_owed();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The hyper service of one client connection. The proxying future (1.4
/// KiB; `proxy::serve` says why not more) is boxed when the request starts,
/// so the future hyper holds and moves is a few words: HTTP/2 moved it
/// three times per stream (into its stream state, into the executor, into
/// a box), HTTP/1 once.
///
/// `files`, armed on a plain HTTP/1 connection: a GET answered 200 with a
/// static file's own body (no middleware read it) sends the file by
/// `sendfile` (`sendfile.rs`); HEAD, 304, 206, 416 answers keep the bytes.
pub(super) fn proxy_service(
    app: Arc<Shared>,
    info: Arc<ConnInfo>,
    activity: Arc<Activity>,
    files: Option<Arc<SendQueue>>,
) -> impl Service<
    Request<Incoming>,
    Response = Response<ConnBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<ConnBody>, Infallible>> + Send + 'static,
> + Clone
       + Send
       + 'static {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let guard = activity.begin();
        crate::busy_poll::note_work();
        let app = Arc::clone(&app);
        let info = Arc::clone(&info);
        let last = proxy::headers::last_on_connection(req.version(), req.headers());
        let h2 = req.version() == hyper::Version::HTTP_2;
        let http10 = req.version() == hyper::Version::HTTP_10;
        // The framing guard stops judging after a head that asks to switch
        // protocols (the bytes behind it may be a tunnel's): if no switch
        // comes, nothing more is read from this connection.
        let may_switch =
            !h2 && (req.method() == hyper::Method::CONNECT || req.headers().contains_key(http::header::UPGRADE));
        let files = files.as_ref().filter(|q| req.method() == hyper::Method::GET && q.armed()).cloned();
        async move {
            let mut resp = match Box::pin(proxy::serve(app, info, req)).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            if may_switch && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            if http10 {
                answer_as_http10(&mut resp, last);
            }
            if last && resp.body().in_memory_to_end() {
                guard.activity().cork_next_write();
            }
            if let Some(files) = files.filter(|_| resp.status() == http::StatusCode::OK) {
                resp.body_mut().send_through(&files);
            }
            Ok(resp.map(|inner| ConnBody::new(inner, guard, h2)))
        }
    })
}

/// An answer to an HTTP/1.0 request, which keeps its connection only when
/// the client asked (`last` false) and the body's length is known: without
/// chunked coding, an unknown length ends with the close. hyper answers a
/// 1.0 client in 1.0 but, for an answer it was given as 1.1, adds
/// `Connection: keep-alive` whatever the body; given as 1.0, it keeps the
/// connection only if the answer says `keep-alive`, so that is said here.
fn answer_as_http10(resp: &mut Response<TrackedBody>, last: bool) {
    use http_body::Body as _;
    *resp.version_mut() = hyper::Version::HTTP_10;
    let closing = resp.headers().contains_key(http::header::CONNECTION);
    if !last && !closing && resp.body().size_hint().exact().is_some() {
        resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("keep-alive"));
    }
}
