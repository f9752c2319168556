//! The cluster's once-a-second pass on each instance: mirror the challenge
//! answers other instances published into this instance's listeners (so
//! the CA may ask any of them), install certificates other instances
//! stored, and offer Redis the local certificates it lacks.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use super::cluster::{serial_of, ClusterStorage, Shared, SYNC_INTERVAL};
use super::storage::CertStorage;
use crate::tls::certs::{self, Source};
use crate::tls::TlsState;

/// Once a second: mirror other instances' challenge answers into this
/// instance's listeners, install certificates other instances stored, and
/// offer Redis the local certificates it lacks (after it lost its data).
pub async fn sync_loop(
    shared: Arc<Shared>,
    storage: Arc<ClusterStorage>,
    tls: Arc<TlsState>,
    domains: impl Fn() -> Vec<String>,
) {
    let mut mirrored: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(SYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !shared.store.is_up() {
            continue;
        }
        if let Ok(all) = shared.challenges().await {
            mirror_challenges(&shared, &tls, &all, &mut mirrored);
        }
        let names = domains();
        let Ok(serials) = shared.serials(&names).await else { continue };
        for (domain, stored) in names.iter().zip(serials) {
            let name = super::key_name(domain);
            let live = tls.live.load().lookup(&name).find(|c| c.info.source == Source::Acme).map(|c| c.info.clone());
            match (stored, live) {
                (Some(s), Some(l)) if s == l.serial => {}
                (Some(_), live) => {
                    let Ok(Some(cert)) = storage.load_cert(domain).await else { continue };
                    let loaded = certs::from_pem(
                        cert.chain_pem.as_bytes(),
                        cert.key_pem.as_bytes(),
                        Source::Acme,
                        Path::new(domain),
                    );
                    match loaded {
                        Ok(l) if live.as_ref().is_none_or(|c| l.info.not_after >= c.not_after) => {
                            tracing::info!(%domain, serial = %l.info.serial, "installed the certificate another instance obtained");
                            tls.install(l);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(%domain, error = %e, "shared certificate unusable"),
                    }
                }
                (None, Some(_)) => {
                    if let Ok(Some(cert)) = storage.local.load_cert(domain).await {
                        let serial = serial_of(&cert, domain).unwrap_or_default();
                        if shared.store_cert(domain, &cert, &serial).await.is_ok() {
                            tracing::info!(%domain, "offered the local certificate to the cluster store");
                        }
                    }
                }
                (None, None) => {}
            }
        }
    }
}

fn mirror_challenges(shared: &Shared, tls: &TlsState, all: &HashMap<String, String>, mirrored: &mut HashSet<String>) {
    for (field, value) in all {
        let Some((owner, answer)) = value.split_once(' ') else { continue };
        if owner == shared.store.instance_id || mirrored.contains(field) {
            continue;
        }
        if let Some(token) = field.strip_prefix("http:") {
            tls.challenges.set_http(token, answer);
        } else if let Some(domain) = field.strip_prefix("alpn:") {
            let Some(digest) = from_hex(answer) else { continue };
            match crate::tls::selfsigned::alpn_challenge(domain, &digest) {
                Ok(cert) => tls.challenges.set_alpn(domain, cert),
                Err(e) => {
                    tracing::warn!(%domain, error = %e, "cannot build the TLS-ALPN-01 answer");
                    continue;
                }
            }
        } else {
            continue;
        }
        tracing::info!(challenge = %field, from = %owner, "answering another instance's ACME challenge");
        mirrored.insert(field.clone());
    }
    mirrored.retain(|field| {
        let keep = all.contains_key(field);
        if !keep {
            if let Some(token) = field.strip_prefix("http:") {
                tls.challenges.clear_http(token);
            } else if let Some(domain) = field.strip_prefix("alpn:") {
                tls.challenges.clear_alpn(domain);
            }
        }
        keep
    });
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(to_hex(&bytes), "0001abff");
        assert_eq!(from_hex("0001abff").unwrap(), bytes);
        assert!(from_hex("abc").is_none());
        assert!(from_hex("zz").is_none());
    }
}
