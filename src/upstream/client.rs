//! The pooled keep-alive HTTP/1.1 client used to reach upstream servers
//! (hyper-util's legacy client over its TCP connector).

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::RequestBody;

/// What a client is built from; a reload reuses the old client (and its
/// warm connections) when these are unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    pub max_idle_per_server: usize,
}

pub type UpstreamClient = Client<HttpConnector, RequestBody>;

pub fn build(settings: ClientSettings) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(settings.connect_timeout));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(settings.max_idle_per_server)
        // Requests that hit a pooled connection the server had just closed
        // are retried by hyper itself: nothing reached the application.
        .retry_canceled_requests(true)
        .set_host(false)
        .build(connector)
}
