//! Driving one hyper connection: polling it and, inside the same task, its
//! HTTP/2 streams; watching an HTTP/1.1 one for the header timeout, the idle
//! timeout and rest (to hand it back for parking); and a graceful shutdown
//! on drain or idle timeout.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

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
}

/// How [`drive`] watches an HTTP/1.1 connection served by our own builder:
/// it enforces `client_header_timeout` (the builder has no header timer),
/// and with `park` hands the connection back once it rests.
#[derive(Clone, Copy)]
pub(super) struct Http1Watch {
    pub park: bool,
}

/// Drive a connection until it ends (`None`) or, with an [`Http1Watch`]
/// that parks, until it has been at rest for [`PARK_AFTER`](super::conn::PARK_AFTER) (`Some`, handed
/// back to be parked).
pub(super) async fn drive<C: HttpConn>(
    mut conn: Pin<Box<C>>,
    mut streams: Option<Streams>,
    ctx: &ConnCtx<'_>,
    http1: Option<Http1Watch>,
) -> Option<Pin<Box<C>>> {
    let park = http1.is_some_and(|w| w.park);
    let conn_wake = Arc::new(ConnWake { woken: AtomicBool::new(true), task: AtomicWaker::new() });
    let conn_waker = futures_util::task::waker(Arc::clone(&conn_wake));
    let mut closing = false;
    // Set on drain when a request head is in progress.
    let mut head_deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let running = std::future::poll_fn(|cx| {
            conn_wake.task.register(cx.waker());
            loop {
                // Only when the connection asked: an HTTP/2 connection's
                // poll is not free, and most wake-ups are for streams.
                if conn_wake.woken.swap(false, Ordering::AcqRel) {
                    if let Poll::Ready(res) = conn.as_mut().poll(&mut Context::from_waker(&conn_waker)) {
                        return Poll::Ready(res);
                    }
                }
                if let Some(s) = streams.as_mut() {
                    let _ = s.poll_run(cx);
                }
                // Streams that answered woke the connection to send: do it
                // now, in the same pass, for all of them at once.
                if !conn_wake.woken.load(Ordering::Acquire) {
                    return Poll::Pending;
                }
            }
        });
        tokio::select! {
            res = running => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return None;
            }
            watched = ctx.activity.watch(ctx.ticker, park, ctx.header_timeout, ctx.idle_timeout),
                if http1.is_some() && !closing => {
                match watched {
                    Watched::Rested => return Some(conn),
                    Watched::HeaderTimeout => {
                        // As hyper's own header timer does: close, no answer.
                        tracing::debug!("no complete request head within client_header_timeout; closing");
                        return None;
                    }
                    // hyper's graceful shutdown waits for a head it holds
                    // part of, and no timer would end that wait: close.
                    Watched::Idle if ctx.activity.reading_head() => return None,
                    Watched::Idle => {
                        conn.as_mut().shutdown();
                        conn_wake.wake_by_ref_now();
                        closing = true;
                    }
                }
            }
            _ = ctx.shutdown.cancelled(), if !closing => {
                if http1.is_some() && ctx.activity.reading_head() {
                    // The same on drain, where the shared tick has stopped:
                    // the head gets client_header_timeout from now to finish.
                    head_deadline = Some(Box::pin(tokio::time::sleep(ctx.header_timeout)));
                }
                conn.as_mut().shutdown();
                conn_wake.wake_by_ref_now();
                closing = true;
            }
            _ = async {
                match head_deadline.as_mut() {
                    Some(deadline) => deadline.await,
                    None => std::future::pending().await,
                }
            }, if head_deadline.is_some() => {
                tracing::debug!("no complete request head within client_header_timeout while draining; closing");
                return None;
            }
            _ = ctx.activity.idle_for(ctx.idle_timeout), if http1.is_none() && !closing => {
                conn.as_mut().shutdown();
                conn_wake.wake_by_ref_now();
                closing = true;
            }
        }
    }
}

/// The connection's own waker: records that the connection (not one of its
/// streams) has something to do, and wakes the task.
struct ConnWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl ConnWake {
    /// A graceful shutdown was requested: the connection must be polled.
    fn wake_by_ref_now(&self) {
        self.woken.store(true, Ordering::Release);
    }
}

impl futures_util::task::ArcWake for ConnWake {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.woken.store(true, Ordering::Release);
        arc_self.task.wake();
    }
}
