//! What every request shares with the process: the snapshot holder, the
//! metrics, the access log, request ids, readiness, and the plain-HTTP
//! answers that come before routing. The app owns one and hands it to the
//! listeners; the proxy, the server and the TLS listener see only this,
//! never the app (its reload, ACME and status live above them).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use http::{Request, Response};
use hyper::body::Incoming;

use super::request_id::RequestIds;
use crate::access_log::AccessLog;
use crate::body::ResponseBody;
use crate::config::NO_ROUTE;
use crate::metrics::{Metrics, RouteMetrics};
use crate::state::{Snapshot, State};

/// Answers for requests that arrived without TLS, before they are routed
/// (ACME HTTP-01 tokens, the 308 to `https://`): `tls::TlsState` is one.
pub trait PlainHttp: Send + Sync {
    /// The answer, or `None` to route the request as usual.
    fn answer(&self, req: &Request<Incoming>) -> Option<Response<ResponseBody>>;
}

pub struct Shared {
    pub state: State,
    pub metrics: Metrics,
    pub access_log: AccessLog,
    pub request_ids: RequestIds,
    /// Metric handles for requests that matched no route.
    pub no_route_metrics: RouteMetrics,
    /// Set once at start when TLS is configured.
    pub plain_http: OnceLock<Arc<dyn PlainHttp>>,
    ready: AtomicBool,
}

impl Shared {
    pub fn new(snapshot: Snapshot, metrics: Metrics) -> Shared {
        let access_log = if snapshot.config.server.access_log {
            AccessLog::stdout(metrics.access_log_dropped.clone())
        } else {
            AccessLog::disabled()
        };
        Shared {
            state: State::new(snapshot),
            metrics,
            access_log,
            request_ids: RequestIds::default(),
            no_route_metrics: RouteMetrics::new(Arc::from(NO_ROUTE)),
            plain_http: OnceLock::new(),
            ready: AtomicBool::new(false),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}
