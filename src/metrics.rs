//! Prometheus metrics: one registry and the families the contract names.
//! Label values come from the config (route, upstream and server names) or
//! from small closed sets (method, status code), never from request text,
//! so cardinality stays bounded.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

mod handles;
pub use handles::{CounterCache, RouteMetrics, ServerMetrics};

/// A shared label value (route, upstream or server name), cloned by
/// reference count instead of copied per request.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    /// Escaped as the exposition formats require (`\\`, `\"`, `\n`): a
    /// route named with a quote would otherwise end its label early and
    /// make the whole scrape unparseable (prometheus-client writes label
    /// values as they are).
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        let s: &str = &self.0;
        if !s.contains(['\\', '"', '\n']) {
            return encoder.write_str(s);
        }
        for c in s.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: Name,
    pub method: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamCodeLabels {
    pub upstream: Name,
    pub server: Name,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub upstream: Name,
    pub server: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub route: Name,
    /// `hit`, `stale`, `miss`, `bypass` or `revalidated`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    /// `memory` or `disk`.
    pub tier: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DomainLabels {
    pub domain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

/// The `[cluster]` families, registered only when a cluster is configured.
#[derive(Clone, Debug, Default)]
pub struct ClusterMetrics {
    /// 1 while Redis answers (the circuit breaker is closed).
    pub up: Gauge,
    /// Redis calls that failed or timed out, by operation.
    pub store_errors: Family<OperationLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Bytes of static files sent by `sendfile(2)`, process-wide: counted
/// where the call is made, far from any `Metrics`.
pub fn static_sendfile_bytes() -> &'static Counter {
    static BYTES: std::sync::OnceLock<Counter> = std::sync::OnceLock::new();
    BYTES.get_or_init(Counter::default)
}

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub upstream_requests: Family<UpstreamCodeLabels, Counter>,
    pub upstream_server_up: Family<ServerLabels, Gauge>,
    pub upstream_in_flight: Family<ServerLabels, Gauge>,
    pub upstream_idle_connections: Family<ServerLabels, Gauge>,
    /// The series of the three per-server gauges above.
    pub upstream_server_series: GaugeSeries<ServerLabels>,
    pub connections_active: Family<ListenerLabels, Gauge>,
    pub tls_handshakes: Family<ResultLabels, Counter>,
    pub certificate_expiry: Family<DomainLabels, Gauge>,
    pub ratelimit_rejected: Family<RouteLabels, Counter>,
    pub config_reloads: Family<ResultLabels, Counter>,
    /// 1 while a discovery provider (docker, dns) gets answers.
    pub provider_up: Family<ProviderLabels, Gauge>,
    pub cache_requests: Family<CacheLabels, Counter>,
    pub cache_bytes: Family<TierLabels, Gauge>,
    pub acme_on_demand: Family<ResultLabels, Counter>,
    /// Access-log lines dropped because stdout could not keep up.
    pub access_log_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rampart");
        let http_requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status code",
            http_requests.clone(),
        );
        let http_request_duration = Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from request head to response head, by route",
            http_request_duration.clone(),
        );
        let upstream_requests = Family::default();
        registry.register(
            "upstream_requests",
            "Requests sent to upstream servers, by status code",
            upstream_requests.clone(),
        );
        let upstream_server_up = Family::default();
        registry.register("upstream_server_up", "1 when the server is in rotation", upstream_server_up.clone());
        let upstream_in_flight = Family::default();
        registry.register("upstream_in_flight", "Requests in flight to the server", upstream_in_flight.clone());
        let upstream_idle_connections = Family::default();
        registry.register(
            "upstream_idle_connections",
            "Kept-alive connections to the server waiting for a request",
            upstream_idle_connections.clone(),
        );
        let connections_active = Family::default();
        registry.register("connections_active", "Open client connections, by listener", connections_active.clone());
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access-log lines dropped because stdout could not keep up (8 MiB pending)",
            access_log_dropped.clone(),
        );
        let tls_handshakes = Family::default();
        registry.register("tls_handshakes", "TLS handshakes, by result", tls_handshakes.clone());
        let certificate_expiry = Family::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "Unix time at which the served certificate expires",
            certificate_expiry.clone(),
        );
        let ratelimit_rejected = Family::default();
        registry.register(
            "ratelimit_rejected",
            "Requests rejected by rate limiting, by route",
            ratelimit_rejected.clone(),
        );
        let config_reloads = Family::default();
        registry.register("config_reloads", "Config reloads, by result", config_reloads.clone());
        for result in ["success", "failure"] {
            let _ = config_reloads.get_or_create(&ResultLabels { result });
        }
        let acme_on_demand = Family::default();
        registry.register(
            "acme_on_demand",
            "On-demand TLS decisions and orders, by result (issued, refused, failed, limited)",
            acme_on_demand.clone(),
        );
        let provider_up = Family::default();
        registry.register(
            "provider_up",
            "1 while the discovery provider gets answers from its source",
            provider_up.clone(),
        );
        let cache_requests = Family::default();
        registry.register(
            "cache_requests",
            "Requests on cached routes, by route and result (hit, stale, miss, bypass, revalidated)",
            cache_requests.clone(),
        );
        let cache_bytes = Family::default();
        registry.register("cache_bytes", "Bytes the caches hold, by tier (memory, disk)", cache_bytes.clone());
        registry.register(
            "static_sendfile_bytes",
            "Bytes of static files sent by sendfile(2) (plain HTTP/1.1)",
            static_sendfile_bytes().clone(),
        );
        Metrics {
            acme_on_demand,
            registry,
            http_requests,
            http_request_duration,
            upstream_requests,
            upstream_server_up,
            upstream_in_flight,
            upstream_idle_connections,
            upstream_server_series: GaugeSeries::default(),
            connections_active,
            tls_handshakes,
            certificate_expiry,
            ratelimit_rejected,
            config_reloads,
            provider_up,
            cache_requests,
            cache_bytes,
            access_log_dropped,
        }
    }

    /// Register `rampart_cluster_up` and `rampart_cluster_store_errors_total`.
    pub fn register_cluster(&mut self) -> ClusterMetrics {
        let m = ClusterMetrics::default();
        self.registry.register("cluster_up", "1 while the cluster store (Redis) answers", m.up.clone());
        self.registry.register(
            "cluster_store_errors",
            "Cluster store (Redis) calls that failed or timed out, by operation",
            m.store_errors.clone(),
        );
        m
    }

    /// The OpenMetrics text exposition (what Prometheus asks for).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The classic Prometheus text format 0.0.4, for clients that do not
    /// ask for OpenMetrics (curl, `promtool check metrics`, older scrapers).
    pub fn encode_prometheus_text(&self) -> String {
        openmetrics_to_prometheus_text(&self.encode())
    }
}

/// Content type of [`Metrics::encode`].
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of [`Metrics::encode_prometheus_text`].
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Turn prometheus-client's OpenMetrics output into text format 0.0.4. The
/// two differ, for what we expose, in two details: an OpenMetrics counter
/// family is named without its `_total` suffix in `# HELP`/`# TYPE` (the
/// samples carry it), and the exposition ends with `# EOF`.
pub fn openmetrics_to_prometheus_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        om.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|rest| rest.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(om.len() + 16 * counters.len());
    for line in om.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Whether an `Accept` header asks for OpenMetrics (Prometheus does).
pub fn wants_openmetrics(accept: Option<&http::HeaderValue>) -> bool {
    accept.and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Method as a bounded label value.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// The label sets gauge families refreshed from live state have series
/// for. A refresh sets the current series in place and then removes only
/// the stale ones, one refresh at a time: clearing the families first let
/// a scrape running meanwhile (a second Prometheus, say) find them empty,
/// and two refreshes interleaving could leave a stale series behind.
#[derive(Debug)]
pub struct GaugeSeries<L>(std::sync::Mutex<std::collections::HashSet<L>>);

impl<L> Default for GaugeSeries<L> {
    fn default() -> Self {
        GaugeSeries(std::sync::Mutex::new(std::collections::HashSet::new()))
    }
}

impl<L: Clone + std::hash::Hash + Eq> GaugeSeries<L> {
    /// `set` sets every current series of `families` and returns their
    /// labels; series under any other labels it had before are removed.
    pub fn refresh(&self, families: &[&Family<L, Gauge>], set: impl FnOnce() -> std::collections::HashSet<L>) {
        let Ok(mut known) = self.0.lock() else { return };
        let now = set();
        for gone in known.difference(&now) {
            for family in families {
                family.remove(gone);
            }
        }
        *known = now;
    }
}

#[cfg(test)]
mod tests;
