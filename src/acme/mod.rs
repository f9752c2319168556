//! ACME (RFC 8555) certificate management with instant-acme: the account
//! (key created once and stored), one order per exact route host, the
//! challenge answers (published in `tls::challenges` for the listeners), storage behind [`CertStorage`],
//! and a cancellable renewal task per host with jitter and capped
//! exponential backoff. A failed renewal keeps the old certificate live.

pub mod cluster;
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
    storage: Arc<dyn CertStorage>,
    tls: Arc<TlsState>,
    account: tokio::sync::Mutex<Option<Account>>,
    /// With `[cluster]`: the shared store (locks, challenges).
    shared: Option<Arc<cluster::Shared>>,
    /// Hosts with a renewal task (or a static certificate) already.
    managed: std::sync::Mutex<std::collections::HashSet<String>>,
    cancel: CancellationToken,
}

/// Load stored certificates for every ACME host into the live map, then
/// start one renewal task per host; they stop when `cancel` fires. With a
/// cluster store, state is shared through it (see [`cluster`]).
pub async fn start(
    settings: AcmeSettings,
    tls: Arc<TlsState>,
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
    let manager = Arc::new(AcmeManager {
        settings,
        storage,
        tls: Arc::clone(&tls),
        account: tokio::sync::Mutex::new(None),
        shared: shared.as_ref().map(|(s, _)| Arc::clone(s)),
        managed: std::sync::Mutex::new(std::collections::HashSet::new()),
        cancel,
    });
    for domain in tls.acme_domains.load().iter() {
        manager.manage(domain.clone()).await;
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
    /// Start managing `domain` (no-op if it already is): serve its stored
    /// certificate if there is one, then keep it issued and renewed. Called
    /// at start for every route host, and after every reload for all of
    /// them: a host whose static certificate a reload removed is taken up
    /// then.
    pub async fn manage(self: &Arc<Self>, domain: String) {
        if !self.tls.acme_domains.load().contains(&domain) {
            self.tls.acme_domains.rcu(|list| {
                let mut list = Vec::clone(list);
                if !list.contains(&domain) {
                    list.push(domain.clone());
                }
                list
            });
        }
        let tls = &self.tls;
        // Checked before the host counts as managed, so that it is not
        // marked managed while nothing orders its certificate.
        if self.has_static(&domain) {
            tracing::debug!(%domain, "static certificate present: no ACME order");
            return;
        }
        let newly_managed = self.managed.lock().map(|mut m| m.insert(domain.clone())).unwrap_or(false);
        if !newly_managed {
            return;
        }
        match self.storage.load_cert(&domain).await {
            Ok(Some(stored)) => match certs::from_pem(
                stored.chain_pem.as_bytes(),
                stored.key_pem.as_bytes(),
                Source::Acme,
                Path::new(&domain),
            ) {
                Ok(loaded) => {
                    tracing::info!(%domain, serial = %loaded.info.serial, "loaded stored ACME certificate");
                    tls.install(loaded);
                }
                Err(e) => {
                    tracing::warn!(%domain, error = %e, "stored certificate unusable; ordering a new one")
                }
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(%domain, error = %e, "cannot read stored certificate"),
        }
        let m = Arc::clone(self);
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = m.renew_loop(domain) => {}
            }
        });
    }

    /// Whether a certificate from `certs_dir` covers `domain`: it is served
    /// ahead of an ACME one, so ordering one would only spend rate limit.
    fn has_static(&self, domain: &str) -> bool {
        self.tls.live.load().lookup(domain).any(|c| c.info.source == Source::Static)
    }

    fn current(&self, domain: &str) -> Option<certs::CertInfo> {
        self.tls.live.load().lookup(domain).find(|c| c.info.source == Source::Acme).map(|c| c.info.clone())
    }

    async fn renew_loop(&self, domain: String) {
        let mut failures = 0u32;
        let mut last_success: Option<Instant> = None;
        loop {
            let wait = if failures > 0 {
                schedule::backoff(failures)
            } else {
                let due = match self.current(&domain) {
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
                let covered = self.has_static(&domain);
                if covered {
                    managed.remove(&domain);
                }
                covered
            });
            if ended.unwrap_or(false) {
                tracing::info!(%domain, "a static certificate covers the host now; no more ACME orders for it");
                return;
            }
            let lock = match self.take_lock(&domain).await {
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
            tracing::info!(%domain, "ordering certificate");
            let attempt = tokio::time::timeout(ORDER_TIMEOUT, self.obtain(&domain)).await;
            if let Some(lock) = lock {
                lock.release().await;
            }
            match attempt.unwrap_or(Err(AcmeError::Timeout(ORDER_TIMEOUT))) {
                Ok(serial) => {
                    failures = 0;
                    last_success = Some(Instant::now());
                    tracing::info!(%domain, %serial, "certificate issued");
                }
                Err(e) => {
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
    async fn take_lock(&self, domain: &str) -> Turn {
        let Some(shared) = &self.shared else { return Turn::Ours(None) };
        let seen = self.current(domain).map(|c| c.serial);
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

    /// Order, store and install a certificate; returns its serial.
    async fn obtain(&self, domain: &str) -> Result<String, AcmeError> {
        let account = self.account().await?;
        let stored: StoredCert =
            order::issue(&account, domain, self.settings.challenge, &self.tls.challenges, self.shared.clone()).await?;
        let loaded =
            certs::from_pem(stored.chain_pem.as_bytes(), stored.key_pem.as_bytes(), Source::Acme, Path::new(domain))?;
        self.storage.store_cert(domain, &stored).await?;
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
