//! Configuration: read the TOML file (`raw`), check every value and
//! cross-reference, and produce a [`Config`] whose types cannot hold an
//! invalid state. Every problem is a [`ConfigError`] with `file:line:col`.

mod acme;
mod compile;
mod discovered;
mod error;
mod labels;
mod load;
mod merge;
mod providers;
mod raw;
mod route_path;
mod sections;
mod statics;
mod upstreams;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use acme::{
    valid_cert_name, AcmeChallenge, AcmeSettings, CertificateSpec, DnsProviderSpec, DnsSettings, OnDemandSettings,
    TsigAlgorithm, TsigSpec,
};
pub use discovered::{
    Container, Discovered, DnsServerSpec, DockerDiscovery, DockerSettings, ProviderSettings, ServerOrigin, Skipped,
};
pub use error::{line_col, ConfigError, ConfigErrors, LineIndex};
pub use labels::discover_containers;
pub use load::Rejected;
pub use raw::RawMiddleware;
pub use values::{parse_cidrs, ByteSize, UpstreamAddr};

/// The route name reserved for requests that match no route (their metric
/// label and access-log route); a configured route cannot take it.
pub const NO_ROUTE: &str = "none";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub listen: Listen,
    pub server: ServerSettings,
    pub tls: Option<TlsSettings>,
    pub acme: Option<AcmeSettings>,
    pub cluster: Option<ClusterSettings>,
    pub upstreams: Vec<UpstreamSpec>,
    pub middleware: BTreeMap<String, MiddlewareSpec>,
    pub routes: Vec<RouteSpec>,
    pub providers: ProviderSettings,
    /// `[[certificates]]`: certificates beyond the route hosts.
    pub certificates: Vec<CertificateSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub workers: Option<usize>,
    pub shutdown_timeout: Duration,
    pub client_header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub h2_max_concurrent_streams: u32,
    pub request_id: bool,
    pub access_log: bool,
    pub defer_accept: bool,
    /// Zero: off.
    pub busy_poll: Duration,
    pub encoded_slashes: EncodedSlashes,
    /// Peers whose `X-Forwarded-*` and `Forwarded` headers are kept; from
    /// any other peer they are replaced or removed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// What a request path with an encoded slash or backslash (`%2F`, `%5C`)
/// or a literal `\` gets (Envoy's `path_with_escaped_slashes_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodedSlashes {
    /// 400: a backend that decodes `%2F` before routing would see other
    /// segments than the proxy judged.
    #[default]
    Reject,
    /// Forwarded as sent, for apps that put encoded slashes in segments.
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSni {
    /// Answer with the self-signed fallback certificate.
    DefaultCert,
    /// Fail the handshake.
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub certs_dir: PathBuf,
    pub redirect_http: bool,
    pub unknown_sni: UnknownSni,
}

/// `[cluster]`, checked: a URL the Redis client accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// As written; may hold a password, so never printed (see [`Self::redis_redacted`]).
    pub redis: String,
    pub key_prefix: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl ClusterSettings {
    /// The URL with any password replaced by `***`, for logs and status.
    pub fn redis_redacted(&self) -> String {
        let Some((scheme, rest)) = self.redis.split_once("://") else { return self.redis.clone() };
        match rest.split_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => format!("{scheme}://***@{host}"),
            },
            None => self.redis.clone(),
        }
    }
}

impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("redis", &self.redis_redacted())
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub addr: UpstreamAddr,
    pub weight: u32,
    /// Where the server came from, for the status page.
    pub origin: ServerOrigin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub host: Option<String>,
    pub expected_status: (u16, u16),
}

/// Ejection from live traffic (nginx's `max_fails` / `fail_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveHealth {
    pub max_fails: u32,
    pub fail_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    pub name: String,
    pub balance: Balance,
    /// Fixed servers, plus, once merged, the discovered ones.
    pub servers: Vec<ServerSpec>,
    /// Names whose addresses become servers (DNS discovery).
    pub dns: Vec<DnsServerSpec>,
    pub dns_refresh: Duration,
    pub health: Option<HealthSpec>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub retries: u32,
    pub passive: PassiveHealth,
    pub max_idle_per_server: usize,
    /// A static upstream: files from a directory instead of servers
    /// (`servers` is then empty).
    pub files: Option<StaticSpec>,
}

/// `static = DIR` and its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticSpec {
    /// As written, resolved against the config file's directory; it may be
    /// a symlink (a release switch), so it is resolved again per request.
    pub root: PathBuf,
    /// File names (no `/`) tried in a directory, in order.
    pub index: Vec<String>,
    /// A path inside `root`, starting with `/`.
    pub fallback: Option<String>,
    pub precompressed: bool,
    pub follow_symlinks: bool,
    pub allow_dotfiles: bool,
    /// How long the open-file cache trusts a file after checking its path
    /// (`upstream::files::memo`); zero: every request checks.
    pub recheck_after: Duration,
    pub cache_control: Vec<CacheRule>,
}

/// Which paths a `cache_control` rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// `/assets/`: the path starts with it.
    Prefix(String),
    /// `*.html`: the path ends with it.
    Suffix(String),
}

impl PathPattern {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Prefix(p) => path.starts_with(p.as_str()),
            PathPattern::Suffix(s) => path.ends_with(s.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRule {
    pub pattern: PathPattern,
    pub value: http::HeaderValue,
}

/// A middleware definition, checked for shape; the middleware module
/// compiles it and reports its own errors at `line:col`.
#[derive(Debug, Clone)]
pub struct MiddlewareSpec {
    pub name: String,
    pub kind: RawMiddleware,
    pub line: usize,
    pub col: usize,
    /// Where each key written in the definition's table (`key = ...`) is,
    /// as `(key, line, col)`: an error about one value points there.
    pub keys: Vec<(String, usize, usize)>,
    /// The config file's directory, for relative paths in the definition.
    pub base_dir: PathBuf,
}

impl MiddlewareSpec {
    /// Where an error about `key` points: that key's line, or the table's
    /// when the key is not written there as such.
    pub fn position(&self, key: Option<&str>) -> (usize, usize) {
        key.and_then(|k| self.keys.iter().find(|(name, _, _)| name == k))
            .map_or((self.line, self.col), |&(_, line, col)| (line, col))
    }

    /// A path from the definition, relative to the config file.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// How a route matches the request's host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// One name, lower-case.
    Exact(String),
    /// `*.example.com`: stores `.example.com`; matches any deeper name.
    Wildcard(String),
    /// `*`: any host.
    Any,
}

impl HostPattern {
    fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        if s == "*" || s.is_empty() {
            return Ok(HostPattern::Any);
        }
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.split('.')
                    .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        };
        if let Some(rest) = s.strip_prefix("*.") {
            if valid_name(rest) {
                return Ok(HostPattern::Wildcard(format!(".{rest}")));
            }
        } else if valid_name(&s) {
            return Ok(HostPattern::Exact(s));
        }
        Err(format!("invalid host {s:?}; expected a name (\"example.com\"), a wildcard (\"*.example.com\") or \"*\"; no port, no scheme"))
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Stable name for metrics and logs: the `name` key, else `host+path`.
    pub name: String,
    pub host: HostPattern,
    /// Path prefix without a trailing slash (`""` for the root).
    pub prefix: String,
    pub strip_prefix: bool,
    pub upstream: String,
    pub middleware: Vec<String>,
    pub preserve_host: bool,
    /// Where the route is written, for errors found after this stage.
    pub line: usize,
    pub col: usize,
}

impl Config {
    /// `ok: 7 routes, 3 upstreams, 5 middleware`
    pub fn summary(&self) -> String {
        format!(
            "ok: {} routes, {} upstreams, {} middleware",
            self.routes.len(),
            self.upstreams.len(),
            self.middleware.len()
        )
    }
}

#[cfg(test)]
mod tests;
