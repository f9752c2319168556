//! Per-route and per-server metric handles the request path keeps, made
//! once per config: counters cached by method and status code, so a request
//! skips the families' locks and label hashing.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::{method_label, CacheLabels, Metrics, Name, RequestLabels, RouteLabels, UpstreamCodeLabels};

/// A small lock-free cache of counter handles keyed by a small integer
/// (method and status code), so the request path skips the family's lock
/// and label hashing. When its slots are full it falls back to the family.
#[derive(Debug, Default)]
pub struct CounterCache {
    slots: [std::sync::OnceLock<(u32, Counter)>; 16],
}

impl CounterCache {
    /// Increment the counter for `key`, creating it with `make` on a miss.
    pub fn inc(&self, key: u32, make: impl FnOnce() -> Counter) {
        for slot in &self.slots {
            match slot.get() {
                Some((k, c)) if *k == key => {
                    c.inc();
                    return;
                }
                Some(_) => continue,
                None => break,
            }
        }
        // Miss: the family hands out the one counter for these labels, so
        // two threads caching it at once is harmless.
        let counter = make();
        for slot in &self.slots {
            if slot.get().is_none() && slot.set((key, counter.clone())).is_ok() {
                break;
            }
            if slot.get().is_some_and(|(k, _)| *k == key) {
                break;
            }
        }
        counter.inc();
    }
}

/// Per-route metric handles, resolved on first use and reused after.
#[derive(Debug)]
pub struct RouteMetrics {
    pub name: Name,
    requests: CounterCache,
    duration: std::sync::OnceLock<Histogram>,
    cache_hits: std::sync::OnceLock<Counter>,
}

impl RouteMetrics {
    pub fn new(name: Arc<str>) -> Self {
        RouteMetrics {
            name: Name(name),
            requests: CounterCache::default(),
            duration: std::sync::OnceLock::new(),
            cache_hits: std::sync::OnceLock::new(),
        }
    }

    /// Count one answered request and its duration.
    pub fn record(&self, m: &Metrics, method: &http::Method, code: u16, seconds: f64) {
        let method = method_label(method);
        let key = (u32::from(method_index(method)) << 16) | u32::from(code);
        self.requests.inc(key, || {
            m.http_requests.get_or_create(&RequestLabels { route: self.name.clone(), method, code }).clone()
        });
        self.duration
            .get_or_init(|| m.http_request_duration.get_or_create(&RouteLabels { route: self.name.clone() }).clone())
            .observe(seconds);
    }
}

impl RouteMetrics {
    /// Count one fresh cache hit (`rampart_cache_requests_total{result="hit"}`).
    pub fn cache_hit(&self, m: &Metrics) {
        self.cache_hits
            .get_or_init(|| {
                m.cache_requests.get_or_create(&CacheLabels { route: self.name.clone(), result: "hit" }).clone()
            })
            .inc();
    }
}

/// Per-server handles for `rampart_upstream_requests_total`.
#[derive(Debug)]
pub struct ServerMetrics {
    upstream: Name,
    server: Name,
    codes: CounterCache,
}

impl ServerMetrics {
    pub fn new(upstream: Arc<str>, server: Arc<str>) -> Self {
        ServerMetrics { upstream: Name(upstream), server: Name(server), codes: CounterCache::default() }
    }

    /// Count one upstream exchange; code 0 means no response (connect error, reset, timeout).
    pub fn count(&self, m: &Metrics, code: u16) {
        self.codes.inc(u32::from(code), || {
            m.upstream_requests
                .get_or_create(&UpstreamCodeLabels {
                    upstream: self.upstream.clone(),
                    server: self.server.clone(),
                    code,
                })
                .clone()
        });
    }
}

fn method_index(label: &str) -> u8 {
    match label {
        "GET" => 0,
        "POST" => 1,
        "PUT" => 2,
        "DELETE" => 3,
        "HEAD" => 4,
        "OPTIONS" => 5,
        "PATCH" => 6,
        "CONNECT" => 7,
        "TRACE" => 8,
        _ => 9,
    }
}
