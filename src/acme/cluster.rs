//! ACME state shared through `[cluster]`: the account key and every
//! certificate live in Redis (`PREFIX acme:DIRECTORY:...`), each instance
//! keeping a local copy in its `certs_dir` ([`ClusterStorage`], behind the
//! same [`CertStorage`] trait as the files), so a Redis outage stops
//! neither TLS nor a restart. Orders take a lock per name ([`Shared::lock`]:
//! `SET NX PX` with a random token, refreshed while held, released by
//! compare-and-delete). Challenge answers are published in one hash that
//! every instance mirrors into its own listeners once a second, and the
//! same pass installs certificates other instances obtained (`sync.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::storage::{CertStorage, FileStorage, StorageError, StoredCert};
use crate::cluster::{Cluster, StoreError};
use crate::tls::certs::{self, Source};

/// How long a lock lives unless refreshed; refreshed every third of it.
const LOCK_TTL: Duration = Duration::from_secs(30);
pub use super::sync::{sync_loop, to_hex};

/// How often each instance mirrors challenges and looks for new certificates.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Published challenges expire by themselves after this (an order that died).
const CHALLENGE_TTL: Duration = Duration::from_secs(600);

static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    )
});
static REFRESH: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
    )
});

/// The cluster store seen from ACME: keys under `PREFIX acme:DIRECTORY:`.
#[derive(Debug)]
pub struct Shared {
    pub store: Arc<Cluster>,
    ns: String,
}

impl Shared {
    pub fn new(store: Arc<Cluster>, local: &FileStorage) -> Arc<Shared> {
        let slug = local.dir().file_name().and_then(|n| n.to_str()).unwrap_or("default").to_string();
        Arc::new(Shared { ns: store.key(&format!("acme:{slug}:")), store })
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.ns)
    }

    /// Take the lock for `name`: `None` if another instance holds it.
    pub async fn lock(self: &Arc<Self>, name: &str) -> Result<Option<Lock>, StoreError> {
        let key = self.key(&format!("lock:{name}"));
        let token = crate::cluster::random_hex();
        let ttl = LOCK_TTL.as_millis() as u64;
        let (k, t) = (key.clone(), token.clone());
        let taken: Option<String> = self
            .store
            .call("lock", |mut c| async move {
                redis::cmd("SET").arg(&k).arg(&t).arg("NX").arg("PX").arg(ttl).query_async(&mut c).await
            })
            .await?;
        if taken.is_none() {
            return Ok(None);
        }
        let me = Arc::clone(self);
        let (k, t) = (key.clone(), token.clone());
        let refresher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LOCK_TTL / 3).await;
                let (k2, t2) = (k.clone(), t.clone());
                let kept: Result<i64, _> = me
                    .store
                    .call("lock", |mut c| async move { REFRESH.key(&k2).arg(&t2).arg(ttl).invoke_async(&mut c).await })
                    .await;
                if let Ok(0) = kept {
                    tracing::warn!(lock = %k, "lost the lock while holding it (expired)");
                    return;
                }
            }
        });
        Ok(Some(Lock { shared: Arc::clone(self), key, token, refresher }))
    }

    /// Publish a challenge answer for every instance (`field` is
    /// `http:TOKEN` or `alpn:DOMAIN`).
    pub async fn publish(&self, field: &str, value: &str) -> Result<(), StoreError> {
        let key = self.key("challenges");
        let value = format!("{} {value}", self.store.instance_id);
        let ttl = CHALLENGE_TTL.as_millis() as u64;
        self.store
            .call("challenge", |mut c| async move {
                redis::pipe()
                    .hset(&key, field, &value)
                    .ignore()
                    .pexpire(&key, ttl as i64)
                    .ignore()
                    .query_async(&mut c)
                    .await
            })
            .await
    }

    pub async fn unpublish(&self, fields: &[String]) {
        if fields.is_empty() {
            return;
        }
        let key = self.key("challenges");
        let _ = self
            .store
            .call("challenge", |mut c| async move {
                redis::cmd("HDEL").arg(&key).arg(fields).query_async::<i64>(&mut c).await
            })
            .await;
    }

    async fn get(&self, rest: &str) -> Result<Option<String>, StoreError> {
        let key = self.key(rest);
        self.store.call("acme", |mut c| async move { redis::cmd("GET").arg(&key).query_async(&mut c).await }).await
    }

    async fn set_nx(&self, rest: &str, value: &str) -> Result<(), StoreError> {
        let key = self.key(rest);
        self.store
            .call("acme", |mut c| async move {
                redis::cmd("SET").arg(&key).arg(value).arg("NX").query_async::<Option<String>>(&mut c).await
            })
            .await
            .map(|_| ())
    }

    pub(super) async fn load_cert(&self, domain: &str) -> Result<Option<StoredCert>, StoreError> {
        let key = self.key(&format!("cert:{domain}"));
        let mut map: HashMap<String, String> = self
            .store
            .call("acme", |mut c| async move { redis::cmd("HGETALL").arg(&key).query_async(&mut c).await })
            .await?;
        Ok(match (map.remove("chain"), map.remove("key")) {
            (Some(chain_pem), Some(key_pem)) => Some(StoredCert { chain_pem, key_pem }),
            _ => None,
        })
    }

    pub(super) async fn store_cert(&self, domain: &str, cert: &StoredCert, serial: &str) -> Result<(), StoreError> {
        let key = self.key(&format!("cert:{domain}"));
        let issued = crate::tls::certs::unix_now().to_string();
        let items = [
            ("chain", cert.chain_pem.as_str()),
            ("key", cert.key_pem.as_str()),
            ("serial", serial),
            ("issued", &issued),
        ];
        self.store
            .call("acme", |mut c| async move {
                redis::cmd("HSET").arg(&key).arg(&items[..]).query_async::<i64>(&mut c).await
            })
            .await
            .map(|_| ())
    }

    /// When the stored certificate for `domain` was stored (Unix seconds).
    pub async fn stored_at(&self, domain: &str) -> Result<Option<i64>, StoreError> {
        let key = self.key(&format!("cert:{domain}"));
        self.store
            .call("acme", |mut c| async move { redis::cmd("HGET").arg(&key).arg("issued").query_async(&mut c).await })
            .await
    }

    /// The stored serial of each name (`None`: nothing stored).
    pub(super) async fn serials(&self, domains: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        let keys: Vec<String> = domains.iter().map(|d| self.key(&format!("cert:{d}"))).collect();
        self.store
            .call("acme", |mut c| async move {
                let mut p = redis::pipe();
                for k in &keys {
                    p.hget(k, "serial");
                }
                p.query_async(&mut c).await
            })
            .await
    }

    pub(super) async fn challenges(&self) -> Result<HashMap<String, String>, StoreError> {
        let key = self.key("challenges");
        self.store
            .call("challenge", |mut c| async move { redis::cmd("HGETALL").arg(&key).query_async(&mut c).await })
            .await
    }
}

/// A held lock: refreshed until released (or dropped, when it expires by itself).
#[derive(Debug)]
pub struct Lock {
    shared: Arc<Shared>,
    key: String,
    token: String,
    refresher: tokio::task::JoinHandle<()>,
}

impl Lock {
    /// Compare-and-delete: never removes a lock another instance took after ours expired.
    pub async fn release(self) {
        self.refresher.abort();
        let (k, t) = (self.key.clone(), self.token.clone());
        let _ = self
            .shared
            .store
            .call("lock", |mut c| async move { RELEASE.key(&k).arg(&t).invoke_async::<i64>(&mut c).await })
            .await;
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

pub(super) fn serial_of(cert: &StoredCert, domain: &str) -> Option<String> {
    certs::from_pem(cert.chain_pem.as_bytes(), cert.key_pem.as_bytes(), Source::Acme, Path::new(domain))
        .ok()
        .map(|l| l.info.serial.clone())
}

/// Redis first, the local files when Redis has nothing or does not answer;
/// every write goes to both (local first), every read from Redis refreshes
/// the local copy.
#[derive(Debug)]
pub struct ClusterStorage {
    pub shared: Arc<Shared>,
    pub local: FileStorage,
}

fn store_err(e: StoreError) -> StorageError {
    StorageError::Task(e.to_string())
}

#[async_trait::async_trait]
impl CertStorage for ClusterStorage {
    async fn load_account_key(&self) -> Result<Option<String>, StorageError> {
        match self.shared.get("account").await {
            Ok(Some(pem)) => {
                if self.local.load_account_key().await.ok().flatten().as_deref() != Some(pem.as_str()) {
                    self.local.store_account_key(&pem).await?;
                }
                Ok(Some(pem))
            }
            Ok(None) => {
                // A key from before the cluster (or a Redis that lost its
                // data): offer it; the first instance's wins.
                let Some(local) = self.local.load_account_key().await? else { return Ok(None) };
                if self.shared.set_nx("account", &local).await.is_ok() {
                    if let Ok(Some(winner)) = self.shared.get("account").await {
                        if winner != local {
                            self.local.store_account_key(&winner).await?;
                        }
                        return Ok(Some(winner));
                    }
                }
                Ok(Some(local))
            }
            Err(e) => {
                tracing::debug!(error = %e, "cluster store unavailable: local account key");
                self.local.load_account_key().await
            }
        }
    }

    /// First writer wins: the caller reads the key back after storing.
    async fn store_account_key(&self, pem: &str) -> Result<(), StorageError> {
        self.shared.set_nx("account", pem).await.map_err(store_err)?;
        match self.shared.get("account").await.map_err(store_err)? {
            Some(winner) => self.local.store_account_key(&winner).await,
            None => self.local.store_account_key(pem).await,
        }
    }

    async fn load_cert(&self, domain: &str) -> Result<Option<StoredCert>, StorageError> {
        match self.shared.load_cert(domain).await {
            Ok(Some(cert)) => {
                let local = self.local.load_cert(domain).await.ok().flatten();
                if local.as_ref().map(|l| (&l.chain_pem, &l.key_pem)) != Some((&cert.chain_pem, &cert.key_pem)) {
                    self.local.store_cert(domain, &cert).await?;
                }
                Ok(Some(cert))
            }
            Ok(None) => self.local.load_cert(domain).await,
            Err(e) => {
                tracing::debug!(%domain, error = %e, "cluster store unavailable: local certificate copy");
                self.local.load_cert(domain).await
            }
        }
    }

    async fn store_cert(&self, domain: &str, cert: &StoredCert) -> Result<(), StorageError> {
        self.local.store_cert(domain, cert).await?;
        let serial = serial_of(cert, domain).unwrap_or_default();
        if let Err(e) = self.shared.store_cert(domain, cert, &serial).await {
            // Served here and kept on disk; the sync pass offers it again.
            tracing::warn!(%domain, error = %e, "certificate not shared: the cluster store did not answer");
        }
        Ok(())
    }
}
