//! One certificate's renewal task: when the next order is due (the
//! certificate's lifetime and `renew_before`, with jitter; capped
//! exponential backoff after a failure; at least [`MIN_GAP`] after a
//! success), the cluster lock and the re-check made after taking it (a
//! certificate another instance stored meanwhile is adopted instead of
//! ordering), and the order itself, bounded by [`ORDER_TIMEOUT`], stored and
//! installed. A failed order keeps the current certificate live.

use std::path::Path;
use std::time::{Duration, Instant};

use super::storage::StoredCert;
use super::{cert_key, cluster, order, schedule, AcmeError, AcmeManager};
use crate::tls::certs::{self, Source};

/// A hung CA (accepting connections, never answering) must not stall
/// renewal forever: an order taking longer counts as a failure.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);

/// After a successful order, wait at least this long before the next one
/// for the same host, even if `renew_before` says it is already due.
const MIN_GAP: Duration = Duration::from_secs(600);

impl AcmeManager {
    /// The certificate for `names`, kept issued and renewed until the
    /// manager is cancelled or a static certificate covers its names.
    pub(super) async fn renew_loop(&self, names: Vec<String>) {
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
                        crate::tls::certs::unix_now(),
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
        let recent = shared
            .stored_at(domain)
            .await
            .ok()
            .flatten()
            .is_some_and(|t| crate::tls::certs::unix_now() - t < MIN_GAP.as_secs() as i64);
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
