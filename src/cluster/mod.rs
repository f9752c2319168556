//! `[cluster]`: the state several instances share, on Redis. This module
//! owns the one connection (the redis crate's `ConnectionManager`, with its
//! connection and response timeouts always set), the circuit breaker in
//! front of it, the instance heartbeat, and the Redis-side scripts
//! (`gcra.rs` for cluster-wide rate limits); `client.rs` makes the client
//! from the URL (password, TLS roots for `rediss://`). Callers never wait on a Redis
//! that is known to be down: after the first failure the breaker is open
//! and every call fails at once until the heartbeat (the only probe, once a
//! second) gets an answer again. Each caller decides what a failure means
//! (`rate_limit`'s `on_store_error`).

mod breaker;
mod client;
mod gcra;
mod heartbeat;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;
use tokio_util::sync::CancellationToken;

use crate::config::ClusterSettings;
use crate::metrics::{ClusterMetrics, OperationLabels};

pub use client::{CA_FILE_ENV, PASSWORD_ENV};
pub use gcra::Verdict;
pub use heartbeat::Instance;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cluster store unavailable (circuit open)")]
    Unavailable,
    #[error("cluster store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cluster store: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cluster store answered unexpectedly: {0}")]
    Protocol(String),
    /// A setting the client cannot be made with (the TLS roots, the URL).
    #[error("{0}")]
    Config(String),
}

/// The shared store: one per process, made at start from `[cluster]`.
pub struct Cluster {
    settings: ClusterSettings,
    client: redis::Client,
    /// Set once the first connection succeeded; the manager reconnects itself after that.
    conn: ArcSwapOption<ConnectionManager>,
    breaker: breaker::Breaker,
    metrics: ClusterMetrics,
    /// This process in the instance list: `hostname-pid-random`.
    pub instance_id: String,
    /// Listener addresses, published with the heartbeat.
    pub advertised: Mutex<serde_json::Value>,
    instances: Mutex<Vec<Instance>>,
    started: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("redis", &self.settings.redis_redacted())
            .field("instance_id", &self.instance_id)
            .field("up", &self.is_up())
            .finish()
    }
}

impl Cluster {
    /// Prepare the client; no I/O here (the heartbeat task connects, so a
    /// Redis that is down at start delays nothing).
    pub fn new(settings: ClusterSettings, metrics: ClusterMetrics) -> Result<Arc<Cluster>, StoreError> {
        let client = client::from_env(&settings.redis)?;
        metrics.up.set(0);
        Ok(Arc::new(Cluster {
            instance_id: format!("{}-{}-{}", hostname(), std::process::id(), &random_hex()[..6]),
            settings,
            client,
            conn: ArcSwapOption::empty(),
            breaker: breaker::Breaker::new(metrics.up.clone()),
            metrics,
            advertised: Mutex::new(serde_json::Value::Null),
            instances: Mutex::new(Vec::new()),
            started: crate::access_log::rfc3339_now(),
        }))
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// Whether Redis answered the last call (the breaker is closed).
    pub fn is_up(&self) -> bool {
        self.breaker.is_closed()
    }

    /// A key under the configured prefix.
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.settings.key_prefix)
    }

    /// Run one Redis call: refused at once while the breaker is open,
    /// bounded by the timeout, counted and tripping the breaker on failure.
    pub async fn call<T, F, Fut>(&self, operation: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.breaker.is_closed() {
            return Err(StoreError::Unavailable);
        }
        let Some(conn) = self.conn.load_full() else {
            return Err(StoreError::Unavailable);
        };
        self.attempt(operation, f(ConnectionManager::clone(&conn))).await
    }

    async fn attempt<T>(
        &self,
        operation: &'static str,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(self.settings.timeout, fut).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => StoreError::Redis(e),
            Err(_) => StoreError::Timeout(self.settings.timeout),
        };
        self.metrics.store_errors.get_or_create(&OperationLabels { operation }).inc();
        // Redis answered, about one key (foreign data of another type under
        // the prefix): that key's call fails, the store is not down for
        // every other client.
        if matches!(&result, StoreError::Redis(e) if e.code() == Some("WRONGTYPE")) {
            return Err(result);
        }
        if self.breaker.trip() {
            tracing::warn!(operation, error = %result, "cluster store unreachable; calls fail fast until it answers again");
        }
        Err(result)
    }

    /// Connect if not connected yet (the heartbeat calls this; never on the request path).
    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(c) = self.conn.load_full() {
            return Ok(ConnectionManager::clone(&c));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.settings.connect_timeout)
            .set_response_timeout(self.settings.timeout)
            // One attempt per call: the heartbeat is the retry loop.
            .set_number_of_retries(1)
            .set_max_delay(1000);
        let connect = ConnectionManager::new_with_config(self.client.clone(), config);
        let bound = self.settings.connect_timeout * 3;
        match tokio::time::timeout(bound, connect).await {
            Ok(Ok(c)) => {
                self.conn.store(Some(Arc::new(c.clone())));
                Ok(c)
            }
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Err(_) => Err(StoreError::Timeout(bound)),
        }
    }

    /// Live instances as the last heartbeat saw them.
    pub fn instances(&self) -> Vec<Instance> {
        self.instances.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// The `cluster` object of `/api/status`.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::json!({
            "redis": self.settings.redis_redacted(),
            "key_prefix": self.settings.key_prefix,
            "up": self.is_up(),
            "instance": self.instance_id,
            "instances": self.instances(),
        })
    }

    /// Start the heartbeat (connects, probes, publishes this instance);
    /// it ends when `stop` fires, removing this instance from the list.
    pub fn spawn_heartbeat(self: &Arc<Self>, stop: CancellationToken) {
        let me = Arc::clone(self);
        tokio::spawn(async move { me.heartbeat_loop(stop).await });
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "rampart".to_string())
}

/// 128 random bits as hex (lock tokens, instance ids): std's `RandomState`
/// is seeded from the OS's randomness.
pub fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(32);
    for i in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(i);
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_differ() {
        let a = random_hex();
        let b = random_hex();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
