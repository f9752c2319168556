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
                if !endpoint_ok(v) {
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

/// `unix:///PATH`, or `tcp://HOST:PORT` (`http://` is the same to the
/// engine's client) with a port from 1 to 65535: what the provider can
/// dial, so a bad one is refused here rather than retried forever.
fn endpoint_ok(v: &str) -> bool {
    if let Some(path) = v.strip_prefix("unix:///") {
        return !path.is_empty();
    }
    let Some(authority) = v.strip_prefix("tcp://").or_else(|| v.strip_prefix("http://")) else { return false };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    let Some((host, port)) = authority.rsplit_once(':') else { return false };
    !host.is_empty() && !authority.contains('/') && port.parse::<u16>().is_ok_and(|p| p != 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_are_what_the_provider_can_dial() {
        for ok in
            ["unix:///var/run/docker.sock", "tcp://127.0.0.1:2375", "tcp://socket-proxy:2375", "http://[::1]:2375/"]
        {
            assert!(super::endpoint_ok(ok), "{ok}");
        }
        for bad in [
            "unix://",
            "unix:///",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:99999",
            "tcp://:2375",
            "tcp://h:0",
            "https://h:2376",
            "tcp://h:2375/x",
        ] {
            assert!(!super::endpoint_ok(bad), "{bad}");
        }
    }
}
