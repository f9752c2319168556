//! What the discovery providers found, as plain data: the running
//! containers the Docker provider listed and the addresses DNS names
//! resolved to. The app keeps one [`Discovered`] next to the file's config
//! and merges them (`Config::merged`) before every compile; nothing here
//! does I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{RouteSpec, ServerSpec, UpstreamAddr};

/// Sources of servers and routes besides the file (`[providers]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderSettings {
    pub docker: Option<DockerSettings>,
    /// Name servers for `{ dns = ... }` servers; empty: /etc/resolv.conf.
    pub dns_resolvers: Vec<SocketAddr>,
}

/// `[providers.docker]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSettings {
    /// `None`: `DOCKER_HOST`, else `unix:///var/run/docker.sock`.
    pub endpoint: Option<String>,
    pub exposed_by_default: bool,
    pub network: Option<String>,
    pub refresh: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOrigin {
    /// Written in the config file.
    File,
    /// One address of a `{ dns = NAME:PORT }` entry.
    Dns(String),
    /// A container found by the Docker provider (its name).
    Docker(String),
}

impl std::fmt::Display for ServerOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerOrigin::File => f.write_str("file"),
            ServerOrigin::Dns(name) => write!(f, "dns:{name}"),
            ServerOrigin::Docker(container) => write!(f, "docker:{container}"),
        }
    }
}

/// A `{ dns = "NAME:PORT" }` server: expanded into one server per address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsServerSpec {
    /// `NAME:PORT` as written (lower-case).
    pub name: UpstreamAddr,
    pub weight: u32,
}

impl DnsServerSpec {
    /// The name and the port apart.
    pub fn host_port(&self) -> (&str, u16) {
        match self.name.0.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().unwrap_or(0)),
            None => (self.name.0.as_str(), 0),
        }
    }
}

/// One running container as the engine lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Network name -> the container's address on it (`None`: no IP there,
    /// as with `host` or `none`).
    pub networks: BTreeMap<String, Option<IpAddr>>,
    /// TCP ports the image or `--expose` declares.
    pub exposed_ports: Vec<u16>,
    /// `false` while its Docker health check is `starting` or `unhealthy`.
    pub ready: bool,
    /// When it was created (seconds since the epoch): the older of two
    /// containers that define clashing routes keeps them.
    pub created: i64,
}

/// A container left out, and why (for the log and the status page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub container: String,
    /// The label at fault, when one is.
    pub label: Option<String>,
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.label {
            Some(label) => write!(f, "container {}: label {}: {}", self.container, label, self.reason),
            None => write!(f, "container {}: {}", self.container, self.reason),
        }
    }
}

/// What the containers' labels add to the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerDiscovery {
    /// (pool, server), pools in label order.
    pub servers: Vec<(String, ServerSpec)>,
    pub routes: Vec<RouteSpec>,
    pub skipped: Vec<Skipped>,
    /// Containers that take part (servers contributed).
    pub taking_part: usize,
    /// Containers left out because their health check is not `healthy` yet.
    pub not_ready: usize,
}

/// Everything the providers know right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    /// The Docker provider's last good listing (`None`: no listing yet).
    pub containers: Option<Vec<Container>>,
    /// (pool, `NAME:PORT`) -> the addresses of the last good lookup.
    pub dns: BTreeMap<(String, UpstreamAddr), Vec<SocketAddr>>,
}
