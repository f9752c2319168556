//! ACME (RFC 8555) certificate management with instant-acme: the account
//! (key created once and stored), one order per certificate (an exact route
//! host, a wildcard route host under DNS-01, a `[[certificates]]` entry, an
//! on-demand name), the challenge answers (published in `tls::challenges`
//! for the listeners) or DNS-01 records ([`dns`]), storage behind
//! [`CertStorage`], and a cancellable renewal task per certificate with
//! jitter and capped exponential backoff. A failed renewal keeps the old
//! certificate live.

pub mod cluster;
pub mod dns;
pub mod names;
pub mod on_demand;
pub mod order;
pub mod schedule;
pub mod storage;
mod sync;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use instant_acme::{Account, Key};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::CancellationToken;

use crate::config::AcmeSettings;
use crate::tls::certs::{self, Source};
use crate::tls::{TlsError, TlsState};
pub use names::{cert_key, key_name, same_names};
use storage::{CertStorage, FileStorage, StorageError, StoredCert};

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

/// A hung CA (accepting connections, never answering) must not stall
/// renewal forever: an order taking longer counts as a failure.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);

/// After a successful order, wait at least this long before the next one
/// for the same host, even if `renew_before` says it is already due.
const MIN_GAP: Duration = Duration::from_secs(600);

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

    async fn renew_loop(&self, names: Vec<String>) {
        let key = cert_key(&names);
        let domain = key.as_str();
        let mut failures = 0u32;
        let mut last_success: Option<Instant> = None;
        loop {
            let wait = if failures > 0 {
                schedule::backoff(failures)
            } else {
                let due = match self.current(&names) {
                    None => Duration::ZERO,
                    Some(info) => schedule::until_renewal(
                        unix_now(),
                        info.not_before,
                        info.not_after,
                        self.settings.renew_before,
                        schedule::jitter(),
                    ),
                };
                let gap = last_success.map(|t| MIN_GAP.saturating_sub(t.elapsed())).unwrap_or_default();
                due.max(gap)
            };
            if !wait.is_zero() {
                tracing::info!(%domain, in_secs = wait.as_secs(), "next certificate order scheduled");
                tokio::time::sleep(wait).await;
            }
            // A reload may have brought a static certificate meanwhile. The
            // host stops being managed; `manage` takes it up again after a
            // reload that removes that certificate. Checked under the lock
            // `manage` inserts under: a reload removing the certificate
            // between the check and the removal would otherwise find the
            // host still managed, and leave it with no loop at all.
            let ended = self.managed.lock().map(|mut managed| {
                let covered = self.has_static(&names);
                if covered {
                    managed.remove(domain);
                }
                covered
            });
            if ended.unwrap_or(false) {
                tracing::info!(%domain, "a static certificate covers the host now; no more ACME orders for it");
                return;
            }
            let lock = match self.take_lock(&names).await {
                Turn::Ours(lock) => lock,
                Turn::Adopted => {
                    failures = 0;
                    last_success = Some(Instant::now());
                    continue;
                }
                Turn::Wait(d) => {
                    tokio::time::sleep(d).await;
                    continue;
                }
            };
            tracing::info!(%domain, names = ?names, "ordering certificate");
            let attempt = tokio::time::timeout(ORDER_TIMEOUT, self.obtain(&names)).await;
            if let Some(lock) = lock {
                lock.release().await;
            }
            match attempt.unwrap_or(Err(AcmeError::Timeout(ORDER_TIMEOUT))) {
                Ok(serial) => {
                    self.count_on_demand(domain, "issued");
                    failures = 0;
                    last_success = Some(Instant::now());
                    tracing::info!(%domain, %serial, "certificate issued");
                }
                Err(e) => {
                    self.count_on_demand(domain, "failed");
                    failures = failures.saturating_add(1);
                    // The account may be gone (a new CA instance): make it again.
                    *self.account.lock().await = None;
                    let retry = schedule::backoff(failures);
                    tracing::error!(%domain, error = %e, retry_in_secs = retry.as_secs(), "certificate order failed; keeping the current certificate");
                }
            }
        }
    }

    /// With a cluster: whether this instance orders now. Takes the name's
    /// lock, then checks again whether the work is still needed: a
    /// certificate another instance stored since this one decided is
    /// installed instead of ordering.
    async fn take_lock(&self, names: &[String]) -> Turn {
        let Some(shared) = &self.shared else { return Turn::Ours(None) };
        let key = cert_key(names);
        let domain = key.as_str();
        let seen = self.current(names).map(|c| c.serial);
        let lock = match shared.lock(domain).await {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                tracing::info!(%domain, "another instance is ordering this certificate; waiting for it");
                return Turn::Wait(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::warn!(%domain, error = %e, "cluster store unreachable: no order until it answers (the current certificate stays)");
                return Turn::Wait(Duration::from_secs(10));
            }
        };
        // Stored by another instance within MIN_GAP, or a serial this
        // instance has not seen: the work is done already.
        let recent =
            shared.stored_at(domain).await.ok().flatten().is_some_and(|t| unix_now() - t < MIN_GAP.as_secs() as i64);
        if let Ok(Some(stored)) = self.storage.load_cert(domain).await {
            let path = Path::new(domain);
            if let Ok(loaded) =
                certs::from_pem(stored.chain_pem.as_bytes(), stored.key_pem.as_bytes(), Source::Acme, path)
            {
                if recent || Some(&loaded.info.serial) != seen.as_ref() {
                    tracing::info!(%domain, serial = %loaded.info.serial, "another instance renewed it meanwhile; using that certificate");
                    if Some(&loaded.info.serial) != seen.as_ref() {
                        self.tls.install(loaded);
                    }
                    lock.release().await;
                    return Turn::Adopted;
                }
            }
        }
        Turn::Ours(Some(lock))
    }

    fn count_on_demand(&self, key: &str, result: &'static str) {
        let listed = self.on_demand_names.lock().is_ok_and(|n| n.contains(key));
        if let (true, Some(od)) = (listed, &self.on_demand) {
            od.count(result);
        }
    }

    /// Order, store and install a certificate; returns its serial.
    async fn obtain(&self, names: &[String]) -> Result<String, AcmeError> {
        let key = cert_key(names);
        let account = self.account().await?;
        let to = order::Responders {
            kind: self.settings.challenge,
            challenges: &self.tls.challenges,
            dns: self.dns.as_ref(),
            shared: self.shared.clone(),
        };
        let stored: StoredCert = order::issue(&account, names, to).await?;
        let loaded =
            certs::from_pem(stored.chain_pem.as_bytes(), stored.key_pem.as_bytes(), Source::Acme, Path::new(&key))?;
        self.storage.store_cert(&key, &stored).await?;
        let serial = loaded.info.serial.clone();
        self.tls.install(loaded);
        Ok(serial)
    }

    /// The account, from the stored key (created and stored on first use).
    async fn account(&self) -> Result<Account, AcmeError> {
        let mut slot = self.account.lock().await;
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let pem = match self.storage.load_account_key().await? {
            Some(pem) => pem,
            None => {
                let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::AccountKey(e.to_string()))?;
                let pem = key.serialize_pem();
                self.storage.store_account_key(&pem).await?;
                tracing::info!("created ACME account key");
                // With a cluster the first instance's key wins: read it back.
                self.storage.load_account_key().await?.unwrap_or(pem)
            }
        };
        let der =
            PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| AcmeError::AccountKey(e.to_string()))?;
        let key = Key::from_pkcs8_der(der.clone_key())?;
        let builder = match &self.settings.ca_cert {
            Some(root) => Account::builder_with_root(root)?,
            None => Account::builder()?,
        };
        let (account, _) =
            builder.create_from_key((key, PrivateKeyDer::Pkcs8(der)), self.settings.directory.clone()).await?;
        if let Some(email) = &self.settings.email {
            let contact = format!("mailto:{email}");
            if let Err(e) = account.update_contacts(&[contact.as_str()]).await {
                tracing::warn!(error = %e, "cannot set the ACME account contact");
            }
        }
        *slot = Some(account.clone());
        Ok(account)
    }
}

/// What `take_lock` decided.
enum Turn {
    /// Order now (holding the lock, with a cluster).
    Ours(Option<cluster::Lock>),
    /// Another instance's newer certificate was installed instead.
    Adopted,
    /// Come back later.
    Wait(Duration),
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
