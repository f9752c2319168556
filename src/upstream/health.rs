//! Active health checks: one cancellable probe task per (pool, server) that
//! has `[upstreams.NAME.health]`. After every reload [`HealthChecker::sync`]
//! starts tasks for new servers, restarts those whose probe settings
//! changed, and stops those whose pool or server is gone; a server that
//! stays keeps its task and its state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio_util::sync::CancellationToken;

use super::pool::Pool;
use super::server::Server;
use crate::config::{HealthSpec, UpstreamAddr};

type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

struct ProbeTask {
    spec: HealthSpec,
    server: Arc<Server>,
    stop: CancellationToken,
}

/// Owns the probe tasks.
pub struct HealthChecker {
    tasks: Mutex<HashMap<(String, UpstreamAddr), ProbeTask>>,
    client: ProbeClient,
}

impl Default for HealthChecker {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // Each probe opens a fresh connection, so a server that stopped
        // accepting is noticed even if an old connection still works.
        let client =
            Client::builder(TokioExecutor::new()).timer(TokioTimer::new()).pool_max_idle_per_host(0).build(connector);
        HealthChecker { tasks: Mutex::new(HashMap::new()), client }
    }
}

impl HealthChecker {
    /// Make the running probe tasks match `pools` (a snapshot's, all of them).
    pub fn sync<'a>(&self, pools: impl IntoIterator<Item = &'a Arc<Pool>>) {
        let Ok(mut tasks) = self.tasks.lock() else { return };
        let mut wanted: HashMap<(String, UpstreamAddr), (HealthSpec, Arc<Server>)> = HashMap::new();
        for pool in pools {
            let Some(spec) = &pool.spec.health else {
                // Without probes a server must not stay out because of an old verdict.
                for s in &pool.servers {
                    s.set_probe_healthy(true);
                }
                continue;
            };
            for s in &pool.servers {
                wanted.insert((pool.name.to_string(), s.addr.clone()), (spec.clone(), Arc::clone(s)));
            }
        }
        tasks.retain(|key, task| {
            let keep =
                wanted.get(key).is_some_and(|(spec, server)| *spec == task.spec && Arc::ptr_eq(server, &task.server));
            if !keep {
                task.stop.cancel();
            }
            keep
        });
        for (key, (spec, server)) in wanted {
            if tasks.contains_key(&key) {
                continue;
            }
            let stop = CancellationToken::new();
            let probe = Probe {
                pool: key.0.clone(),
                server: Arc::clone(&server),
                spec: spec.clone(),
                client: self.client.clone(),
            };
            tokio::spawn(probe.run(stop.clone()));
            tasks.insert(key, ProbeTask { spec, server, stop });
        }
    }

    /// Stop every probe (shutdown).
    pub fn stop_all(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for (_, t) in tasks.drain() {
                t.stop.cancel();
            }
        }
    }

    /// Number of running probe tasks.
    pub fn running(&self) -> usize {
        self.tasks.lock().map(|t| t.len()).unwrap_or(0)
    }
}

struct Probe {
    pool: String,
    server: Arc<Server>,
    spec: HealthSpec,
    client: ProbeClient,
}

impl Probe {
    async fn run(self, stop: CancellationToken) {
        // Spread first probes over one interval so 100 servers are not probed in one burst.
        let first = self.spec.interval.mul_f64(jitter_fraction(&self.server.addr.0));
        let (mut passes, mut fails) = (0u32, 0u32);
        let mut wait = first;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let result = self.probe_once().await;
            match &result {
                Ok(()) => {
                    passes += 1;
                    fails = 0;
                }
                Err(_) => {
                    fails += 1;
                    passes = 0;
                }
            }
            let healthy = self.server.probe_healthy();
            if !healthy && passes >= self.spec.healthy_threshold {
                self.server.set_probe_healthy(true);
                tracing::info!(pool = %self.pool, server = %self.server.addr.0, from = "down", to = "up", reason = %format!("{passes} passing probes"), "upstream server state changed");
            } else if healthy && fails >= self.spec.unhealthy_threshold {
                self.server.set_probe_healthy(false);
                let reason = result.err().unwrap_or_default();
                tracing::warn!(pool = %self.pool, server = %self.server.addr.0, from = "up", to = "down", reason = %format!("{fails} failed probes, last: {reason}"), "upstream server state changed");
            } else if healthy && result.is_ok() {
                // A passing probe also ends a passive ejection.
                let ejected = self.server.passively_ejected();
                self.server.set_probe_healthy(true);
                if ejected {
                    tracing::info!(pool = %self.pool, server = %self.server.addr.0, from = "ejected", to = "up", reason = "passing probe", "upstream server state changed");
                }
            }
            // ±10% so probes of many servers do not synchronise over time.
            wait = self
                .spec
                .interval
                .mul_f64(0.9 + 0.2 * jitter_fraction(&format!("{}{passes}{fails}", self.server.addr.0)));
        }
    }

    async fn probe_once(&self) -> Result<(), String> {
        let uri: Uri = format!("http://{}{}", self.server.addr.0, self.spec.path)
            .parse()
            .map_err(|e| format!("bad probe URI: {e}"))?;
        let host = self.spec.host.as_deref().unwrap_or(&self.server.addr.0);
        let req = Request::get(uri)
            .header(header::HOST, host)
            .header(header::USER_AGENT, "rampart-health-check")
            .body(Empty::new())
            .map_err(|e| format!("bad probe request: {e}"))?;
        match tokio::time::timeout(self.spec.timeout, self.client.request(req)).await {
            Err(_) => Err(format!("no answer within {:?}", self.spec.timeout)),
            Ok(Err(e)) => Err(format!("request failed: {e}")),
            Ok(Ok(resp)) => {
                let code = resp.status().as_u16();
                let (lo, hi) = self.spec.expected_status;
                if (lo..=hi).contains(&code) {
                    Ok(())
                } else {
                    Err(format!("status {code}, expected {lo}-{hi}"))
                }
            }
        }
    }
}

/// A number in [0, 1) derived from `seed` and the clock; cheap jitter
/// without a random-number dependency.
fn jitter_fraction(seed: &str) -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(seed.as_bytes());
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}
