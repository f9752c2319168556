//! On-demand TLS (`[acme.on_demand]`): a handshake for a name with no
//! certificate asks the operator's `ask` endpoint (`?domain=NAME`, 2xx
//! allows) and, when allowed, orders a certificate while the handshake
//! waits up to `wait`. Guards, in order: the name must be a valid host
//! name matching a route host pattern; a cached decision answers repeats
//! (refusals for 10 minutes, failed asks for a minute); at most
//! `max_per_hour` new names are asked about (and so ordered) per hour; an
//! order that fails backs off as every renewal does. Counted in
//! `rampart_acme_on_demand_total{result}` (`issued`, `refused`, `failed`,
//! `limited`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::AcmeManager;
use crate::config::{valid_cert_name, HostPattern, OnDemandSettings};
use crate::metrics::ResultLabels;

const HOUR: Duration = Duration::from_secs(3600);
const REFUSAL_TTL: Duration = Duration::from_secs(600);
const ASK_ERROR_TTL: Duration = Duration::from_secs(60);
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// Names remembered at most (oldest decisions dropped past this).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Asking,
    Allowed,
    /// Not asked again before `until`: the endpoint refused the name, or
    /// (`ask_failed`) could not be asked, which is retried sooner.
    Refused {
        until: Instant,
        ask_failed: bool,
    },
}

#[derive(Default)]
struct State {
    names: HashMap<String, (Decision, Instant)>,
    /// When each name asked about in the last hour was asked.
    asked: VecDeque<Instant>,
}

pub struct OnDemand {
    settings: OnDemandSettings,
    manager: Weak<AcmeManager>,
    patterns: arc_swap::ArcSwap<Vec<HostPattern>>,
    state: Mutex<State>,
    pub(super) counter: Family<ResultLabels, Counter>,
    client: Client<HttpConnector, Empty<Bytes>>,
}

/// Whether a route host pattern admits `name`.
pub fn pattern_matches(p: &HostPattern, name: &str) -> bool {
    match p {
        HostPattern::Any => true,
        HostPattern::Exact(h) => h == name,
        HostPattern::Wildcard(suffix) => name.ends_with(suffix.as_str()) && name.len() > suffix.len(),
    }
}

impl OnDemand {
    pub fn new(
        settings: OnDemandSettings,
        manager: Weak<AcmeManager>,
        patterns: Vec<HostPattern>,
        counter: Family<ResultLabels, Counter>,
    ) -> OnDemand {
        for result in ["issued", "refused", "failed", "limited"] {
            let _ = counter.get_or_create(&ResultLabels { result });
        }
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        OnDemand {
            settings,
            manager,
            patterns: arc_swap::ArcSwap::from_pointee(patterns),
            state: Mutex::new(State::default()),
            counter,
            client,
        }
    }

    /// The route host patterns in force (after a reload).
    pub fn set_patterns(&self, patterns: Vec<HostPattern>) {
        self.patterns.store(Arc::new(patterns));
    }

    pub(super) fn count(&self, result: &'static str) {
        self.counter.get_or_create(&ResultLabels { result }).inc();
    }

    /// Called by the TLS listener for a handshake whose name has no
    /// certificate: returns once one is served for it, or when there will
    /// be none within `wait`.
    pub async fn ensure(&self, sni: &str) {
        let name = sni.trim_end_matches('.').to_ascii_lowercase();
        let Some(manager) = self.manager.upgrade() else { return };
        let ip = name.parse::<std::net::IpAddr>().is_ok();
        if ip || !valid_cert_name(&name) || name.starts_with("*.") || manager.tls.live.load().covers(&name) {
            return;
        }
        if !self.patterns.load().iter().any(|p| pattern_matches(p, &name)) {
            return;
        }
        let started = Instant::now();
        match self.decide(&name) {
            Some(Decision::Refused { .. }) | None => return,
            Some(Decision::Asking) => {
                let outcome = self.ask(&name).await;
                self.record(&name, outcome);
                if outcome != Some(true) {
                    return;
                }
                tracing::info!(domain = %name, "on-demand certificate allowed; ordering");
                if let Ok(mut names) = manager.on_demand_names.lock() {
                    names.insert(name.clone());
                }
                manager.manage(vec![name.clone()]).await;
            }
            Some(Decision::Allowed) => {}
        }
        let deadline = started + self.settings.wait;
        while Instant::now() < deadline {
            if manager.tls.live.load().covers(&name) || self.refused(&name) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!(domain = %name, "no on-demand certificate within the wait; serving the fallback");
    }

    /// The cached decision for `name`, or a new ask slot (`Asking`) if the
    /// hourly budget has room; `None`: limited, or another handshake is
    /// asking.
    fn decide(&self, name: &str) -> Option<Decision> {
        let Ok(mut st) = self.state.lock() else { return None };
        let now = Instant::now();
        match st.names.get(name).map(|(d, _)| *d) {
            Some(d @ Decision::Refused { until, .. }) if until > now => return Some(d),
            Some(Decision::Allowed) => return Some(Decision::Allowed),
            Some(Decision::Asking) => return Some(Decision::Allowed),
            _ => {}
        }
        while st.asked.front().is_some_and(|t| now.duration_since(*t) >= HOUR) {
            st.asked.pop_front();
        }
        if st.asked.len() >= self.settings.max_per_hour as usize {
            drop(st);
            self.count("limited");
            tracing::warn!(domain = %name, max_per_hour = self.settings.max_per_hour, "on-demand TLS: hourly limit reached; not asking");
            return None;
        }
        st.asked.push_back(now);
        if st.names.len() >= MAX_ENTRIES {
            // Drop expired refusals first, then the oldest entry.
            st.names.retain(|_, (d, _)| !matches!(d, Decision::Refused { until, .. } if *until <= now));
            if st.names.len() >= MAX_ENTRIES {
                let oldest = st.names.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    st.names.remove(&k);
                }
            }
        }
        st.names.insert(name.to_string(), (Decision::Asking, now));
        Some(Decision::Asking)
    }

    fn refused(&self, name: &str) -> bool {
        self.state.lock().is_ok_and(|st| matches!(st.names.get(name), Some((Decision::Refused { .. }, _))))
    }

    /// `outcome`: as [`OnDemand::ask`] answered.
    fn record(&self, name: &str, outcome: Option<bool>) {
        if let Ok(mut st) = self.state.lock() {
            let d = match outcome {
                Some(true) => Decision::Allowed,
                Some(false) => Decision::Refused { until: Instant::now() + REFUSAL_TTL, ask_failed: false },
                None => Decision::Refused { until: Instant::now() + ASK_ERROR_TTL, ask_failed: true },
            };
            st.names.insert(name.to_string(), (d, Instant::now()));
        }
    }

    /// GET `ask?domain=NAME`: `Some(true)` for a 2xx, `Some(false)` for
    /// another status, `None` when the endpoint cannot be asked.
    async fn ask(&self, name: &str) -> Option<bool> {
        let sep = if self.settings.ask.contains('?') { '&' } else { '?' };
        let url = format!("{}{sep}domain={name}", self.settings.ask);
        let Ok(uri) = url.parse::<http::Uri>() else {
            self.count("failed");
            return None;
        };
        match tokio::time::timeout(ASK_TIMEOUT, self.client.get(uri)).await {
            Ok(Ok(r)) if r.status().is_success() => Some(true),
            Ok(Ok(r)) => {
                self.count("refused");
                tracing::info!(domain = %name, status = r.status().as_u16(), "on-demand TLS: the ask endpoint refused the name");
                Some(false)
            }
            Ok(Err(e)) => {
                self.count("failed");
                tracing::warn!(domain = %name, error = %e, "on-demand TLS: cannot reach the ask endpoint");
                None
            }
            Err(_) => {
                self.count("failed");
                tracing::warn!(domain = %name, "on-demand TLS: the ask endpoint did not answer in time");
                None
            }
        }
    }

    /// `/api/status` "on_demand".
    pub fn status_json(&self) -> serde_json::Value {
        let (names, asked) = match self.state.lock() {
            Ok(st) => {
                let now = Instant::now();
                let mut names: Vec<serde_json::Value> = st
                    .names
                    .iter()
                    .map(|(n, (d, _))| {
                        let state = match d {
                            Decision::Asking => "asking",
                            Decision::Allowed => "allowed",
                            // As the metric counts them: `failed` asks, `refused` names.
                            Decision::Refused { until, ask_failed } if *until > now => {
                                if *ask_failed {
                                    "ask_failed"
                                } else {
                                    "refused"
                                }
                            }
                            Decision::Refused { .. } => "expired",
                        };
                        serde_json::json!({"name": n, "state": state})
                    })
                    .collect();
                names.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
                (names, st.asked.iter().filter(|t| now.duration_since(**t) < HOUR).count())
            }
            Err(_) => (Vec::new(), 0),
        };
        serde_json::json!({
            "ask": self.settings.ask,
            "max_per_hour": self.settings.max_per_hour,
            "asked_last_hour": asked,
            "names": names,
        })
    }
}

impl crate::tls::OnDemandHook for OnDemand {
    fn ensure<'a>(&'a self, name: &'a str) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(OnDemand::ensure(self, name))
    }
}
