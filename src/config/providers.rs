//! Validation of `[providers]`: the Docker endpoint's scheme, the resync
//! interval, the DNS resolvers.

use std::time::Duration;

use super::compile::Compiler;
use super::raw::RawProviders;
use super::{DockerSettings, ProviderSettings};

impl Compiler<'_> {
    pub(super) fn providers(&mut self, raw: &RawProviders) -> ProviderSettings {
        let docker = raw.docker.as_ref().map(|d| {
            let d = d.get_ref();
            if let Some(e) = &d.endpoint {
                let v = e.get_ref();
                let ok = ["unix:///", "tcp://", "http://"].iter().any(|p| v.starts_with(p) && v.len() > p.len());
                if !ok {
                    self.err(
                        Some(e.span()),
                        format!("endpoint must be unix:///PATH or tcp://HOST:PORT, got {v:?} (TLS to the engine: use a local socket proxy)"),
                    );
                }
            }
            DockerSettings {
                endpoint: d.endpoint.as_ref().map(|e| e.get_ref().clone()),
                exposed_by_default: d.exposed_by_default.unwrap_or(false),
                network: d.network.clone().filter(|n| !n.is_empty()),
                refresh: d.refresh.map(|r| r.0).unwrap_or(Duration::from_secs(60)),
            }
        });
        if let Some(d) = &docker {
            if d.refresh < Duration::from_secs(1) {
                self.err(raw.docker.as_ref().map(|d| d.span()), "providers.docker.refresh must be at least 1s");
            }
        }
        let dns_resolvers = raw.dns.as_ref().map(|d| d.resolvers.iter().map(|a| a.0).collect()).unwrap_or_default();
        ProviderSettings { docker, dns_resolvers }
    }
}
