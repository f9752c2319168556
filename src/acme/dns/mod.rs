//! DNS-01 publishing: the [`DnsProvider`] seam (`present` / `cleanup` of one
//! TXT value) with its two backends, RFC 2136 dynamic updates signed with
//! TSIG ([`rfc2136`]) and an external hook in lego's `exec` protocol
//! ([`exec`]); where the record goes (`_acme-challenge.NAME`, after any
//! CNAME) and the wait until the zone's servers answer with it
//! ([`propagation`]). DNS messages go through hickory's client.

pub mod exec;
pub mod propagation;
pub mod query;
pub mod rfc2136;

use std::sync::Arc;

use crate::config::{DnsProviderSpec, DnsSettings};

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("DNS query for {name} to {server}: {message}")]
    Query { server: std::net::SocketAddr, name: String, message: String },
    #[error("dynamic update of {name} at {server} {verb}: {message}")]
    Update { server: std::net::SocketAddr, name: String, verb: &'static str, message: String },
    #[error(
        "TSIG: {server} rejected key {key:?} ({algorithm}): {message}; check tsig_key, tsig_algorithm and the secret against the server's key"
    )]
    Tsig { server: std::net::SocketAddr, key: String, algorithm: &'static str, message: String },
    #[error("no zone found for {0}: no SOA record in the answers")]
    NoZone(String),
    #[error("hook {command} {action} {fqdn}: {message}")]
    Hook { command: String, action: &'static str, fqdn: String, message: String },
    #[error("the TXT record for {fqdn} was not visible at {server} within {secs} s")]
    NotPropagated { fqdn: String, server: String, secs: u64 },
}

/// Publishes and removes one TXT value at a name. `present` adds a record
/// beside any others at the name (an apex and its wildcard validate with
/// two values at once); `cleanup` removes that record only.
#[async_trait::async_trait]
pub trait DnsProvider: Send + Sync {
    async fn present(&self, fqdn: &str, value: &str) -> Result<(), DnsError>;
    async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), DnsError>;
}

/// The provider, the propagation check and the servers that resolve names.
pub struct Dns {
    pub provider: Arc<dyn DnsProvider>,
    pub settings: DnsSettings,
}

impl Dns {
    pub fn new(settings: DnsSettings) -> Dns {
        let provider: Arc<dyn DnsProvider> = match &settings.provider {
            DnsProviderSpec::Rfc2136 { nameserver, tsig, ttl } => {
                Arc::new(rfc2136::Rfc2136::new(*nameserver, tsig.clone(), *ttl))
            }
            DnsProviderSpec::Exec { command, timeout } => Arc::new(exec::Exec::new(command.clone(), *timeout)),
        };
        Dns { provider, settings }
    }

    /// Servers that answer recursive look-ups (CNAMEs, zones, NS
    /// addresses): `resolvers`, else the RFC 2136 primary (authoritative
    /// for the zone it updates), else the system's.
    pub fn lookup_servers(&self) -> Vec<std::net::SocketAddr> {
        if !self.settings.resolvers.is_empty() {
            return self.settings.resolvers.clone();
        }
        match &self.settings.provider {
            DnsProviderSpec::Rfc2136 { nameserver, .. } => vec![*nameserver],
            DnsProviderSpec::Exec { .. } => query::system_resolvers(),
        }
    }

    /// `_acme-challenge.NAME.` for `domain` (a wildcard's `*.` dropped),
    /// followed through CNAMEs (a delegated validation zone).
    pub async fn challenge_fqdn(&self, domain: &str) -> String {
        let base = format!("_acme-challenge.{}.", domain.trim_start_matches("*.").trim_end_matches('.'));
        query::follow_cnames(&self.lookup_servers(), &base).await
    }
}
