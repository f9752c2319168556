//! Driving one hyper connection: polling it and, inside the same task, its
//! HTTP/2 streams; watching an HTTP/1.1 one for the header timeout, the idle
//! timeout and rest (to hand it back for parking); and a graceful shutdown
//! on drain or idle timeout.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::future::Future;

use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;

use super::activity::Watched;
use super::conn::ConnCtx;
use super::streams::{StreamExecutor, Streams};
use crate::body::BoxError;

/// What [`drive`] needs from a hyper connection future.
pub(super) trait HttpConn: Future<Output = Result<(), Self::Error>> {
    type Error: std::fmt::Display;
    fn shutdown(self: Pin<&mut Self>);

    /// The status hyper answered a request head it could not parse with,
    /// when the connection ended so: no request reached the proxy's
    /// service, so nothing else logs or counts it.
    fn refused_with(_: &Self::Error) -> Option<u16> {
        None
    }
}

/// What hyper's HTTP/1 server answers a head it refuses with (its
/// `on_error`): 431 for a head (or target) too large, 400 for the rest of
/// its parse errors; none for the HTTP/2 preface, which it only closes on.
fn refused_status(e: &hyper::Error) -> Option<u16> {
    if !e.is_parse() || e.is_parse_version_h2() {
        None
    } else if e.is_parse_too_large() {
        Some(431)
    } else {
        Some(400)
    }
}

impl<I, S, B> HttpConn for http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
{
    type Error = hyper::Error;
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }

    fn refused_with(e: &hyper::Error) -> Option<u16> {
        refused_status(e)
    }
}

impl<I, S, B> HttpConn for http2::Connection<I, S, StreamExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
    StreamExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    type Error = hyper::Error;
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> HttpConn for auto::UpgradeableConnection<'_, I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    type Error = BoxError;
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }

    fn refused_with(e: &BoxError) -> Option<u16> {
        e.downcast_ref::<hyper::Error>().and_then(refused_status)
    }
}

/// How long an HTTP/2 connection told GOAWAY (idle, or draining) stays
/// open once nothing is in flight. hyper's graceful shutdown ends only when
/// the client acknowledges the PING sent with the GOAWAY, or when the
/// keep-alive PING times out 50 s later; a live client acknowledges within
/// a round trip, and nginx closes right after its GOAWAY.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// How [`drive`] watches an HTTP/1.1 connection served by our own builder:
/// it enforces `client_header_timeout` (the builder has no header timer),
/// and with `park` hands the connection back once it rests.
#[derive(Clone, Copy)]
pub(super) struct Http1Watch {
    pub park: bool,
}

/// How [`drive`] let go of a connection.
pub(super) enum Driven<C> {
    /// At rest for [`PARK_AFTER`](super::lifecycle::PARK_AFTER) (with an
    /// [`Http1Watch`] that parks): handed back to be parked.
    Resting(Pin<Box<C>>),
    /// Finished by hyper: the client closed, or hyper closed after an
    /// answer or an error. Handed back so an HTTP/1 one can linger.
    Finished(Pin<Box<C>>),
    /// Closed by a watcher (a timeout, a drain's deadline), or an HTTP/2
    /// connection told GOAWAY that did not acknowledge it.
    CutOff,
}

/// A connection that ended with an error; a request head hyper refused
/// (and answered `refused`) is logged and counted as the proxy's own
/// answers are, as nginx logs its 400s, rather than seen nowhere.
fn ended_with(ctx: &ConnCtx<'_>, e: &dyn std::fmt::Display, refused: Option<u16>) {
    tracing::debug!(error = %e, "connection ended with an error");
    if let Some(status) = refused {
        crate::proxy::refused_head(ctx.proxy, ctx.peer, status);
    }
}

/// Drive a connection until it ends, or, with an [`Http1Watch`] that
/// parks, until it rests.
pub(super) async fn drive<C: HttpConn>(
    mut conn: Pin<Box<C>>,
    mut streams: Option<Streams>,
    ctx: &ConnCtx<'_>,
    http1: Option<Http1Watch>,
) -> Driven<C> {
    let park = http1.is_some_and(|w| w.park);
    let conn_gate = Gate::new();
    // The watchers (deadlines, drain signal, timers) are polled only when one of
    // them was woken, not at every read and write of the connection: polling
    // them each time cost 3.5% of a keep-alive request's instructions.
    let watch_gate = Gate::new();
    let mut closing = false;
    // Set on drain when a request head is in progress.
    let mut head_deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // Not HTTP/1.1's (its watcher has the first head's deadline): a new
    // connection whose first request has not begun by then is closed, an
    // HTTP/2 one that never sends its preface (hyper would wait for it, a
    // graceful shutdown included) or only part of it.
    let mut first_request_by = if http1.is_none() { ctx.first_head_by } else { None };
    loop {
        let event = {
            let running = std::future::poll_fn(|cx| {
                conn_gate.register(cx);
                loop {
                    // Only when the connection asked: an HTTP/2 connection's
                    // poll is not free, and most wake-ups are for streams.
                    if conn_gate.take() {
                        if let Poll::Ready(res) = conn.as_mut().poll(&mut conn_gate.context()) {
                            return Poll::Ready(res);
                        }
                    }
                    if let Some(s) = streams.as_mut() {
                        let _ = s.poll_run(cx);
                    }
                    // Streams that answered woke the connection to send: do it
                    // now, in the same pass, for all of them at once.
                    if !conn_gate.is_open() {
                        return Poll::Pending;
                    }
                }
            });
            let mut watchers = std::pin::pin!(async {
                tokio::select! {
                    biased;
                    // A head already overdue closes before a drain would
                    // give it a fresh client_header_timeout.
                    watched = ctx.activity.watch(park, ctx.header_timeout, ctx.idle_timeout, ctx.first_head_by),
                        if http1.is_some() && !closing => Event::Watched(watched),
                    _ = ctx.shutdown.cancelled(), if !closing => Event::Drain,
                    _ = async {
                        match head_deadline.as_mut() {
                            Some(deadline) => deadline.await,
                            None => std::future::pending().await,
                        }
                    }, if head_deadline.is_some() => Event::HeadDeadline,
                    watched = ctx.activity.idle_for(ctx.idle_timeout), if http1.is_none() && !closing => Event::Watched(watched),
                    _ = async {
                        match first_request_by {
                            Some(by) => tokio::time::sleep_until(by).await,
                            None => std::future::pending().await,
                        }
                    }, if first_request_by.is_some() && !closing => Event::FirstRequestDue,
                    _ = ctx.activity.send_stalled_for(ctx.idle_timeout), if closing => Event::Watched(Watched::SendStalled),
                    _ = ctx.activity.no_requests_for(GOAWAY_GRACE), if closing && http1.is_none() => Event::GoawayGraceOver,
                    else => std::future::pending().await,
                }
            });
            // A new set of watchers is polled once, to register its wakers.
            watch_gate.open();
            let watched = std::future::poll_fn(|cx| {
                watch_gate.register(cx);
                if watch_gate.take() {
                    watchers.as_mut().poll(&mut watch_gate.context())
                } else {
                    Poll::Pending
                }
            });
            // The watchers first: behind their gate they cost one atomic
            // swap when nothing woke them, and polled after a connection
            // that used up tokio's task budget they would find none left
            // (select! checks it) and wait for a pass that leaves some.
            tokio::select! {
                biased;
                event = watched => event,
                res = running => {
                    if let Err(e) = res {
                        ended_with(ctx, &e, C::refused_with(&e));
                    }
                    Event::Ended
                }
            }
        };
        match event {
            Event::Ended => return Driven::Finished(conn),
            Event::Watched(Watched::Rested) => {
                // The watcher judges by the connection's stamps, not by its
                // socket: in a busy process the client's next request may
                // already wait there, sent while this task waited its turn
                // (its deadline and its socket then wake it together). Read
                // it first: parking now would only come straight back, with
                // a trip through the lot's poller and a fresh task.
                let polled = std::future::poll_fn(|cx| {
                    conn_gate.register(cx);
                    Poll::Ready(conn.as_mut().poll(&mut conn_gate.context()))
                })
                .await;
                if let Poll::Ready(res) = polled {
                    if let Err(e) = res {
                        ended_with(ctx, &e, C::refused_with(&e));
                    }
                    return Driven::Finished(conn);
                }
                if ctx.activity.at_rest() {
                    return Driven::Resting(conn);
                }
            }
            Event::Watched(Watched::SendStalled) => {
                tracing::debug!("the client read nothing of the answer for idle_timeout; closing");
                return Driven::CutOff;
            }
            Event::Watched(Watched::HeaderTimeout) => {
                // As hyper's own header timer does: close, no answer.
                tracing::debug!("no complete request head within client_header_timeout; closing");
                return Driven::CutOff;
            }
            // hyper's graceful shutdown waits for a head it holds part of,
            // and no timer would end that wait: close.
            // (HTTP/1 only: on HTTP/2 bytes after an answer are frames,
            // SETTINGS or PING acks, not a head.)
            Event::Watched(Watched::Idle) if http1.is_some() && ctx.activity.reading_head() => return Driven::CutOff,
            Event::Watched(Watched::Idle) => {
                conn.as_mut().shutdown();
                // A graceful shutdown was requested: poll the connection.
                conn_gate.open();
                closing = true;
            }
            Event::Drain => {
                if http1.is_some() && ctx.activity.reading_head() {
                    // The same on drain, where the watcher has stopped: the
                    // head gets client_header_timeout from now to finish.
                    head_deadline = Some(Box::pin(tokio::time::sleep(ctx.header_timeout)));
                }
                conn.as_mut().shutdown();
                // A graceful shutdown was requested: poll the connection.
                conn_gate.open();
                closing = true;
            }
            Event::HeadDeadline => {
                tracing::debug!("no complete request head within client_header_timeout while draining; closing");
                return Driven::CutOff;
            }
            Event::FirstRequestDue => {
                if ctx.activity.begun() == 0 {
                    tracing::debug!("no request within client_header_timeout; closing");
                    return Driven::CutOff;
                }
                first_request_by = None;
            }
            Event::GoawayGraceOver => {
                tracing::debug!("told GOAWAY, nothing in flight, no PING acknowledgement; closing");
                return Driven::CutOff;
            }
        }
    }
}

/// What ended one pass of [`drive`]'s loop.
enum Event {
    /// The connection finished (or failed).
    Ended,
    /// A watcher resolved: HTTP/1.1's, the idle watcher of HTTP/2 (and
    /// sniffed) connections, or the send-stall one of a closing connection.
    Watched(Watched),
    /// The server is draining.
    Drain,
    /// Draining, and the head in progress did not finish in time.
    HeadDeadline,
    /// The first request of a connection not watched as HTTP/1.1 was due.
    FirstRequestDue,
    /// An HTTP/2 connection told GOAWAY had nothing in flight for
    /// [`GOAWAY_GRACE`].
    GoawayGraceOver,
}

/// Part of a task's work that is polled only when its own waker fired (or
/// it was opened by hand), not at every wake-up of the task: the
/// connection itself (not its streams), and the watchers.
struct Gate {
    flag: Arc<GateFlag>,
    waker: std::task::Waker,
}

impl Gate {
    /// Open, so the first pass polls what is behind it.
    fn new() -> Self {
        let flag = Arc::new(GateFlag { woken: AtomicBool::new(true), task: AtomicWaker::new() });
        let waker = futures_util::task::waker(Arc::clone(&flag));
        Gate { flag, waker }
    }

    /// The task to wake when this gate's waker fires.
    fn register(&self, cx: &Context<'_>) {
        self.flag.task.register(cx.waker());
    }

    /// Whether to poll what is behind the gate now; closes it.
    fn take(&self) -> bool {
        self.flag.woken.swap(false, Ordering::AcqRel)
    }

    fn is_open(&self) -> bool {
        self.flag.woken.load(Ordering::Acquire)
    }

    /// Have the next pass poll what is behind the gate.
    fn open(&self) {
        self.flag.woken.store(true, Ordering::Release);
    }

    /// The context to poll what is behind the gate with.
    fn context(&self) -> Context<'_> {
        Context::from_waker(&self.waker)
    }
}

struct GateFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl futures_util::task::ArcWake for GateFlag {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.woken.store(true, Ordering::Release);
        arc_self.task.wake();
    }
}
