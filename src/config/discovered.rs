//! What the discovery providers found, as plain data: the running
//! containers the Docker provider listed and the addresses DNS names
//! resolved to. The app keeps one [`Discovered`] next to the file's config
//! and merges them (`Config::merged`) before every compile; nothing here
//! does I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::{RouteSpec, ServerSpec, UpstreamAddr};

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
