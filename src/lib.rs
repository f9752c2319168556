//! Rampart: an edge reverse proxy in one binary. `main.rs` parses the command
//! line; everything else lives here so tests, benches and fuzz targets can
//! drive the same code. See ARCHITECTURE.md for the map.

// One audited exception: registering the parking lot's poller with tokio
// (`server/lot.rs`).
#![deny(unsafe_code)]
#![warn(missing_debug_implementations)]
#![allow(missing_debug_implementations)]

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod app;
pub mod body;
pub mod busy_poll;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod metrics;
pub mod middleware;
pub mod providers;
pub mod proxy;
pub mod router;
pub mod server;
pub mod state;
pub mod tls;
pub mod upstream;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use app::App;
use config::{Config, ConfigErrors};
use server::{ServerError, Serving};
use state::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("[cluster]: {0}")]
    Cluster(#[from] cluster::StoreError),
}

/// A started proxy: listeners bound, accept loops running.
pub struct Running {
    pub app: Arc<App>,
    serving: Serving,
    admin_stop: CancellationToken,
    /// Stops background tasks (the config watcher) at shutdown.
    background_stop: CancellationToken,
    /// Addresses actually bound (useful when the config asked for port 0).
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
}

/// Compile the config, bind every listener and start serving.
pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Running, StartError> {
    let listen = config.listen.clone();
    let defer_accept = config.server.defer_accept;
    let tls_settings = tls::settings(&config);
    let mut metrics = metrics::Metrics::new();
    let cluster = match config.cluster.clone() {
        Some(settings) => Some(cluster::Cluster::new(settings, metrics.register_cluster())?),
        None => None,
    };
    let snapshot = Snapshot::compile_with(config, None, cluster.clone())?;
    let app = App::with_metrics(snapshot, config_path, metrics);
    app.health.sync(app.state.load().pools.values());
    let serving = Serving::new(Arc::clone(&app.shared), CancellationToken::new());
    let admin_stop = CancellationToken::new();

    let http = listen.http.map(|a| server::bind_traffic("http", a, defer_accept)).transpose()?;
    // Deferred accept for the traffic listeners only: the admin one serves
    // scrapes and probes, and monitoring that counts its connections
    // expects them at once.
    let admin = listen.admin.map(|a| server::bind("admin", a, false)).transpose()?;
    let https = listen.https.map(|a| server::bind_traffic("https", a, defer_accept)).transpose()?;
    let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());
    let https_addr = https.as_ref().and_then(|l| l.local_addr().ok());
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(settings) = tls_settings {
        let config = Arc::clone(&app.state.load().config);
        let state = tls::TlsState::build(
            settings,
            &config,
            https_addr.map(|a| a.port()),
            app.metrics.certificate_expiry.clone(),
        )?;
        let _ = app.tls.set(Arc::clone(&state));
        let _ = app.plain_http.set(Arc::clone(&state) as Arc<dyn proxy::PlainHttp>);
        if let Some(acme) = config.acme.clone() {
            // With a cluster, the stored certificates come from Redis: one
            // heartbeat first (bounded by the connect timeout; a Redis that
            // is down means the local copies).
            if let Some(c) = &cluster {
                c.probe().await;
            }
            let wanted = tls::wanted_certificates(&config);
            let patterns = tls::route_patterns(&config);
            let counter = app.metrics.acme_on_demand.clone();
            let manager = acme::start(
                acme,
                Arc::clone(&state),
                wanted,
                patterns,
                counter,
                serving.shutdown.clone(),
                cluster.clone(),
            )
            .await;
            let _ = app.acme.set(manager);
        }
        if let Some(l) = https {
            tls::listener::spawn_https(&serving, l, state);
        }
    }
    if let Some(l) = http {
        serving.spawn_http(l, "http");
    }
    if let Some(l) = admin {
        tokio::spawn(admin::run(Arc::clone(&app), l, admin_stop.clone()));
    }
    for (name, addr) in [("http", http_addr), ("https", https_addr), ("admin", admin_addr)] {
        if let Some(addr) = addr {
            tracing::info!(listener = name, %addr, "listening");
        }
    }
    tokio::spawn(maintenance(Arc::clone(&app), admin_stop.clone()));
    if let Some(cluster) = &cluster {
        if let Ok(mut a) = cluster.advertised.lock() {
            *a = serde_json::json!({ "http": http_addr, "https": https_addr, "admin": admin_addr });
        }
        cluster.spawn_heartbeat(admin_stop.clone());
    }
    let background_stop = CancellationToken::new();
    if let Some(path) = app.config_path.clone() {
        watch::spawn(Arc::clone(&app), path, background_stop.clone());
    }
    providers::spawn(&app, &background_stop);
    app.set_ready(true);
    Ok(Running { app, serving, admin_stop, background_stop, http_addr, https_addr, admin_addr })
}

/// Housekeeping that keeps memory bounded: prune rate-limit keys.
async fn maintenance(app: Arc<App>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snapshot = app.state.load();
        for c in snapshot.middleware.values() {
            c.middleware.maintain();
        }
    }
}

impl Running {
    /// Graceful shutdown: stop accepting, drain for up to the configured
    /// `shutdown_timeout`. Returns whether every connection finished in time.
    pub async fn shutdown(self) -> bool {
        // No reloads while draining.
        self.background_stop.cancel();
        let timeout = self.app.state.load().config.server.shutdown_timeout;
        let drained = self.serving.drain(timeout).await;
        self.app.health.stop_all();
        self.admin_stop.cancel();
        drained
    }

    /// Serve until SIGTERM, SIGINT or SIGQUIT (each a graceful stop: as
    /// nginx's QUIT, not its fast TERM), reloading on SIGHUP; then drain.
    /// A second stop signal while draining ends the wait: the connections
    /// still open are closed. SIGUSR1 and SIGUSR2, which nginx uses to
    /// reopen its logs and to upgrade its binary, are logged and otherwise
    /// ignored (the logs go to stdout and stderr; there is no upgrade in
    /// place) rather than ending the process, their default: a logrotate
    /// `postrotate` written for nginx must not stop the proxy.
    #[cfg(unix)]
    pub async fn run_until_signal(self) -> std::io::Result<bool> {
        use tokio::signal::unix::{signal, SignalKind};
        // SIGUSR1 and SIGUSR2: said in the log, otherwise ignored.
        fn ignored(name: &str) {
            if name == "SIGUSR1" {
                tracing::info!("SIGUSR1: nothing to reopen, the logs go to stdout and stderr");
            } else {
                tracing::warn!(
                    "{name}: ignored; no binary upgrade in place: restart (SIGTERM drains) or replace the container"
                );
            }
        }
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut quit = signal(SignalKind::quit())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let mut usr2 = signal(SignalKind::user_defined2())?;
        let stopped_by = loop {
            tokio::select! {
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
                _ = quit.recv() => break "SIGQUIT",
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading config");
                    let _ = self.app.reload().await;
                }
                _ = usr1.recv() => ignored("SIGUSR1"),
                _ = usr2.recv() => ignored("SIGUSR2"),
            }
        };
        tracing::info!("{stopped_by}: shutting down, draining in-flight requests");
        let app = Arc::clone(&self.app);
        let shutdown = self.shutdown();
        tokio::pin!(shutdown);
        let again = |name: &str| {
            tracing::warn!("{name} while draining: stopping now, closing the connections still open");
        };
        let drained = loop {
            tokio::select! {
                drained = &mut shutdown => break drained,
                _ = term.recv() => { again("SIGTERM"); break false }
                _ = int.recv() => { again("SIGINT"); break false }
                _ = quit.recv() => { again("SIGQUIT"); break false }
                _ = hup.recv() => tracing::info!("SIGHUP while draining: not reloading"),
                _ = usr1.recv() => ignored("SIGUSR1"),
                _ = usr2.recv() => ignored("SIGUSR2"),
            }
        };
        if drained {
            tracing::info!("drained: every connection finished");
        } else {
            tracing::warn!("stopped with requests still in flight (shutdown_timeout reached, or a second signal)");
        }
        app.access_log.flush();
        Ok(drained)
    }
}
