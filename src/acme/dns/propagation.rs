//! Waiting until the TXT value can be seen before the CA is told to look:
//! every server asked must answer with it. The servers are `resolvers`
//! when set, else the zone's authoritative servers (its NS records, asked
//! directly; for RFC 2136 the primary updated too), so an order does not
//! fail on a secondary that has not transferred the zone yet.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_client::proto::rr::{RData, RecordType};

use super::query;
use super::{Dns, DnsError};
use crate::config::DnsProviderSpec;

/// Time between two rounds of queries.
const INTERVAL: Duration = Duration::from_secs(2);

impl Dns {
    /// Wait up to `propagation_timeout` (zero: not at all) until every
    /// server checked returns `value` at `fqdn`.
    pub async fn wait_visible(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let limit = self.settings.propagation_timeout;
        if limit.is_zero() {
            return Ok(());
        }
        let servers = self.check_servers(fqdn).await;
        let deadline = Instant::now() + limit;
        let mut pending = servers.clone();
        loop {
            let mut still = Vec::new();
            for server in pending {
                match query::txt_values(server, fqdn).await {
                    Ok(values) if values.iter().any(|v| v == value) => {}
                    Ok(_) => still.push(server),
                    Err(e) => {
                        tracing::debug!(%server, error = %e, "propagation check");
                        still.push(server)
                    }
                }
            }
            if still.is_empty() {
                tracing::info!(%fqdn, servers = ?servers, "TXT record visible");
                return Ok(());
            }
            if Instant::now() + INTERVAL > deadline {
                let server = still.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ");
                return Err(DnsError::NotPropagated { fqdn: fqdn.to_string(), server, secs: limit.as_secs() });
            }
            tokio::time::sleep(INTERVAL).await;
            pending = still;
        }
    }

    /// `resolvers`, else the authoritative servers of the zone of `fqdn`.
    async fn check_servers(&self, fqdn: &str) -> Vec<SocketAddr> {
        if !self.settings.resolvers.is_empty() {
            return self.settings.resolvers.clone();
        }
        let mut out = Vec::new();
        if let DnsProviderSpec::Rfc2136 { nameserver, .. } = &self.settings.provider {
            out.push(*nameserver);
        }
        for ns in self.authoritative(fqdn).await {
            if !out.contains(&ns) {
                out.push(ns);
            }
        }
        if out.is_empty() {
            tracing::warn!(%fqdn, "cannot find the zone's name servers; asking the lookup servers");
            out = self.lookup_servers();
        }
        out
    }

    /// The addresses (port 53) of the NS records of the zone of `fqdn`.
    async fn authoritative(&self, fqdn: &str) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for server in self.lookup_servers() {
            let Ok(zone) = query::find_zone(server, fqdn).await else { continue };
            let Ok(ns) = query::ask(server, &zone.to_ascii(), RecordType::NS).await else { continue };
            for rec in ns.answers() {
                let RData::NS(host) = rec.data() else { continue };
                for rtype in [RecordType::A, RecordType::AAAA] {
                    let Ok(addrs) = query::ask(server, &host.0.to_ascii(), rtype).await else { continue };
                    for a in addrs.answers() {
                        let ip = match a.data() {
                            RData::A(v4) => std::net::IpAddr::V4(v4.0),
                            RData::AAAA(v6) => std::net::IpAddr::V6(v6.0),
                            _ => continue,
                        };
                        let addr = SocketAddr::new(ip, 53);
                        if !out.contains(&addr) {
                            out.push(addr);
                        }
                    }
                }
            }
            break;
        }
        out
    }
}
