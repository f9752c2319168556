//! Sending one request upstream: pick a server, send, and on failure decide
//! whether trying another server is safe. Live-traffic outcomes feed the
//! servers' passive health.
//!
//! Retry rules: a request is tried on another server only if it has no body
//! (bodies are streamed, never buffered, so they cannot be replayed) and
//! either the connection failed before anything was sent, or the method is
//! idempotent and the connection broke before any response byte arrived.
//! Timeouts are not retried: the first server may still be working on it.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};

use super::error::ProxyError;
use super::exchange::Exchange;
use crate::app::App;
use crate::body::RequestBody;
use crate::upstream::{is_idempotent, InFlightGuard, Pool, SendError, Server, Transition, UpstreamBody};

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Nothing reached the server.
    BeforeSend(ProxyError),
    /// The request may have reached the server; no response came.
    AfterSend(ProxyError),
}

pub async fn send(
    app: &App,
    pool: &Pool,
    mut parts: Parts,
    body: RequestBody,
    path: PathAndQuery,
    ex: &mut Exchange,
) -> Result<(Response<UpstreamBody>, InFlightGuard), ProxyError> {
    let bodiless = http_body::Body::is_end_stream(&body);
    let max_attempts = if bodiless { 1 + pool.spec.retries as usize } else { 1 }.min(pool.servers.len());
    // Keep a copy of the head only when a second attempt is possible.
    let spare = (max_attempts > 1).then(|| clone_head(&parts));
    let mut body = Some(body);
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
        let mut head = match &spare {
            Some(p) if attempts > 1 => clone_head(p),
            _ => std::mem::replace(&mut parts, Request::new(()).into_parts().0),
        };
        // Origin-form: the connection is to the server itself.
        head.uri = Uri::from(path.clone());
        if !head.headers.contains_key(header::HOST) {
            // preserve_host = false: name the server.
            if let Ok(v) = HeaderValue::from_str(server.authority.as_str()) {
                head.headers.insert(header::HOST, v);
            }
        }
        let idempotent = is_idempotent(&head.method);
        let attempt_body = body.take().unwrap_or_else(RequestBody::empty);
        let guard = server.start_request();
        let sent = tokio::time::timeout(
            pool.response_timeout(),
            pool.client.request(server, Request::from_parts(head, attempt_body)),
        )
        .await;
        let failure = match sent {
            Ok(Ok(resp)) => {
                count(app, server, resp.status().as_u16());
                log_transition(pool, server, server.record_success(), "request succeeded");
                return Ok((resp, guard));
            }
            Ok(Err(SendError::ClientBody(e))) => {
                // The client's body failed (it left, or hit a limit): not
                // the server's fault, and nothing to retry.
                tracing::debug!(upstream = %pool.name, error = %e, "client request body failed");
                return Err(ProxyError::Broken);
            }
            Ok(Err(e)) => {
                let failure = classify(&e);
                tracing::warn!(upstream = %pool.name, server = %server.addr.0, error = %error_chain(&e), "upstream request failed");
                failure
            }
            Err(_) => {
                tracing::warn!(upstream = %pool.name, server = %server.addr.0, timeout = ?pool.response_timeout(), "upstream response timed out");
                Failure::AfterSend(ProxyError::Timeout)
            }
        };
        log_transition(pool, server, server.record_failure(&pool.spec.passive), "live traffic failures");
        let (error, retry_safe) = match failure {
            Failure::BeforeSend(e) => (e, true),
            Failure::AfterSend(e) => (e, idempotent && e != ProxyError::Timeout),
        };
        // No upstream status: count the attempt under the status the proxy
        // would answer for it (502 connect/reset, 504 timeout), as Traefik does.
        count(app, server, error.status().as_u16());
        if !(retry_safe && bodiless && attempts < max_attempts.min(tried_buf.len())) {
            return Err(error);
        }
    }
}

fn count(app: &App, server: &Server, code: u16) {
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

fn clone_head(p: &Parts) -> Parts {
    let mut r = Request::new(());
    *r.method_mut() = p.method.clone();
    *r.uri_mut() = p.uri.clone();
    *r.version_mut() = p.version;
    *r.headers_mut() = p.headers.clone();
    r.into_parts().0
}

fn classify(e: &SendError) -> Failure {
    match e {
        SendError::ConnectTimeout => Failure::BeforeSend(ProxyError::Timeout),
        SendError::Connect(io) if io.kind() == std::io::ErrorKind::TimedOut => Failure::BeforeSend(ProxyError::Timeout),
        SendError::Connect(_) => Failure::BeforeSend(ProxyError::Connect),
        SendError::Io(_) | SendError::Protocol(_) | SendError::ClientBody(_) => Failure::AfterSend(ProxyError::Broken),
    }
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
