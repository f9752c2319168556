//! One ACME order for one certificate (one or more names): authorize with
//! TLS-ALPN-01 or HTTP-01 (publishing the answer in [`Challenges`] for the
//! listeners, and in the cluster store) or DNS-01 (a TXT record per
//! authorization through the DNS provider, checked for propagation first
//! and removed however the order ends), finalize with a CSR and a fresh key
//! from rcgen, and download the chain.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};

use super::cluster::{to_hex, Shared, SYNC_INTERVAL};
use super::dns::Dns;
use super::storage::StoredCert;
use super::AcmeError;
use crate::config::AcmeChallenge;
use crate::tls::challenges::Challenges;
use crate::tls::selfsigned;

/// Removes the published answers when the order ends, however it ends
/// (from the cluster store too, by a task: `Drop` cannot wait).
struct Published<'a> {
    challenges: &'a Challenges,
    tokens: Vec<String>,
    alpn: Vec<String>,
    shared: Option<Arc<Shared>>,
    fields: Vec<String>,
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.challenges.clear_http(t);
        }
        for d in &self.alpn {
            self.challenges.clear_alpn(d);
        }
        if let Some(shared) = self.shared.take() {
            let fields = std::mem::take(&mut self.fields);
            tokio::spawn(async move { shared.unpublish(&fields).await });
        }
    }
}

/// With a cluster, the CA may ask any instance: publish the answer, then
/// give every instance two sync passes to mirror it before the CA is told.
async fn share(published: &mut Published<'_>, field: String, value: &str) {
    let Some(shared) = published.shared.clone() else { return };
    match shared.publish(&field, value).await {
        Ok(()) => {
            published.fields.push(field);
            tokio::time::sleep(SYNC_INTERVAL * 2 + Duration::from_millis(500)).await;
        }
        Err(e) => tracing::warn!(error = %e, "challenge not shared: only this instance can answer it"),
    }
}

/// Where the answers go: the listeners' [`Challenges`] (and the cluster
/// store), or DNS.
pub struct Responders<'a> {
    pub kind: AcmeChallenge,
    pub challenges: &'a Challenges,
    pub dns: Option<&'a Arc<Dns>>,
    pub shared: Option<Arc<Shared>>,
}

/// Order, validate and download a certificate for `names` (the first is
/// its primary name; `*.` names need DNS-01).
pub async fn issue(account: &Account, names: &[String], to: Responders<'_>) -> Result<StoredCert, AcmeError> {
    let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&ids)).await?;
    let mut published = Published {
        challenges: to.challenges,
        tokens: Vec::new(),
        alpn: Vec::new(),
        shared: to.shared.clone(),
        fields: Vec::new(),
    };
    let mut records = DnsRecords { dns: to.dns.cloned(), records: Vec::new() };
    let result = authorize(&mut order, &to, &mut published, &mut records).await;
    records.cleanup().await;
    drop(published);
    result?;

    let key = KeyPair::generate().map_err(|e| AcmeError::Csr(e.to_string()))?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(|e| AcmeError::Csr(e.to_string()))?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| AcmeError::Csr(e.to_string()))?;
    order.finalize_csr(csr.der()).await?;
    let retry = RetryPolicy::new().timeout(Duration::from_secs(90));
    let chain_pem = order.poll_certificate(&retry).await?;
    Ok(StoredCert { chain_pem, key_pem: key.serialize_pem() })
}

/// Publish every pending authorization's answer, tell the CA, and wait
/// for the order to be ready.
async fn authorize(
    order: &mut instant_acme::Order,
    to: &Responders<'_>,
    published: &mut Published<'_>,
    records: &mut DnsRecords,
) -> Result<(), AcmeError> {
    let challenge_type = match to.kind {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::Dns01 => ChallengeType::Dns01,
    };
    // DNS-01: every TXT record first, then one wait for them all, then
    // the CA is told; the other types answer at once.
    let mut pending = 0;
    for pass in 0..2 {
        if pass == 1 {
            if to.kind != AcmeChallenge::Dns01 || pending == 0 {
                break;
            }
            records.wait_visible().await?;
        }
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            let name = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(AcmeError::Order(format!("authorization for {name} is {other:?}"))),
            }
            let mut challenge = authz
                .challenge(challenge_type.clone())
                .ok_or_else(|| AcmeError::Order(format!("the CA offers no {challenge_type:?} challenge")))?;
            let key_auth = challenge.key_authorization();
            let base = match challenge.identifier().identifier {
                Identifier::Dns(d) => d.clone(),
                other => return Err(AcmeError::Order(format!("cannot validate identifier {other:?}"))),
            };
            match (to.kind, pass) {
                (AcmeChallenge::Http01, _) => {
                    to.challenges.set_http(&challenge.token, key_auth.as_str());
                    published.tokens.push(challenge.token.clone());
                    share(published, format!("http:{}", challenge.token), key_auth.as_str()).await;
                }
                (AcmeChallenge::TlsAlpn01, _) => {
                    let digest = key_auth.digest();
                    let cert = selfsigned::alpn_challenge(&base, digest.as_ref())?;
                    to.challenges.set_alpn(&base, cert);
                    published.alpn.push(base.clone());
                    share(published, format!("alpn:{base}"), &to_hex(digest.as_ref())).await;
                }
                (AcmeChallenge::Dns01, 0) => {
                    records.present(&base, &key_auth.dns_value()).await?;
                    pending += 1;
                    continue;
                }
                (AcmeChallenge::Dns01, _) => {}
            }
            challenge.set_ready().await?;
        }
    }
    let retry = RetryPolicy::new().timeout(Duration::from_secs(90));
    let status = order.poll_ready(&retry).await?;
    if status != OrderStatus::Ready {
        let detail = order.state().error.as_ref().map(|p| p.to_string()).unwrap_or_default();
        return Err(AcmeError::Order(format!("order ended {status:?} {detail}")));
    }
    Ok(())
}

/// The TXT records an order published: removed by [`DnsRecords::cleanup`]
/// when the order's validation ends, or, if the order is dropped first (its
/// timeout), by a task the drop starts.
struct DnsRecords {
    dns: Option<Arc<Dns>>,
    /// (FQDN, value)
    records: Vec<(String, String)>,
}

impl DnsRecords {
    async fn present(&mut self, domain: &str, value: &str) -> Result<(), AcmeError> {
        let dns = self.dns.as_ref().ok_or_else(|| AcmeError::Order("dns-01 without [acme.dns]".into()))?;
        let fqdn = dns.challenge_fqdn(domain).await;
        dns.provider.present(&fqdn, value).await?;
        self.records.push((fqdn, value.to_string()));
        Ok(())
    }

    async fn wait_visible(&self) -> Result<(), AcmeError> {
        let Some(dns) = &self.dns else { return Ok(()) };
        for (fqdn, value) in &self.records {
            dns.wait_visible(fqdn, value).await?;
        }
        Ok(())
    }

    async fn cleanup(&mut self) {
        let Some(dns) = &self.dns else { return };
        for (fqdn, value) in std::mem::take(&mut self.records) {
            if let Err(e) = dns.provider.cleanup(&fqdn, &value).await {
                tracing::warn!(%fqdn, error = %e, "cannot remove the challenge TXT record");
            }
        }
    }
}

impl Drop for DnsRecords {
    fn drop(&mut self) {
        if self.records.is_empty() {
            return;
        }
        let mut rest = DnsRecords { dns: self.dns.take(), records: std::mem::take(&mut self.records) };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { rest.cleanup().await });
        }
    }
}
