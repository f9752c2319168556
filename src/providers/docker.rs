//! The Docker provider: lists the engine's running containers over its API
//! (bollard; unix socket, `endpoint`, or `DOCKER_HOST`, `tcp://` for a
//! socket proxy; API version negotiated with the engine), then follows its
//! events stream and lists again, debounced, after a container starts,
//! stops, dies, changes health or joins or leaves a network; and every
//! `refresh`. While the engine is down or refuses us it retries with
//! capped backoff and the last listing stays in use: the file's config and
//! the containers last seen keep serving.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::Docker;
use futures_util::StreamExt;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{pause, Backoff};
use crate::app::App;
use crate::config::{Container, DockerSettings};

const NAME: &str = "docker";
const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";
/// Seconds an API call may take to answer (the events stream excepted).
const CALL_TIMEOUT: u64 = 10;
/// Events are gathered until none came for this long...
const QUIET: Duration = Duration::from_millis(150);
/// ...or this long after the first of them, so a change is applied within
/// a second even while events keep coming.
const MAX_DELAY: Duration = Duration::from_millis(600);
/// The longest wait between attempts at an engine that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
enum DockerError {
    #[error(transparent)]
    Api(#[from] bollard::errors::Error),
    #[error("the events stream ended")]
    StreamEnded,
}

pub(super) async fn run(app: Arc<App>, settings: DockerSettings, stop: CancellationToken) {
    let endpoint = settings
        .endpoint
        .clone()
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    app.set_provider(NAME, |s| s.source = endpoint.clone());
    let mut backoff = Backoff::new(MAX_BACKOFF);
    loop {
        match session(&app, &settings, &endpoint, &stop, &mut backoff).await {
            Ok(()) => return,
            Err(e) => {
                let wait = backoff.next_wait();
                let error = error_chain(&e);
                tracing::warn!(%endpoint, %error, retry_in = ?wait, "docker: engine unreachable; keeping the last containers seen");
                app.set_provider(NAME, |s| {
                    s.up = false;
                    s.last_error = Some(error);
                    s.last_error_time = Some(crate::access_log::rfc3339_now());
                });
                if !pause(&stop, wait).await {
                    return;
                }
            }
        }
    }
}

/// One connection to the engine: list, then follow events until the
/// stream breaks (`Err`) or the provider is stopped (`Ok`).
async fn session(
    app: &App,
    settings: &DockerSettings,
    endpoint: &str,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), DockerError> {
    let docker = connect(endpoint)?.negotiate_version().await?;
    let version = docker.client_version().to_string();
    // Events from a second before the first listing on: nothing that
    // happens between the listing and the stream's start is missed.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().saturating_sub(1))
        .unwrap_or(0);
    resync(app, &docker, &version).await?;
    backoff.reset();
    let filters = HashMap::from([("type".to_string(), vec!["container".to_string(), "network".to_string()])]);
    let mut events = docker.events(Some(EventsOptions {
        since: Some(since.to_string()),
        filters: Some(filters),
        ..Default::default()
    }));
    let mut refresh = tokio::time::interval_at(Instant::now() + settings.refresh, settings.refresh);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (first event, latest event) of a batch waiting to be applied.
    let mut pending: Option<(Instant, Instant)> = None;
    loop {
        let deadline = pending.map(|(first, last)| (last + QUIET).min(first + MAX_DELAY));
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            event = events.next() => match event {
                Some(Ok(e)) => {
                    if relevant(&e) {
                        let now = Instant::now();
                        pending = Some((pending.map_or(now, |(first, _)| first), now));
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(DockerError::StreamEnded),
            },
            _ = sleep_until(deadline), if deadline.is_some() => {
                pending = None;
                resync(app, &docker, &version).await?;
            }
            _ = refresh.tick() => resync(app, &docker, &version).await?,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d).await;
    }
}

fn connect(endpoint: &str) -> Result<Docker, bollard::errors::Error> {
    let version = bollard::API_DEFAULT_VERSION;
    if let Some(path) = endpoint.strip_prefix("unix://") {
        Docker::connect_with_unix(path, CALL_TIMEOUT, version)
    } else {
        Docker::connect_with_http(endpoint, CALL_TIMEOUT, version)
    }
}

/// Events that can change what we route to.
fn relevant(e: &bollard::models::EventMessage) -> bool {
    use bollard::models::EventMessageTypeEnum as T;
    let action = e.action.as_deref().unwrap_or("");
    match e.typ {
        Some(T::CONTAINER) => {
            matches!(
                action,
                "start" | "restart" | "die" | "stop" | "kill" | "destroy" | "pause" | "unpause" | "rename" | "update"
            ) || action.starts_with("health_status")
        }
        Some(T::NETWORK) => matches!(action, "connect" | "disconnect"),
        _ => false,
    }
}

/// List the running containers and hand them to the app (a reload when
/// they changed).
async fn resync(app: &App, docker: &Docker, version: &str) -> Result<(), DockerError> {
    let running = HashMap::from([("status".to_string(), vec!["running".to_string()])]);
    let listed = docker
        .list_containers(Some(ListContainersOptions { filters: Some(running.clone()), ..Default::default() }))
        .await?;
    // Health is asked by filter: older engines list no health field.
    let mut unready_filter = running;
    unready_filter.insert("health".to_string(), vec!["starting".to_string(), "unhealthy".to_string()]);
    let unready: HashSet<String> = docker
        .list_containers(Some(ListContainersOptions { filters: Some(unready_filter), ..Default::default() }))
        .await?
        .into_iter()
        .filter_map(|c| c.id)
        .collect();
    let mut containers: Vec<Container> = listed.into_iter().filter_map(|c| container(c, &unready)).collect();
    containers.sort_by(|a, b| a.id.cmp(&b.id));
    let count = containers.len();
    let _ = app.update_discovered(|d| d.containers = Some(containers)).await;
    let skipped: Vec<String> = app.skipped_containers().iter().map(|s| s.to_string()).collect();
    app.set_provider(NAME, |s| {
        s.up = true;
        s.last_sync = Some(crate::access_log::rfc3339_now());
        s.detail = json!({ "api_version": version, "running_containers": count, "skipped": skipped });
    });
    Ok(())
}

fn container(c: bollard::models::ContainerSummary, unready: &HashSet<String>) -> Option<Container> {
    let id = c.id?;
    let name = c
        .names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_else(|| id.chars().take(12).collect());
    let networks: BTreeMap<String, Option<std::net::IpAddr>> = c
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(net, ep)| (net, ep.ip_address.and_then(|ip| ip.parse().ok())))
        .collect();
    let mut exposed_ports: Vec<u16> = c
        .ports
        .unwrap_or_default()
        .iter()
        .filter(|p| p.typ.is_none_or(|t| t == bollard::models::PortSummaryTypeEnum::TCP))
        .map(|p| p.private_port)
        .collect();
    exposed_ports.sort_unstable();
    exposed_ports.dedup();
    Some(Container {
        created: c.created.unwrap_or(0),
        ready: !unready.contains(&id),
        id,
        name,
        labels: c.labels.unwrap_or_default().into_iter().collect(),
        networks,
        exposed_ports,
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
