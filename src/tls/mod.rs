//! TLS termination: the rustls `ServerConfig` (TLS 1.2 and 1.3 only, ALPN
//! `h2` + `http/1.1`, session tickets and a session cache), the live
//! certificate map (static certs from `tls.certs_dir`, ACME-managed certs,
//! the self-signed fallback) behind an `ArcSwap` so new certificates swap
//! in without touching open connections, and the port-80 behaviour
//! (ACME HTTP-01 answers, redirect to HTTPS). The HTTPS accept loop lives
//! in [`listener`].

pub mod certs;
pub mod challenges;
pub mod listener;
pub mod redirect;
pub mod resolver;
pub mod selfsigned;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::{AcmeChallenge, Config, ConfigError, ConfigErrors, HostPattern, TlsSettings, UnknownSni};
use crate::metrics::{DomainLabels, GaugeSeries};
use certs::Loaded;
use challenges::Challenges;
use resolver::{CertMap, Resolver, ACME_TLS_ALPN};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    BadCert { path: PathBuf, message: String },
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Issuance while a handshake waits (on-demand TLS): the listener calls it
/// for a name no certificate covers, and it returns once one does or when
/// none will in time. The ACME layer implements it.
pub trait OnDemandHook: Send + Sync {
    fn ensure<'a>(&'a self, name: &'a str) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
}

/// Everything TLS that lives as long as the process.
pub struct TlsState {
    pub settings: TlsSettings,
    /// The HTTPS listener's port, for redirects (`None`: no HTTPS listener).
    pub https_port: Option<u16>,
    pub live: Arc<ArcSwap<CertMap>>,
    pub challenges: Arc<Challenges>,
    /// Names whose certificates ACME manages (redirected even before the
    /// first certificate arrives); grows when a reload adds route hosts.
    pub acme_domains: ArcSwap<Vec<String>>,
    pub server_config: Arc<rustls::ServerConfig>,
    /// Set when `[acme.on_demand]` is configured.
    pub on_demand: std::sync::OnceLock<Arc<dyn OnDemandHook>>,
    /// The self-signed fallback, listed in the status output.
    fallback: Arc<Loaded>,
    expiry: Family<DomainLabels, Gauge>,
    /// The names `expiry` has series for (an ACME install and a reload
    /// can refresh it at once).
    expiry_series: GaugeSeries<DomainLabels>,
}

/// The `[tls]` settings in force: the table, or its defaults when only
/// `listen.https` or `[acme]` asks for TLS. `None`: no TLS at all.
pub fn settings(config: &Config) -> Option<TlsSettings> {
    if let Some(t) = &config.tls {
        return Some(t.clone());
    }
    if config.listen.https.is_none() && config.acme.is_none() {
        return None;
    }
    let base = config.source.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    Some(TlsSettings { certs_dir: base.join("certs"), redirect_http: true, unknown_sni: UnknownSni::DefaultCert })
}

/// Whether a certificate for `pattern` (a name or `*.name`) covers `host`.
pub fn name_covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => pattern == host,
    }
}

/// The route host patterns (on-demand TLS orders only names they admit).
pub fn route_patterns(config: &Config) -> Vec<HostPattern> {
    let mut out: Vec<HostPattern> = Vec::new();
    for r in &config.routes {
        if !out.contains(&r.host) {
            out.push(r.host.clone());
        }
    }
    out
}

/// The certificates ACME keeps, each a list of names: every
/// `[[certificates]]` entry, then one per exact route host and (under
/// DNS-01) per wildcard route host that no entry already covers. A route
/// host that is an IP address is not ordered: ACME's DNS identifiers name
/// hosts (the CA refuses an address), and such a route is served with the
/// fallback certificate.
pub fn wanted_certificates(config: &Config) -> Vec<Vec<String>> {
    let Some(acme) = &config.acme else { return Vec::new() };
    let mut out: Vec<Vec<String>> = config.certificates.iter().map(|c| c.names.clone()).collect();
    let hosts: BTreeSet<String> = config
        .routes
        .iter()
        .filter_map(|r| match &r.host {
            HostPattern::Exact(h) if h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok() => None,
            HostPattern::Exact(h) => Some(h.clone()),
            HostPattern::Wildcard(suffix) if acme.challenge == AcmeChallenge::Dns01 => Some(format!("*{suffix}")),
            _ => None,
        })
        .collect();
    for host in hosts {
        let covered = config.certificates.iter().flat_map(|c| &c.names).any(|n| n == &host || name_covers(n, &host));
        if !covered {
            out.push(vec![host]);
        }
    }
    out
}

/// For `rampart check`: load the static certificates the way `run` would.
pub fn check(config: &Config) -> Result<(), ConfigErrors> {
    let Some(s) = settings(config) else {
        return Ok(());
    };
    let mut errors = Vec::new();
    if let Err(e) = load_static(&s.certs_dir, config) {
        errors.push(e);
    }
    if let Some(ca) = config.acme.as_ref().and_then(|a| a.ca_cert.as_ref()) {
        if let Err(e) = std::fs::read(ca) {
            errors.push(ConfigError::whole_file(
                &config.source,
                format!("[acme] cannot read ca_cert {}: {e}", ca.display()),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The static certificates in `dir`; a failure is reported against the
/// config file, naming the certificate file (by `rampart check` and a reload
/// alike).
pub fn load_static(dir: &std::path::Path, config: &Config) -> Result<Vec<Loaded>, ConfigError> {
    certs::load_dir(dir).map_err(|e| ConfigError::whole_file(&config.source, format!("[tls] {e}")))
}

impl TlsState {
    /// Load static certificates, make the fallback and build the rustls
    /// configuration. `https_port` is the bound HTTPS port, if any.
    pub fn build(
        settings: TlsSettings,
        config: &Config,
        https_port: Option<u16>,
        expiry: Family<DomainLabels, Gauge>,
    ) -> Result<Arc<TlsState>, TlsError> {
        if config.acme.is_none() && !settings.certs_dir.exists() {
            // Documented, and what a first start wants; a mistyped path
            // would otherwise show only as browsers' certificate warnings.
            tracing::warn!(
                certs_dir = %settings.certs_dir.display(),
                "[tls] certs_dir does not exist and there is no [acme]: every HTTPS name gets the self-signed certificate"
            );
        }
        let mut map = CertMap::default();
        for cert in certs::load_dir(&settings.certs_dir)? {
            tracing::info!(names = ?cert.info.names, "loaded certificate");
            map.insert(Arc::new(cert));
        }
        let mut fallback_names = vec!["localhost".to_string()];
        for r in &config.routes {
            match &r.host {
                HostPattern::Exact(h) => fallback_names.push(h.clone()),
                HostPattern::Wildcard(s) => fallback_names.push(format!("*{s}")),
                HostPattern::Any => {}
            }
        }
        fallback_names.sort();
        fallback_names.dedup();
        let fallback = Arc::new(selfsigned::self_signed(&fallback_names)?);
        let mut fallback_map = CertMap::default();
        fallback_map.insert(Arc::clone(&fallback));

        let live = Arc::new(ArcSwap::from_pointee(map));
        let challenges = Arc::new(Challenges::default());
        let resolver = Resolver {
            live: Arc::clone(&live),
            challenges: Arc::clone(&challenges),
            fallback: fallback_map,
            fallback_key: Arc::clone(&fallback.key),
            unknown_sni: settings.unknown_sni,
        };
        let server_config = server_config(Arc::new(resolver))?;
        let acme_domains: Vec<String> = wanted_certificates(config).into_iter().flatten().collect();
        let state = Arc::new(TlsState {
            settings,
            https_port,
            live,
            challenges,
            acme_domains: ArcSwap::from_pointee(acme_domains),
            server_config,
            on_demand: std::sync::OnceLock::new(),
            fallback,
            expiry,
            expiry_series: GaugeSeries::default(),
        });
        state.refresh_expiry();
        Ok(state)
    }

    /// Swap a new or renewed certificate into the live map.
    pub fn install(&self, cert: Loaded) {
        let cert = Arc::new(cert);
        self.live.rcu(|m| {
            let mut next = CertMap::clone(m);
            next.replace(Arc::clone(&cert));
            next
        });
        self.refresh_expiry();
    }

    /// Swap in the static certificates as read again on a reload: renewed
    /// files take effect, removed ones leave, ACME-managed ones stay.
    pub fn replace_static(&self, certs: Vec<Loaded>) {
        let fresh: Vec<Arc<Loaded>> = certs.into_iter().map(Arc::new).collect();
        self.live.rcu(|m| m.with_static(&fresh));
        self.refresh_expiry();
    }

    /// Set `rampart_certificate_expiry_timestamp_seconds` from the live map:
    /// one series per name, the expiry of the certificate served for it
    /// (`CertMap::served_for`: a static one before an ACME one, unless it
    /// expired), and none for names no longer covered. Each refresh reads
    /// the map inside [`GaugeSeries::refresh`], so the last one reflects the
    /// latest map.
    fn refresh_expiry(&self) {
        self.expiry_series.refresh(&[&self.expiry], || {
            let map = self.live.load();
            let mut served: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
            for c in map.all() {
                for name in &c.info.names {
                    if let Some(s) = map.served_for(name) {
                        served.insert(name.clone(), s.info.not_after);
                    }
                }
            }
            served
                .into_iter()
                .map(|(domain, not_after)| {
                    let labels = DomainLabels { domain };
                    self.expiry.get_or_create(&labels).set(not_after);
                    labels
                })
                .collect()
        });
    }

    /// Does a real (not self-signed) certificate cover `host`? Only then
    /// is plain HTTP sent to `https://`: a host ACME has not got its
    /// certificate for yet (the CA down, the order under way) stays on
    /// plain HTTP rather than be sent into the self-signed fallback's
    /// certificate error.
    pub fn has_tls(&self, host: &str) -> bool {
        self.live.load().covers(host)
    }

    /// `/api/status` "certificates".
    pub fn status_json(&self) -> serde_json::Value {
        let now = certs::unix_now();
        let mut out = Vec::new();
        let live = self.live.load().all();
        for c in live.iter().chain(std::iter::once(&self.fallback)) {
            for name in &c.info.names {
                out.push(serde_json::json!({
                    "domain": name,
                    "not_after": c.info.not_after_text,
                    "days_left": (c.info.not_after - now) / 86_400,
                    "source": c.info.source,
                    "serial": c.info.serial,
                }));
            }
        }
        serde_json::Value::Array(out)
    }
}

/// TLS 1.2 + 1.3 on aws-lc-rs, ALPN h2, http/1.1 (and acme-tls/1, which the
/// resolver and the listener keep away from HTTP), tickets + session cache.
///
/// One TLS 1.3 ticket per handshake, as Go's crypto/tls (so Caddy) sends,
/// not rustls' and OpenSSL's two: a client resumes with one ticket and gets
/// a fresh one each time, and every ticket costs both ends an encryption, a
/// session object and the bytes on the wire (figures in benches/README.md).
fn server_config(resolver: Arc<Resolver>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(certs::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(16 * 1024);
    cfg.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    cfg.send_tls13_tickets = 1;
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ip_route_host_is_served_but_never_ordered() {
        let text = "[acme]\n[upstreams.api]\nservers = [\"127.0.0.1:1\"]\n\
            [[routes]]\nhost = \"app.example.com\"\nupstream = \"api\"\n\
            [[routes]]\nhost = \"10.0.0.1\"\nupstream = \"api\"\n";
        let c = crate::config::Config::parse(std::path::Path::new("rampart.toml"), text).unwrap();
        assert_eq!(super::wanted_certificates(&c), [vec!["app.example.com".to_string()]]);
    }
}
