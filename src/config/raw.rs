//! The config file as written: serde types that mirror the TOML one to one,
//! reject unknown keys, and keep spans on the fields validation points at.
//! Nothing here is trusted yet; `compile` turns it into runtime types.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::values::{ByteSize, HumanDuration, ListenAddr, LongDuration, RawServer};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listen: RawListen,
    #[serde(default)]
    pub server: RawServerSettings,
    pub tls: Option<Spanned<RawTls>>,
    pub acme: Option<Spanned<RawAcme>>,
    pub cluster: Option<Spanned<RawCluster>>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<RawUpstream>>,
    #[serde(default)]
    pub middleware: BTreeMap<String, Spanned<RawMiddleware>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub providers: RawProviders,
    /// Certificates beyond the route hosts, one per entry.
    #[serde(default)]
    pub certificates: Vec<Spanned<RawCertificate>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub names: Spanned<Vec<Spanned<String>>>,
}

/// Sources of servers and routes besides this file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProviders {
    pub docker: Option<Spanned<RawDocker>>,
    pub dns: Option<RawDnsProvider>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDocker {
    /// `unix:///var/run/docker.sock` or `tcp://HOST:PORT`; `DOCKER_HOST` when unset.
    pub endpoint: Option<Spanned<String>>,
    pub exposed_by_default: Option<bool>,
    pub network: Option<String>,
    pub refresh: Option<HumanDuration>,
}

/// How `{ dns = "NAME:PORT" }` servers are looked up.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnsProvider {
    /// Ask these name servers (`IP:PORT`) instead of /etc/resolv.conf's.
    #[serde(default)]
    pub resolvers: Vec<ListenAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub http: Option<ListenAddr>,
    pub https: Option<ListenAddr>,
    pub admin: Option<ListenAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerSettings {
    pub workers: Option<Spanned<i64>>,
    pub shutdown_timeout: Option<HumanDuration>,
    /// Time a client has to send a complete request head (slowloris guard).
    pub client_header_timeout: Option<HumanDuration>,
    /// Time an idle keep-alive connection is kept open.
    pub idle_timeout: Option<HumanDuration>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_header_bytes: Option<ByteSize>,
    pub h2_max_concurrent_streams: Option<Spanned<i64>>,
    /// Set `X-Request-Id` on requests that lack one and echo it to the client.
    pub request_id: Option<bool>,
    /// Write one JSON access-log line per request to stdout.
    pub access_log: Option<bool>,
    /// The http and https listeners accept a connection only once its
    /// client has sent something (Linux TCP_DEFER_ACCEPT; nginx `deferred`,
    /// HAProxy `defer-accept`).
    pub defer_accept: Option<bool>,
    /// After a worker wakes, keep polling for I/O until this long passes
    /// without work, instead of sleeping at once (HAProxy `busy-polling`).
    pub busy_poll: Option<HumanDuration>,
    /// `%2F`, `%5C` or a literal `\` in a request path: `"reject"` (400)
    /// or `"keep"` (forwarded untouched).
    pub encoded_slashes: Option<Spanned<String>>,
    /// Peers whose `X-Forwarded-*` and `Forwarded` headers are believed.
    pub trusted_proxies: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub certs_dir: Option<String>,
    pub redirect_http: Option<bool>,
    /// What a handshake for a name with no certificate gets: `"default"`
    /// (the self-signed fallback) or `"reject"`.
    pub unknown_sni: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub email: Option<String>,
    pub directory: Option<String>,
    pub challenge: Option<Spanned<String>>,
    pub renew_before: Option<LongDuration>,
    pub ca_cert: Option<String>,
    pub dns: Option<Spanned<RawAcmeDns>>,
    pub on_demand: Option<Spanned<RawOnDemand>>,
}

/// `[acme.dns]`: how DNS-01 answers are published.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcmeDns {
    pub provider: Option<Spanned<String>>,
    pub nameserver: Option<Spanned<String>>,
    pub tsig_key: Option<Spanned<String>>,
    pub tsig_algorithm: Option<Spanned<String>>,
    pub tsig_secret: Option<Spanned<String>>,
    pub tsig_secret_file: Option<Spanned<String>>,
    pub command: Option<Spanned<String>>,
    /// How long the hook may run (`exec`), default 60 s.
    pub timeout: Option<HumanDuration>,
    pub propagation_timeout: Option<HumanDuration>,
    #[serde(default)]
    pub resolvers: Vec<Spanned<String>>,
    /// TTL of the TXT records written (`rfc2136`), default 60.
    pub ttl: Option<Spanned<i64>>,
}

/// `[acme.on_demand]`: certificates for names first seen in a handshake.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOnDemand {
    pub ask: Spanned<String>,
    pub wait: Option<HumanDuration>,
    pub max_per_hour: Option<Spanned<i64>>,
}

/// `[cluster]`: state shared by several instances, on Redis.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// `redis://[:PASSWORD@]HOST:PORT/DB` or `rediss://` for TLS.
    pub redis: Spanned<String>,
    pub key_prefix: Option<Spanned<String>>,
    /// Longest wait for one Redis answer.
    pub timeout: Option<HumanDuration>,
    /// Longest wait for a connection to Redis.
    pub connect_timeout: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub balance: Option<Spanned<String>>,
    /// The servers of a proxied upstream; a static one has `static` instead.
    pub servers: Option<Spanned<Vec<RawServer>>>,
    /// A directory whose files this upstream serves (instead of `servers`).
    #[serde(rename = "static")]
    pub static_dir: Option<Spanned<String>>,
    /// Files tried, in order, for a request that names a directory.
    pub index: Option<Spanned<Vec<String>>>,
    /// What a path with no file gets (`try_files $uri /index.html`).
    pub fallback: Option<Spanned<String>>,
    /// Serve `NAME.br` / `NAME.zst` / `NAME.gz` when the client accepts it.
    pub precompressed: Option<Spanned<bool>>,
    /// Serve symlinks whose target lies outside the directory.
    pub follow_symlinks: Option<Spanned<bool>>,
    /// Serve names that start with a dot (`.env`, `.git/`).
    pub allow_dotfiles: Option<Spanned<bool>>,
    /// How long a file answered from memory is trusted after its path was
    /// checked (nginx's `open_file_cache_valid`); 0 checks every request.
    pub recheck_after: Option<HumanDuration>,
    /// `Cache-Control` by path: the first rule that matches applies.
    pub cache_control: Option<Vec<Spanned<RawCacheRule>>>,
    /// How often `{ dns = ... }` servers are looked up again (or their TTL, if shorter).
    pub dns_refresh: Option<HumanDuration>,
    pub health: Option<Spanned<RawHealth>>,
    pub connect_timeout: Option<HumanDuration>,
    /// Time to wait for the upstream's response head after the request was sent.
    pub response_timeout: Option<HumanDuration>,
    /// Extra attempts on another server after a connect failure.
    pub retries: Option<Spanned<i64>>,
    /// Consecutive live-traffic failures (connect errors, resets, timeouts)
    /// that take a server out of rotation; 0 turns passive checks off.
    pub max_fails: Option<Spanned<i64>>,
    /// How long a passively ejected server stays out; doubles on repeat.
    pub fail_timeout: Option<HumanDuration>,
    /// Idle keep-alive connections kept per server.
    pub max_idle_per_server: Option<Spanned<i64>>,
}

/// One `cache_control` entry: `{ path = "/assets/", value = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCacheRule {
    pub path: Spanned<String>,
    pub value: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub path: Option<String>,
    pub interval: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    pub healthy_threshold: Option<Spanned<i64>>,
    pub unhealthy_threshold: Option<Spanned<i64>>,
    /// `Host` header for probes.
    pub host: Option<String>,
    /// Inclusive status range counted as healthy, default `[200, 399]`.
    pub expected_status: Option<Spanned<Vec<u16>>>,
}

/// A middleware definition. Internally tagged by `type`; its fields are
/// plain (no spans) because serde buffers tagged enums, and errors point at
/// the definition's table instead.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawMiddleware {
    RateLimit {
        average: f64,
        burst: Option<u32>,
        #[serde(default)]
        trusted_proxies: Vec<String>,
        key_header: Option<String>,
        /// `"local"` (default): this instance's buckets; `"cluster"`: shared on Redis.
        scope: Option<String>,
        /// With `scope = "cluster"`, when Redis does not answer: `"local"`
        /// (default), `"allow"` or `"deny"`.
        on_store_error: Option<String>,
    },
    SecurityHeaders {
        hsts: Option<String>,
        content_type_options: Option<String>,
        frame_options: Option<String>,
        referrer_policy: Option<String>,
        permissions_policy: Option<String>,
        content_security_policy: Option<String>,
        strip_server: Option<bool>,
    },
    Compress {
        min_size: Option<ByteSize>,
        algorithms: Option<Vec<String>>,
        level: Option<u32>,
    },
    Cors {
        allow_origins: Vec<String>,
        allow_methods: Option<Vec<String>>,
        allow_headers: Option<Vec<String>>,
        expose_headers: Option<Vec<String>>,
        allow_credentials: Option<bool>,
        max_age: Option<HumanDuration>,
    },
    IpAllow {
        allow: Vec<String>,
    },
    IpDeny {
        deny: Vec<String>,
    },
    BasicAuth {
        htpasswd: String,
        realm: Option<String>,
    },
    Headers {
        #[serde(default)]
        request_set: BTreeMap<String, String>,
        #[serde(default)]
        request_add: BTreeMap<String, String>,
        #[serde(default)]
        request_remove: Vec<String>,
        #[serde(default)]
        response_set: BTreeMap<String, String>,
        #[serde(default)]
        response_add: BTreeMap<String, String>,
        #[serde(default)]
        response_remove: Vec<String>,
    },
    BodyLimit {
        max: ByteSize,
    },
    /// A shared HTTP cache (RFC 9111) in front of the route's upstream.
    Cache {
        max_size: Option<ByteSize>,
        dir: Option<String>,
        /// Disk tier bound (only with `dir`).
        max_disk_size: Option<ByteSize>,
        max_object_size: Option<ByteSize>,
        default_ttl: Option<HumanDuration>,
        lock_timeout: Option<HumanDuration>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub strip_prefix: bool,
    pub upstream: Spanned<String>,
    #[serde(default)]
    pub middleware: Vec<Spanned<String>>,
    /// Send the client's `Host` upstream (default) or the server address.
    pub preserve_host: Option<bool>,
}
