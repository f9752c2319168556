//! One ACME order for one host: authorize with TLS-ALPN-01 or HTTP-01
//! (publishing the answer in [`Challenges`] for the listeners), finalize
//! with a CSR and a fresh key from rcgen, and download the chain.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};

use super::cluster::{to_hex, Shared, SYNC_INTERVAL};
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

/// Order, validate and download a certificate for `domain`.
pub async fn issue(
    account: &Account,
    domain: &str,
    kind: AcmeChallenge,
    challenges: &Challenges,
    shared: Option<Arc<Shared>>,
) -> Result<StoredCert, AcmeError> {
    let ids = [Identifier::Dns(domain.to_string())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await?;
    let mut published = Published { challenges, tokens: Vec::new(), alpn: Vec::new(), shared, fields: Vec::new() };
    let challenge_type = match kind {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };
    {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(AcmeError::Order(format!("authorization for {domain} is {other:?}"))),
            }
            let mut challenge = authz
                .challenge(challenge_type.clone())
                .ok_or_else(|| AcmeError::Order(format!("the CA offers no {challenge_type:?} challenge")))?;
            let key_auth = challenge.key_authorization();
            match kind {
                AcmeChallenge::Http01 => {
                    challenges.set_http(&challenge.token, key_auth.as_str());
                    published.tokens.push(challenge.token.clone());
                    share(&mut published, format!("http:{}", challenge.token), key_auth.as_str()).await;
                }
                AcmeChallenge::TlsAlpn01 => {
                    let digest = key_auth.digest();
                    let cert = selfsigned::alpn_challenge(domain, digest.as_ref())?;
                    challenges.set_alpn(domain, cert);
                    published.alpn.push(domain.to_string());
                    share(&mut published, format!("alpn:{domain}"), &to_hex(digest.as_ref())).await;
                }
            }
            challenge.set_ready().await?;
        }
    }
    let retry = RetryPolicy::new().timeout(Duration::from_secs(90));
    let status = order.poll_ready(&retry).await?;
    if status != OrderStatus::Ready {
        let detail = order.state().error.as_ref().map(|p| p.to_string()).unwrap_or_default();
        return Err(AcmeError::Order(format!("order for {domain} ended {status:?} {detail}")));
    }
    drop(published);

    let key = KeyPair::generate().map_err(|e| AcmeError::Csr(e.to_string()))?;
    let mut params = CertificateParams::new(vec![domain.to_string()]).map_err(|e| AcmeError::Csr(e.to_string()))?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| AcmeError::Csr(e.to_string()))?;
    order.finalize_csr(csr.der()).await?;
    let chain_pem = order.poll_certificate(&retry).await?;
    Ok(StoredCert { chain_pem, key_pem: key.serialize_pem() })
}
