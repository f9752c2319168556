//! Validation: turn the raw file types into runtime [`Config`] types,
//! collecting every problem (with its position) instead of stopping at the
//! first, and checking every cross-reference.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawCluster, RawConfig, RawRoute};
use super::route_path::route_prefix;
use super::*;

/// The longest `[server] busy_poll` window accepted.
const MAX_BUSY_POLL: Duration = Duration::from_millis(10);
/// HTTP/2 carries the header limit as a 32-bit number; 16 MiB is far past
/// any real head and keeps a client's buffer bounded.
const MAX_HEADER_BYTES: usize = 16 << 20;

/// Collects every problem rather than stopping at the first.
pub(super) struct Compiler<'a> {
    pub(super) path: &'a Path,
    /// Offsets -> line:col for the spans kept on routes and middleware.
    pub(super) lines: LineIndex<'a>,
    errors: Vec<ConfigError>,
    /// `[providers.docker]` is configured: a pool may leave `servers` out.
    pub(super) discovery: bool,
}

impl<'a> Compiler<'a> {
    /// Two listeners on one port (the same address, or one of them on all
    /// addresses) cannot both bind: said by `check`, not first by `run`.
    fn listeners_apart(&mut self, listen: &Listen) {
        let named = [("http", listen.http), ("https", listen.https), ("admin", listen.admin)];
        for (i, (a_name, a)) in named.iter().enumerate() {
            for (b_name, b) in &named[i + 1..] {
                let (Some(a), Some(b)) = (a, b) else { continue };
                let overlap = a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
                if a.port() != 0 && a.port() == b.port() && overlap {
                    let at = self.lines.key_span("listen", b_name);
                    self.err(at, format!("listen.{a_name} ({a}) and listen.{b_name} ({b}) cannot share a port"));
                }
            }
        }
    }

    pub(super) fn new(path: &'a Path, text: &'a str) -> Self {
        Compiler { path, lines: LineIndex::new(text), errors: Vec::new(), discovery: false }
    }

    pub(super) fn err(&mut self, span: Option<Range<usize>>, msg: impl Into<String>) {
        let (line, col) = span.map(|s| self.lines.line_col(s.start)).unwrap_or((1, 1));
        self.errors.push(ConfigError { path: self.path.to_path_buf(), line, col, message: msg.into() });
    }

    /// One of a fixed set of words; absent means the first. An unknown word
    /// is reported at its position and the first is used meanwhile.
    pub(super) fn keyword<T: Copy>(
        &mut self,
        v: &Option<serde_spanned::Spanned<String>>,
        name: &str,
        options: &[(&str, T)],
    ) -> T {
        let Some(v) = v else { return options[0].1 };
        if let Some((_, t)) = options.iter().find(|(word, _)| *word == v.get_ref().as_str()) {
            return *t;
        }
        let words: Vec<String> = options.iter().map(|(w, _)| format!("{w:?}")).collect();
        self.err(Some(v.span()), format!("{name} must be {}, got {:?}", words.join(" or "), v.get_ref()));
        options[0].1
    }

    /// A CIDR list; a bad entry is reported at the list and none is used.
    fn cidrs(&mut self, v: &Option<serde_spanned::Spanned<Vec<String>>>, name: &str) -> Vec<ipnet::IpNet> {
        let Some(list) = v else { return Vec::new() };
        parse_cidrs(list.get_ref()).unwrap_or_else(|msg| {
            self.err(Some(list.span()), format!("{name}: {msg}"));
            Vec::new()
        })
    }

    pub(super) fn int_in<T: TryFrom<i64>>(
        &mut self,
        v: &Option<serde_spanned::Spanned<i64>>,
        name: &str,
        lo: i64,
        hi: i64,
        default: T,
    ) -> T {
        match v {
            None => default,
            Some(s) if (lo..=hi).contains(s.get_ref()) => T::try_from(*s.get_ref()).unwrap_or(default),
            Some(s) => {
                self.err(Some(s.span()), format!("{name} must be between {lo} and {hi}, got {}", s.get_ref()));
                default
            }
        }
    }

    pub(super) fn compile(mut self, raw: RawConfig) -> Result<Config, Rejected> {
        let listen = Listen {
            http: Some(raw.listen.http.map(|a| a.0).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 80)))),
            https: raw.listen.https.map(|a| a.0),
            admin: Some(raw.listen.admin.map(|a| a.0).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901)))),
        };
        self.listeners_apart(&listen);
        let s = &raw.server;
        let server = ServerSettings {
            workers: s.workers.as_ref().map(|_| self.int_in(&s.workers, "workers", 1, 1024, 1usize)),
            shutdown_timeout: s.shutdown_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(30)),
            client_header_timeout: s.client_header_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
            idle_timeout: s.idle_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(60)),
            max_connections: self.int_in(&s.max_connections, "max_connections", 1, 10_000_000, 100_000usize),
            max_header_bytes: s.max_header_bytes.map_or(64 * 1024, |b| usize::try_from(b.0).unwrap_or(usize::MAX)),
            h2_max_concurrent_streams: self.int_in(
                &s.h2_max_concurrent_streams,
                "h2_max_concurrent_streams",
                1,
                10_000,
                256u32,
            ),
            request_id: s.request_id.unwrap_or(true),
            access_log: s.access_log.unwrap_or(true),
            defer_accept: s.defer_accept.unwrap_or(true),
            busy_poll: s.busy_poll.map(|d| d.0).unwrap_or(Duration::ZERO),
            encoded_slashes: self.keyword(
                &s.encoded_slashes,
                "encoded_slashes",
                &[("reject", EncodedSlashes::Reject), ("keep", EncodedSlashes::Keep)],
            ),
            trusted_proxies: self.cidrs(&s.trusted_proxies, "trusted_proxies"),
        };
        // Zero would close every connection before its first request.
        for (key, d) in [("client_header_timeout", server.client_header_timeout), ("idle_timeout", server.idle_timeout)]
        {
            if d.is_zero() {
                self.err(self.lines.key_span("server", key), format!("server.{key} must be greater than zero"));
            }
        }
        if !(8192..=MAX_HEADER_BYTES).contains(&server.max_header_bytes) {
            let at = self.lines.key_span("server", "max_header_bytes");
            self.err(at, "server.max_header_bytes must be between 8192 and 16MiB");
        }
        // Beyond a few hundred microseconds it only burns CPU: the wake-ups
        // it saves are that far apart only when the proxy is nearly idle.
        if server.busy_poll > MAX_BUSY_POLL {
            self.err(self.lines.key_span("server", "busy_poll"), "server.busy_poll must be at most 10ms");
        }
        // With several workers, one at a time owns the I/O driver and a
        // parked one keeps it while it sleeps: a spinning one would poll
        // nothing and the wake-ups would stay.
        if !server.busy_poll.is_zero() && server.workers != Some(1) {
            let at = self.lines.key_span("server", "busy_poll");
            self.err(at, "server.busy_poll needs server.workers = 1 (one worker polls for I/O at a time)");
        }

        let tls = raw.tls.as_ref().map(|t| {
            let t = t.get_ref();
            let unknown_sni = self.keyword(
                &t.unknown_sni,
                "unknown_sni",
                &[("default", UnknownSni::DefaultCert), ("reject", UnknownSni::Reject)],
            );
            TlsSettings {
                certs_dir: self.relative(t.certs_dir.as_deref().unwrap_or("certs")),
                redirect_http: t.redirect_http.unwrap_or(true),
                unknown_sni,
            }
        });
        let acme = raw.acme.as_ref().map(|a| self.acme(a));
        let certificates = self.certificates(&raw.certificates, acme.as_ref());
        self.check_wildcard_routes(&raw.routes, acme.as_ref());
        let cluster = raw.cluster.as_ref().map(|c| self.cluster(c.get_ref()));
        let providers = self.providers(&raw.providers);
        self.discovery = providers.docker.is_some();
        let upstreams: Vec<UpstreamSpec> = raw.upstreams.iter().map(|(name, u)| self.upstream(name, u)).collect();
        let middleware: BTreeMap<String, MiddlewareSpec> = raw
            .middleware
            .iter()
            .map(|(name, m)| {
                let (line, col) = self.lines.line_col(m.span().start);
                let keys = (self.lines.keys_of_table(m.span().start).into_iter())
                    .map(|(key, at)| {
                        let (line, col) = self.lines.line_col(at.start);
                        (key, line, col)
                    })
                    .collect();
                (
                    name.clone(),
                    MiddlewareSpec {
                        name: name.clone(),
                        kind: m.get_ref().clone(),
                        line,
                        col,
                        keys,
                        base_dir: self.path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                    },
                )
            })
            .collect();
        for (name, m) in &raw.middleware {
            if let RawMiddleware::RateLimit { scope: Some(scope), .. } = m.get_ref() {
                if scope == "cluster" && cluster.is_none() {
                    self.err(
                        Some(m.span()),
                        format!("middleware {name:?}: scope = \"cluster\" needs a [cluster] section (the Redis that holds the shared buckets)"),
                    );
                }
            }
        }
        let routes = self.routes(&raw.routes, &upstreams, &middleware);

        if self.errors.is_empty() {
            Ok(Config {
                source: self.path.to_path_buf(),
                listen,
                server,
                tls,
                acme,
                cluster,
                upstreams,
                middleware,
                routes,
                providers,
                certificates,
            })
        } else {
            self.errors.sort_by_key(|e| (e.line, e.col));
            Err(Rejected { errors: ConfigErrors(self.errors), middleware: middleware.into_values().collect() })
        }
    }

    fn cluster(&mut self, c: &RawCluster) -> ClusterSettings {
        let url = c.redis.get_ref().trim().to_string();
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            self.err(Some(c.redis.span()), format!("redis must be a redis:// or rediss:// URL, got {url:?}"));
        } else {
            match redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
                Err(e) => self.err(Some(c.redis.span()), format!("invalid redis URL: {e}")),
                // As `run` refuses it (cluster/client.rs), so `check` does.
                Ok(info) if matches!(info.addr, redis::ConnectionAddr::TcpTls { insecure: true, .. }) => self.err(
                    Some(c.redis.span()),
                    "the redis URL's #insecure fragment is not supported: the server's certificate is always \
                     verified (a private CA: RAMPART_REDIS_CA_FILE)",
                ),
                Ok(_) => {}
            }
        }
        let key_prefix = c.key_prefix.as_ref().map_or_else(|| "rampart:".to_string(), |p| p.get_ref().clone());
        if key_prefix.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            let span = c.key_prefix.as_ref().map(|p| p.span());
            self.err(span, "key_prefix must not contain spaces or control characters");
        }
        let timeout = c.timeout.map_or(Duration::from_millis(250), |d| d.0);
        let connect_timeout = c.connect_timeout.map_or(Duration::from_secs(1), |d| d.0);
        for (key, d) in [("timeout", timeout), ("connect_timeout", connect_timeout)] {
            if d.is_zero() {
                let at = self.lines.key_span("cluster", key).unwrap_or(c.redis.span());
                self.err(Some(at), format!("cluster.{key} must be greater than zero"));
            }
        }
        ClusterSettings { redis: url, key_prefix, timeout, connect_timeout }
    }

    /// Paths in the file are relative to the file's directory.
    pub(super) fn relative(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    fn routes(
        &mut self,
        raw: &[serde_spanned::Spanned<RawRoute>],
        upstreams: &[UpstreamSpec],
        middleware: &BTreeMap<String, MiddlewareSpec>,
    ) -> Vec<RouteSpec> {
        let mut out = Vec::with_capacity(raw.len());
        let mut seen: HashMap<(HostPattern, String), (usize, usize)> = HashMap::new();
        let mut names: HashMap<String, (usize, usize)> = HashMap::new();
        for r in raw {
            let span = r.span();
            let (line, col) = self.lines.line_col(span.start);
            let r = r.get_ref();
            // A host or path that is refused stands in as `*` or as
            // written, but is no duplicate of anything: that would be a
            // second, false error beside the real one.
            let mut refused = false;
            let host = match &r.host {
                None => HostPattern::Any,
                Some(h) => HostPattern::parse(h.get_ref()).unwrap_or_else(|e| {
                    self.err(Some(h.span()), e);
                    refused = true;
                    HostPattern::Any
                }),
            };
            let prefix = match &r.path {
                None => String::new(),
                Some(p) => route_prefix(p.get_ref()).unwrap_or_else(|e| {
                    self.err(Some(p.span()), e);
                    refused = true;
                    p.get_ref().trim_end_matches('/').to_string()
                }),
            };
            let display_path = if prefix.is_empty() { "/".to_string() } else { format!("{prefix}/") };
            // The contract's `host+path`, the path as written ("/" if none).
            let written_path = r.path.as_ref().map_or("/", |p| p.get_ref().as_str());
            let name = r.name.as_ref().map(|n| n.get_ref().clone()).unwrap_or_else(|| format!("{host}{written_path}"));
            if let Some(n) = r.name.as_ref().filter(|n| n.get_ref() == super::NO_ROUTE) {
                self.err(
                    Some(n.span()),
                    format!("route name {:?} is reserved for requests that match no route", n.get_ref()),
                );
            }
            // Prefixes route without case (`router.rs`), so `/Api` and `/api` are one.
            if refused {
                // Its name and place are those of a stand-in.
            } else if let Some((l, c)) = seen.insert((host.clone(), prefix.to_ascii_lowercase()), (line, col)) {
                self.err(
                    Some(span.clone()),
                    format!("duplicate route: host {host} and path {display_path} are already routed at line {l}, column {c}"),
                );
            } else if let Some((l, c)) = names.insert(name.clone(), (line, col)) {
                let sp = r.name.as_ref().map(|n| n.span()).unwrap_or(span.clone());
                self.err(Some(sp), format!("route name {name:?} is already used by the route at line {l}, column {c}"));
            }
            let upstream = r.upstream.get_ref();
            if !upstreams.iter().any(|u| &u.name == upstream) {
                self.err(Some(r.upstream.span()), format!("route names unknown upstream {upstream:?}"));
            }
            for m in &r.middleware {
                if !middleware.contains_key(m.get_ref()) {
                    self.err(Some(m.span()), format!("route names unknown middleware {:?}", m.get_ref()));
                }
            }
            out.push(RouteSpec {
                name,
                host,
                prefix,
                strip_prefix: r.strip_prefix,
                upstream: upstream.clone(),
                middleware: r.middleware.iter().map(|m| m.get_ref().clone()).collect(),
                preserve_host: r.preserve_host.unwrap_or(true),
                line,
                col,
            });
        }
        out
    }
}
