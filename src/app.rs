//! The process: what the listeners share (`proxy::Shared`: the snapshot,
//! metrics, access log, readiness), the TLS and ACME handles, health probes
//! and reload with the last reload's result.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::{Config, ConfigErrors, Discovered, Skipped};
use crate::metrics::{Metrics, ProviderLabels, ResultLabels};
use crate::proxy::Shared;
use crate::state::Snapshot;
use crate::upstream::HealthChecker;

/// Outcome of the most recent reload, for `/api/status` and the status page.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    pub time: Option<String>,
    pub ok: bool,
    pub errors: Vec<String>,
    /// What asked for it: `"file"` (start, watcher, SIGHUP, `POST /api/reload`)
    /// or `"discovery"` (a provider's change).
    pub trigger: &'static str,
}

/// A discovery provider's state, for `/api/status` and the status page.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProviderStatus {
    /// Its source answers.
    pub up: bool,
    /// Where it asks (the Docker endpoint, the DNS resolvers).
    pub source: String,
    /// The last successful listing or lookup round.
    pub last_sync: Option<String>,
    pub last_error: Option<String>,
    pub last_error_time: Option<String>,
    /// Provider-specific facts (API version, containers, names and addresses).
    pub detail: serde_json::Value,
}

/// What a reload reads: the file again, or the file's last good config
/// with new discoveries.
enum Trigger {
    File(std::path::PathBuf),
    Discovery,
}

/// The process: what the listeners share ([`Shared`], which an `App`
/// derefs to: `app.state`, `app.metrics`), plus what only reloads, ACME and
/// the status page use.
pub struct App {
    /// Handed to the listeners and the proxy, which never see the `App`.
    pub shared: Arc<Shared>,
    pub health: HealthChecker,
    /// Where the config came from (`None` for the built-in demo config).
    pub config_path: Option<PathBuf>,
    /// TLS state (certificates, ACME challenges, redirects), set once at
    /// start when TLS is configured.
    pub tls: std::sync::OnceLock<Arc<crate::tls::TlsState>>,
    /// The ACME manager, when `[acme]` is configured (reloads hand it new hosts).
    pub acme: std::sync::OnceLock<Arc<crate::acme::AcmeManager>>,
    last_reload: Mutex<ReloadStatus>,
    reload_lock: tokio::sync::Mutex<()>,
    /// The config file's last good config, before discovery is merged in.
    file_config: Mutex<Arc<Config>>,
    /// What the providers found; merged into the file's config on reload.
    discovered: Mutex<Discovered>,
    /// Containers the labels left out at the last merge (logged once each).
    skipped: Mutex<Vec<Skipped>>,
    providers: Mutex<std::collections::BTreeMap<&'static str, ProviderStatus>>,
}

impl App {
    pub fn new(snapshot: Snapshot, config_path: Option<PathBuf>) -> Arc<App> {
        Self::with_metrics(snapshot, config_path, Metrics::new())
    }

    /// The same with a registry already holding optional families (`[cluster]`'s).
    pub fn with_metrics(snapshot: Snapshot, config_path: Option<PathBuf>, metrics: Metrics) -> Arc<App> {
        let file_config = Mutex::new(Arc::clone(&snapshot.config));
        Arc::new(App {
            shared: Arc::new(Shared::new(snapshot, metrics)),
            health: HealthChecker::default(),
            config_path,
            tls: std::sync::OnceLock::new(),
            acme: std::sync::OnceLock::new(),
            last_reload: Mutex::new(ReloadStatus {
                time: Some(crate::access_log::rfc3339_now()),
                ok: true,
                errors: vec![],
                trigger: "file",
            }),
            reload_lock: tokio::sync::Mutex::new(()),
            file_config,
            discovered: Mutex::new(Discovered::default()),
            skipped: Mutex::new(Vec::new()),
            providers: Mutex::new(Default::default()),
        })
    }

    /// The config file's last good config (without discoveries).
    pub fn file_config(&self) -> Arc<Config> {
        self.file_config.lock().map(|g| Arc::clone(&g)).unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// Change what the providers found; when it changed, reload (through
    /// the one reload path: validated, counted, logged, on the status page).
    pub async fn update_discovered(&self, change: impl FnOnce(&mut Discovered)) -> Result<(), ConfigErrors> {
        let changed = {
            let mut d = self.discovered.lock().unwrap_or_else(|p| p.into_inner());
            let before = d.clone();
            change(&mut d);
            *d != before
        };
        if !changed {
            return Ok(());
        }
        let _one_at_a_time = self.reload_lock.lock().await;
        self.apply(Trigger::Discovery).await
    }

    /// What the providers found so far.
    pub fn discovered(&self) -> Discovered {
        self.discovered.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// Record a provider's state and set `rampart_provider_up`.
    pub fn set_provider(&self, name: &'static str, change: impl FnOnce(&mut ProviderStatus)) {
        let mut all = self.providers.lock().unwrap_or_else(|p| p.into_inner());
        let status = all.entry(name).or_default();
        change(status);
        self.metrics.provider_up.get_or_create(&ProviderLabels { provider: name }).set(i64::from(status.up));
    }

    /// Every provider's state, by name.
    pub fn providers(&self) -> std::collections::BTreeMap<&'static str, ProviderStatus> {
        let mut all = self.providers.lock().map(|g| g.clone()).unwrap_or_default();
        // Which containers are left out changes with every merge, a file
        // reload's too: read now, not as of the provider's last sync.
        if let Some(detail) = all.get_mut("docker").and_then(|d| d.detail.as_object_mut()) {
            let skipped: Vec<String> = self.skipped_containers().iter().map(|s| s.to_string()).collect();
            detail.insert("skipped".to_string(), serde_json::json!(skipped));
        }
        all
    }

    /// Containers the labels left out at the last merge, and why.
    pub fn skipped_containers(&self) -> Vec<Skipped> {
        self.skipped.lock().map(|g| g.clone()).unwrap_or_default()
    }

    pub fn last_reload(&self) -> ReloadStatus {
        self.last_reload.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Re-read the config file and swap in the new snapshot; on any error
    /// keep the running one. Listener addresses are not re-bound: a change
    /// to `[listen]` is refused with a clear message (restart to apply).
    pub async fn reload(&self) -> Result<(), ConfigErrors> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let Some(path) = self.config_path.clone() else {
            return Ok(());
        };
        self.apply(Trigger::File(path)).await
    }

    /// Build the next snapshot from `trigger`'s config merged with the
    /// discoveries, and swap it in; the caller holds `reload_lock`.
    async fn apply(&self, trigger: Trigger) -> Result<(), ConfigErrors> {
        let by_discovery = matches!(trigger, Trigger::Discovery);
        let result = match trigger {
            Trigger::File(path) => self.read_file(path).await,
            Trigger::Discovery => Ok((self.file_config(), None)),
        };
        let current = self.state.load();
        let outcome = result.and_then(|(config, certs)| {
            if config.listen != current.config.listen {
                return Err(ConfigErrors(vec![crate::config::ConfigError::whole_file(
                    &config.source,
                    "[listen] addresses changed; listeners are not re-bound on reload, restart to apply",
                )]));
            }
            let restart_only = restart_only_changes(&current.config, &config);
            if !restart_only.is_empty() {
                tracing::warn!(
                    sections = %restart_only.join(", "),
                    "these settings are read at start only; the running values stay until a restart"
                );
            }
            // As the warning says: the providers run with the settings they
            // started with, and the labels are read with those too (a new
            // `network` or a removed table would otherwise half apply).
            let config = if config.providers == current.config.providers {
                config
            } else {
                let mut kept = (*config).clone();
                kept.providers = current.config.providers.clone();
                Arc::new(kept)
            };
            let found = self.discovered.lock().map(|d| d.clone()).unwrap_or_default();
            let (merged, docker) = config.merged(&found);
            Snapshot::compile(merged, Some(&current)).map(|next| (next, certs, config, docker))
        });
        let mut status = ReloadStatus {
            time: Some(crate::access_log::rfc3339_now()),
            ok: true,
            errors: vec![],
            trigger: if by_discovery { "discovery" } else { "file" },
        };
        let ret = match outcome {
            Ok((next, certs, file, docker)) => {
                let routes = next.routes.len();
                let servers: usize = next.pools.values().map(|p| p.servers.len()).sum();
                self.state.swap(next);
                retire_departed(&current, &self.state.load());
                if let Ok(mut g) = self.file_config.lock() {
                    *g = file;
                }
                self.note_skipped(docker.skipped);
                if let (Some(tls), Some(certs)) = (self.tls.get(), certs) {
                    tracing::info!(static_certificates = certs.len(), "certificates read again");
                    tls.replace_static(certs);
                }
                let snapshot = self.state.load();
                self.health.sync(snapshot.pools.values());
                if let Some(acme) = self.acme.get() {
                    if let Some(od) = &acme.on_demand {
                        od.set_patterns(crate::tls::route_patterns(&snapshot.config));
                    }
                    // Certificates new to this config are ordered now.
                    for names in crate::tls::wanted_certificates(&snapshot.config) {
                        let acme = Arc::clone(acme);
                        tokio::spawn(async move { acme.manage(names).await });
                    }
                }
                self.metrics.config_reloads.get_or_create(&ResultLabels { result: "success" }).inc();
                tracing::info!(routes, servers, containers = docker.taking_part, "config reloaded");
                Ok(())
            }
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!("{e}");
                }
                self.metrics.config_reloads.get_or_create(&ResultLabels { result: "failure" }).inc();
                status.ok = false;
                status.errors = errors.0.iter().map(|e| e.to_string()).collect();
                Err(errors)
            }
        };
        if let Ok(mut g) = self.last_reload.lock() {
            // A discovery change applied on the file's last good config does
            // not hide that the file's last edit was refused.
            if !(by_discovery && status.ok && !g.ok && g.trigger == "file") {
                *g = status;
            }
        }
        ret
    }

    /// Read the config file and, with TLS, the static certificates again
    /// (so a reload picks up renewed files, as `nginx -s reload` does; one
    /// that does not load fails the reload like a config error).
    async fn read_file(&self, path: std::path::PathBuf) -> Result<(Arc<Config>, Option<Certs>), ConfigErrors> {
        let certs_dir = self.tls.get().map(|tls| tls.settings.certs_dir.clone());
        let shown = path.clone();
        let result = tokio::task::spawn_blocking(move || {
            let config = crate::state::load_config(&path)?;
            let certs = match &certs_dir {
                Some(dir) => Some(crate::tls::load_static(dir, &config).map_err(|e| ConfigErrors(vec![e]))?),
                None => None,
            };
            Ok((Arc::new(config), certs))
        })
        .await;
        result.unwrap_or_else(|e| {
            Err(ConfigErrors(vec![crate::config::ConfigError::whole_file(&shown, format!("reload task failed: {e}"))]))
        })
    }

    /// Log each container the labels leave out once, not at every resync.
    fn note_skipped(&self, now: Vec<Skipped>) {
        let mut known = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
        for s in now.iter().filter(|s| !known.contains(s)) {
            tracing::warn!(
                container = %s.container,
                label = s.label.as_deref().unwrap_or(""),
                reason = %s.reason,
                "docker: container skipped: {s}"
            );
        }
        *known = now;
    }
}

impl Deref for App {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

type Certs = Vec<crate::tls::certs::Loaded>;

/// Sections a reload accepts but that only take effect on restart: the
/// runtime, listeners' connection settings, certificates and ACME.
/// Servers whose address left their pool (a container stopped, a DNS
/// name moved, an edit): connects to them still under way give up, so
/// their requests are retried on a server that is there.
fn retire_departed(old: &Snapshot, new: &Snapshot) {
    for (name, pool) in &old.pools {
        let kept = new.pools.get(name);
        for s in &pool.servers {
            if !kept.is_some_and(|p| p.servers.iter().any(|n| n.addr == s.addr)) {
                s.retire();
            }
        }
    }
}

fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let (a, b) = (&old.server, &new.server);
    if a.workers != b.workers
        || a.shutdown_timeout != b.shutdown_timeout
        || a.client_header_timeout != b.client_header_timeout
        || a.idle_timeout != b.idle_timeout
        || a.max_connections != b.max_connections
        || a.max_header_bytes != b.max_header_bytes
        || a.h2_max_concurrent_streams != b.h2_max_concurrent_streams
        || a.access_log != b.access_log
        || a.defer_accept != b.defer_accept
        || a.busy_poll != b.busy_poll
    {
        changed.push("[server]");
    }
    if old.tls != new.tls {
        changed.push("[tls]");
    }
    if old.acme != new.acme {
        changed.push("[acme]");
    }
    if old.cluster != new.cluster {
        changed.push("[cluster]");
    }
    if old.providers != new.providers {
        changed.push("[providers]");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(server: &str) -> Config {
        let text = format!("[server]\n{server}\n[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n");
        Config::parse(std::path::Path::new("rampart.toml"), &text).unwrap()
    }

    #[test]
    fn a_reload_tells_which_server_settings_wait_for_a_restart() {
        let base = config("");
        assert!(restart_only_changes(&base, &config("request_id = false")).is_empty());
        assert_eq!(restart_only_changes(&base, &config("defer_accept = false")), ["[server]"]);
        assert_eq!(restart_only_changes(&base, &config("workers = 1\nbusy_poll = \"50us\"")), ["[server]"]);
        assert_eq!(restart_only_changes(&base, &config("idle_timeout = \"5s\"")), ["[server]"]);
    }
}
