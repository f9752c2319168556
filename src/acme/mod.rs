//! ACME (RFC 8555) certificate management with instant-acme: the account
//! (key created once and stored), one order per certificate (an exact route
//! host, a wildcard route host under DNS-01, a `[[certificates]]` entry, an
//! on-demand name), the challenge answers (published in `tls::challenges`
//! for the listeners) or DNS-01 records ([`dns`]), storage behind
//! [`CertStorage`], and a cancellable renewal task per certificate with
//! jitter and capped exponential backoff (`renew.rs`; the account in
//! `account.rs`). A failed renewal keeps the old certificate live. This
//! file owns the manager: starting it, which certificates it manages and
//! serving their stored copies.

mod account;
mod ca_client;
pub mod cluster;
pub mod dns;
pub mod names;
pub mod on_demand;
pub mod order;
mod renew;
pub mod schedule;
pub mod storage;
mod sync;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use instant_acme::Account;
use tokio_util::sync::CancellationToken;

use crate::config::AcmeSettings;
use crate::tls::certs::{self, Source};
use crate::tls::{TlsError, TlsState};
pub use names::{cert_key, key_name, same_names};
use storage::{CertStorage, FileStorage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME: {0}")]
    Acme(#[from] instant_acme::Error),
    #[error("ACME order: {0}")]
    Order(String),
    #[error("cannot make the CSR or key: {0}")]
    Csr(String),
    #[error("account key: {0}")]
    AccountKey(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Dns(#[from] dns::DnsError),
    #[error("the order took longer than {0:?}")]
    Timeout(Duration),
}

pub struct AcmeManager {
    settings: AcmeSettings,
    dns: Option<Arc<dns::Dns>>,
    /// On-demand TLS, when configured.
    pub on_demand: Option<Arc<on_demand::OnDemand>>,
    /// Names ordered on demand (their results are counted).
    on_demand_names: std::sync::Mutex<std::collections::HashSet<String>>,
    storage: Arc<dyn CertStorage>,
    tls: Arc<TlsState>,
    account: tokio::sync::Mutex<Option<Account>>,
    /// With `[cluster]`: the shared store (locks, challenges).
    shared: Option<Arc<cluster::Shared>>,
    /// Certificates (by [`cert_key`]) with a renewal task already.
    managed: std::sync::Mutex<std::collections::HashSet<String>>,
    cancel: CancellationToken,
}

/// The on-demand TLS counter family.
pub type OnDemandCounter = prometheus_client::metrics::family::Family<
    crate::metrics::ResultLabels,
    prometheus_client::metrics::counter::Counter,
>;

/// Load stored certificates for every wanted certificate into the live
/// map, then start one renewal task per certificate; they stop when
/// `cancel` fires. With a cluster store, state is shared through it (see
/// [`cluster`]).
#[allow(clippy::too_many_arguments)]
pub async fn start(
    settings: AcmeSettings,
    tls: Arc<TlsState>,
    wanted: Vec<Vec<String>>,
    patterns: Vec<crate::config::HostPattern>,
    on_demand_total: OnDemandCounter,
    cancel: CancellationToken,
    store: Option<Arc<crate::cluster::Cluster>>,
) -> Arc<AcmeManager> {
    let files = FileStorage::new(&tls.settings.certs_dir, &settings.directory);
    let (storage, shared): (Arc<dyn CertStorage>, _) = match store {
        Some(store) => {
            let shared = cluster::Shared::new(store, &files);
            let storage = Arc::new(cluster::ClusterStorage { shared: Arc::clone(&shared), local: files });
            (storage.clone(), Some((shared, storage)))
        }
        None => (Arc::new(files), None),
    };
    let dns = settings.dns.clone().map(|d| Arc::new(dns::Dns::new(d)));
    let on_demand_settings = settings.on_demand.clone();
    let manager = Arc::new_cyclic(|weak| AcmeManager {
        on_demand: on_demand_settings
            .map(|s| Arc::new(on_demand::OnDemand::new(s, weak.clone(), patterns, on_demand_total))),
        on_demand_names: std::sync::Mutex::new(std::collections::HashSet::new()),
        settings,
        dns,
        storage,
        tls: Arc::clone(&tls),
        account: tokio::sync::Mutex::new(None),
        shared: shared.as_ref().map(|(s, _)| Arc::clone(s)),
        managed: std::sync::Mutex::new(std::collections::HashSet::new()),
        cancel,
    });
    if let Some(od) = &manager.on_demand {
        let hook: Arc<dyn crate::tls::OnDemandHook> = od.clone();
        let _ = manager.tls.on_demand.set(hook);
    }
    for names in wanted {
        manager.manage(names).await;
    }
    if let Some((shared, storage)) = shared {
        let m = Arc::clone(&manager);
        let cancel = manager.cancel.clone();
        let domains = move || m.managed.lock().map(|g| g.iter().cloned().collect()).unwrap_or_default();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = cluster::sync_loop(shared, storage, tls, domains) => {}
            }
        });
    }
    manager
}

impl AcmeManager {
    /// Start managing the certificate for `names` (no-op if it already
    /// is): serve its stored certificate if there is one, then keep it
    /// issued and renewed. Called at start for every wanted certificate,
    /// and after every reload for all of them: one whose static
    /// certificate a reload removed is taken up then.
    pub async fn manage(self: &Arc<Self>, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        self.tls.acme_domains.rcu(|list| {
            let mut list = Vec::clone(list);
            for n in &names {
                if !list.contains(n) {
                    list.push(n.clone());
                }
            }
            list
        });
        let key = cert_key(&names);
        let domain = key.as_str();
        // Checked before the certificate counts as managed, so that it is
        // not marked managed while nothing orders it.
        if self.has_static(&names) {
            tracing::debug!(%domain, "static certificate present: no ACME order");
            return;
        }
        let newly_managed = self.managed.lock().map(|mut m| m.insert(key.clone())).unwrap_or(false);
        if !newly_managed {
            return;
        }
        self.load_stored(&key).await;
        let m = Arc::clone(self);
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = m.renew_loop(names) => {}
            }
        });
    }

    /// Serve the stored certificate named `key`, if there is a usable one.
    async fn load_stored(&self, key: &str) {
        let domain = key;
        match self.storage.load_cert(key).await {
            Ok(Some(stored)) => match certs::from_pem(
                stored.chain_pem.as_bytes(),
                stored.key_pem.as_bytes(),
                Source::Acme,
                Path::new(key),
            ) {
                Ok(loaded) => {
                    tracing::info!(%domain, serial = %loaded.info.serial, "loaded stored ACME certificate");
                    self.tls.install(loaded);
                }
                Err(e) => {
                    tracing::warn!(%domain, error = %e, "stored certificate unusable; ordering a new one")
                }
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(%domain, error = %e, "cannot read stored certificate"),
        }
    }

    /// Whether certificates from `certs_dir` cover every one of `names`:
    /// they are served ahead of an ACME one, so ordering one would only
    /// spend rate limit.
    fn has_static(&self, names: &[String]) -> bool {
        let live = self.tls.live.load();
        names.iter().all(|n| live.lookup(n).any(|c| c.info.source == Source::Static))
    }

    fn current(&self, names: &[String]) -> Option<certs::CertInfo> {
        let first = names.first()?;
        self.tls
            .live
            .load()
            .lookup(first)
            .find(|c| c.info.source == Source::Acme && same_names(&c.info.names, names))
            .map(|c| c.info.clone())
    }

    fn count_on_demand(&self, key: &str, result: &'static str) {
        let listed = self.on_demand_names.lock().is_ok_and(|n| n.contains(key));
        if let (true, Some(od)) = (listed, &self.on_demand) {
            od.count(result);
        }
    }
}
