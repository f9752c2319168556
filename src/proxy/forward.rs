//! Sending one request upstream: pick a server, send, and on failure decide
//! whether trying another server is safe. Live-traffic outcomes feed the
//! servers' passive health.
//!
//! Retry rules: a request whose connection could not be made (refused,
//! unreachable, connect timeout) is tried on another server, body or not:
//! nothing of it was sent, and its body has not been read yet. Once sent,
//! only a request without a body (bodies are streamed, never buffered, so
//! they cannot be replayed) with an idempotent method is tried again, when
//! the connection broke before any response byte arrived. Timeouts after
//! sending are not retried: the first server may still be working on it.

use std::sync::Arc;

use http::header;
use http::uri::PathAndQuery;
use http::{Request, Response};

use super::error::ProxyError;
use super::exchange::Exchange;
use super::Shared;
use crate::body::RequestBody;
use crate::upstream::{is_idempotent, InFlightGuard, Pool, RequestHead, SendError, Server, Transition, UpstreamBody};

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Nothing reached the server.
    BeforeSend(ProxyError),
    /// The request may have reached the server; no response came.
    AfterSend(ProxyError),
}

/// Send `req` upstream (its head as the proxy rewrote it, `path` in origin
/// form, then the `extra` header lines) and wait for the response head.
/// The head is borrowed, so a retry sends it again without a copy; the
/// body goes with the first attempt.
pub async fn send(
    app: &Shared,
    pool: &Pool,
    req: &mut Request<RequestBody>,
    path: &PathAndQuery,
    extra: &[(&str, &[u8])],
    ex: &mut Exchange,
) -> Result<(Response<UpstreamBody>, InFlightGuard), ProxyError> {
    let bodiless = http_body::Body::is_end_stream(req.body());
    let max_attempts = (1 + pool.spec.retries as usize).min(pool.servers.len());
    // The body leaves this function with the first attempt that gets a
    // connection; until then it stays here for the next server.
    let mut body = Some(std::mem::replace(req.body_mut(), RequestBody::empty()));
    // No `Host` left (the route does not keep the client's, or a header rule
    // removed it): each attempt names its own server, as HTTP/1.1 needs one.
    let names_server = !req.headers().contains_key(header::HOST);
    // At most 11 attempts (retries <= 10): a stack array, no allocation.
    let mut tried_buf = [0usize; 11];
    let mut attempts = 0usize;
    loop {
        let tried = &tried_buf[..attempts];
        let Some(idx) = pool.pick(tried) else {
            return Err(if tried.is_empty() { ProxyError::NoServer } else { ProxyError::Connect });
        };
        tried_buf[attempts.min(tried_buf.len() - 1)] = idx;
        attempts += 1;
        let server = &pool.servers[idx];
        ex.upstream = Some(Arc::clone(&server.label));
        if names_server {
            match &server.host_header {
                Some(host) => req.headers_mut().insert(header::HOST, host.clone()),
                None => req.headers_mut().remove(header::HOST),
            };
        }
        let idempotent = is_idempotent(req.method());
        let guard = server.start_request();
        let head = RequestHead { method: req.method(), path_and_query: path.as_str(), headers: req.headers(), extra };
        let sent = match pool.client.connection(server).await {
            // The body goes with the first attempt that connects; a later
            // one (bodiless only) sends none.
            Ok(conn) => pool.client.send_on(server, conn, head, body.take().unwrap_or_else(RequestBody::empty)).await,
            Err(e) => Err(e),
        };
        let failure = match sent {
            Ok(resp) => {
                count(app, server, resp.status().as_u16());
                log_transition(pool, server, server.record_success(), "request succeeded");
                return Ok((resp, guard));
            }
            Err(SendError::ClientBody(e)) => {
                // The client's body failed (it left, was malformed, or hit
                // a limit): not the server's fault, and nothing to retry.
                tracing::debug!(upstream = %pool.name, error = %error_chain(&*e), "client request body failed");
                return Err(client_body_error(&*e));
            }
            Err(SendError::ClientBodyTimeout) => {
                tracing::debug!(upstream = %pool.name, timeout = ?pool.response_timeout(), "client request body stalled");
                return Err(ProxyError::ClientTimeout);
            }
            Err(SendError::Timeout) => {
                tracing::warn!(upstream = %pool.name, server = %server.addr.0, timeout = ?pool.response_timeout(), "upstream response timed out");
                Failure::AfterSend(ProxyError::Timeout)
            }
            Err(e) => {
                let failure = classify(&e);
                tracing::warn!(upstream = %pool.name, server = %server.addr.0, error = %error_chain(&e), "upstream request failed");
                failure
            }
        };
        if counts_against(pool, &failure) {
            log_transition(pool, server, server.record_failure(&pool.spec.passive), "live traffic failures");
        }
        let (error, retry_safe) = match failure {
            Failure::BeforeSend(e) => (e, true),
            Failure::AfterSend(e) => (e, idempotent && e != ProxyError::Timeout),
        };
        // No upstream status: count the attempt under the status the proxy
        // would answer for it (502 connect/reset, 504 timeout), as Traefik does.
        count(app, server, error.status().as_u16());
        // A bodied request can go again only while its body is still here.
        let resendable = bodiless || body.is_some();
        if !(retry_safe && resendable && attempts < max_attempts.min(tried_buf.len())) {
            return Err(error);
        }
    }
}

fn count(app: &Shared, server: &Server, code: u16) {
    server.metrics.count(&app.metrics, code);
}

fn log_transition(pool: &Pool, server: &Server, t: Option<Transition>, reason: &str) {
    match t {
        Some(Transition::Ejected { for_duration }) => {
            tracing::warn!(pool = %pool.name, server = %server.addr.0, from = "up", to = "ejected", cool_down = ?for_duration, reason, "upstream server state changed");
        }
        Some(Transition::Restored) => {
            tracing::info!(pool = %pool.name, server = %server.addr.0, from = "ejected", to = "up", reason, "upstream server state changed");
        }
        None => {}
    }
}

/// Whether a failed attempt counts toward the server's passive ejection,
/// as nginx's `max_fails` counts with its default `proxy_next_upstream
/// error timeout`:
/// - not an answer that was no valid HTTP (nginx's `invalid_header`): the
///   server is up and answering, and one endpoint's malformed answers
///   would otherwise take every route off it;
/// - never for the only server of a pool, which nginx never considers
///   unavailable: ejecting it answers every request 503 for the cool-down,
///   where trying it can still serve the requests that work.
fn counts_against(pool: &Pool, failure: &Failure) -> bool {
    pool.servers.len() > 1 && !matches!(failure, Failure::AfterSend(ProxyError::BadResponse))
}

fn classify(e: &SendError) -> Failure {
    match e {
        SendError::ConnectTimeout => Failure::BeforeSend(ProxyError::Timeout),
        SendError::Connect(io) if io.kind() == std::io::ErrorKind::TimedOut => Failure::BeforeSend(ProxyError::Timeout),
        SendError::Connect(_) => Failure::BeforeSend(ProxyError::Connect),
        SendError::Timeout => Failure::AfterSend(ProxyError::Timeout),
        SendError::Protocol(_) => Failure::AfterSend(ProxyError::BadResponse),
        SendError::Io(_) | SendError::ClientBody(_) | SendError::ClientBodyTimeout => {
            Failure::AfterSend(ProxyError::Broken)
        }
    }
}

/// A body cut off by a limit (`body_limit`'s `http_body_util::Limited`)
/// is 413; a malformed body (a bad chunk size line, more data than
/// announced) is the client's 400; anything else (it reset or closed the
/// connection, or an HTTP/2 stream) means it left: 499. hyper reports the
/// malformed kind as an `InvalidInput` or `InvalidData` I/O error somewhere
/// in the chain.
fn client_body_error(e: &(dyn std::error::Error + 'static)) -> ProxyError {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return ProxyError::BodyTooLarge;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData) {
                return ProxyError::BadBody;
            }
        }
        cur = err.source();
    }
    ProxyError::ClientClosed
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        s.push_str(": ");
        s.push_str(&err.to_string());
        cur = err.source();
    }
    s
}
