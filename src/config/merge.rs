//! The file's config plus what the providers discovered, as one config to
//! compile: DNS addresses and containers become servers of their pools
//! (pools the file declares keep their settings; pools only labels name get
//! the defaults), label routes join the file's routes. The file always
//! wins: discovery adds, never removes or overrides.

use std::time::Duration;

use super::discovered::{Discovered, DockerDiscovery};
use super::labels::discover_containers;
use super::upstreams::DEFAULT_MAX_IDLE_PER_SERVER;
use super::{Balance, Config, PassiveHealth, ServerOrigin, ServerSpec, UpstreamAddr, UpstreamSpec};

impl Config {
    /// This (file) config with `found` merged in, and what the Docker
    /// provider's labels left out.
    pub fn merged(&self, found: &Discovered) -> (Config, DockerDiscovery) {
        let mut config = self.clone();
        for u in &mut config.upstreams {
            for entry in &u.dns {
                let Some(addrs) = found.dns.get(&(u.name.clone(), entry.name.clone())) else { continue };
                for a in addrs {
                    let addr = UpstreamAddr(a.to_string());
                    if !u.servers.iter().any(|s| s.addr == addr) {
                        u.servers.push(ServerSpec {
                            addr,
                            weight: entry.weight,
                            origin: ServerOrigin::Dns(entry.name.0.clone()),
                        });
                    }
                }
            }
        }
        let docker = match (&self.providers.docker, &found.containers) {
            (Some(settings), Some(containers)) => discover_containers(containers, settings, self),
            _ => DockerDiscovery::default(),
        };
        for (pool, server) in &docker.servers {
            let i = match config.upstreams.iter().position(|u| &u.name == pool) {
                Some(i) => i,
                None => {
                    config.upstreams.push(default_upstream(pool));
                    config.upstreams.len() - 1
                }
            };
            let u = &mut config.upstreams[i];
            if !u.servers.iter().any(|s| s.addr == server.addr) {
                u.servers.push(server.clone());
            }
        }
        config.routes.extend(docker.routes.iter().cloned());
        (config, docker)
    }
}

/// A pool that only discovery names (Docker labels): the defaults a
/// `[upstreams.NAME]` table with nothing but servers gets.
fn default_upstream(name: &str) -> UpstreamSpec {
    UpstreamSpec {
        name: name.to_string(),
        balance: Balance::RoundRobin,
        servers: Vec::new(),
        dns: Vec::new(),
        dns_refresh: Duration::from_secs(10),
        health: None,
        connect_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(60),
        retries: 1,
        passive: PassiveHealth { max_fails: 3, fail_timeout: Duration::from_secs(10) },
        max_idle_per_server: DEFAULT_MAX_IDLE_PER_SERVER,
        files: None,
    }
}
