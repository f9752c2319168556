//! A named pool of servers with its balancer, timeouts and client, or, for
//! a static upstream, the files it serves instead.

use std::sync::Arc;
use std::time::Duration;

use super::balancer::Balancer;
use super::client::{ClientSettings, UpstreamClient};
use super::files::StaticSite;
use super::server::Server;
use crate::config::UpstreamSpec;

#[derive(Debug)]
pub struct Pool {
    pub name: Arc<str>,
    pub servers: Vec<Arc<Server>>,
    pub balancer: Balancer,
    pub spec: UpstreamSpec,
    pub client_settings: ClientSettings,
    pub client: UpstreamClient,
    /// A static upstream's files (it has no servers).
    pub files: Option<StaticSite>,
}

impl Pool {
    /// Build a pool, taking over server state and the client from `previous`
    /// (the pool of the same name in the running snapshot) where they fit.
    pub fn build(spec: &UpstreamSpec, previous: Option<&Pool>) -> Result<Pool, String> {
        let name: Arc<str> = spec.name.as_str().into();
        let servers = spec
            .servers
            .iter()
            .map(|s| {
                if let Some(old) =
                    previous.and_then(|p| p.servers.iter().find(|o| o.addr == s.addr && o.weight == s.weight))
                {
                    return Ok(Arc::clone(old));
                }
                Server::new(&name, s.addr.clone(), s.weight)
                    .map(Arc::new)
                    .map_err(|e| format!("upstream {:?}: server {}: {e}", spec.name, s.addr.0))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client_settings = ClientSettings {
            connect_timeout: spec.connect_timeout,
            response_timeout: spec.response_timeout,
            max_idle_per_server: spec.max_idle_per_server,
        };
        let client = match previous {
            Some(p) if p.client_settings == client_settings => p.client.clone(),
            _ => UpstreamClient::new(client_settings),
        };
        Ok(Pool {
            name,
            balancer: Balancer::new(spec.balance, servers.len()),
            servers,
            spec: spec.clone(),
            client_settings,
            client,
            files: spec.files.clone().map(StaticSite::new),
        })
    }

    pub fn response_timeout(&self) -> Duration {
        self.spec.response_timeout
    }

    /// Choose a server not in `excluded`.
    pub fn pick(&self, excluded: &[usize]) -> Option<usize> {
        self.balancer.pick(&self.servers, excluded)
    }
}
