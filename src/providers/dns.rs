//! DNS discovery: every `{ dns = "NAME:PORT" }` server of the current
//! config is looked up (A and AAAA, hickory-resolver with /etc/resolv.conf
//! or `[providers.dns] resolvers`) every `dns_refresh`, or sooner when the
//! answer's TTL runs out first; each address becomes a server with its own
//! health state. A failed lookup keeps the last good set and is logged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{pause, Backoff};
use crate::app::App;
use crate::config::UpstreamAddr;

const NAME: &str = "dns";
/// However short a TTL, a name is asked at most this often.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How often the task looks at the config for names added by a reload.
const CONFIG_CHECK: Duration = Duration::from_secs(1);

type Key = (String, UpstreamAddr);

/// A name's last lookup.
#[derive(Debug, Default)]
struct Entry {
    due: Option<Instant>,
    error: Option<String>,
}

pub(super) async fn run(app: Arc<App>, resolvers: Vec<SocketAddr>, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_secs(30));
    let resolver = loop {
        match build(&resolvers) {
            Ok(r) => break r,
            Err(e) => {
                tracing::warn!(error = %e, "dns: cannot set up the resolver; retrying");
                app.set_provider(NAME, |s| {
                    s.up = false;
                    s.last_error = Some(format!("resolver setup: {e}"));
                    s.last_error_time = Some(crate::access_log::rfc3339_now());
                });
                if !pause(&stop, backoff.next_wait()).await {
                    return;
                }
            }
        }
    };
    let source = if resolvers.is_empty() {
        "/etc/resolv.conf".to_string()
    } else {
        resolvers.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
    };
    let mut entries: HashMap<Key, Entry> = HashMap::new();
    loop {
        let config = app.file_config();
        let wanted: Vec<(Key, Duration)> = config
            .upstreams
            .iter()
            .flat_map(|u| u.dns.iter().map(move |d| ((u.name.clone(), d.name.clone()), u.dns_refresh)))
            .collect();
        entries.retain(|k, _| wanted.iter().any(|(w, _)| w == k));
        let now = Instant::now();
        let due: Vec<&(Key, Duration)> =
            wanted.iter().filter(|(k, _)| entries.get(k).and_then(|e| e.due).is_none_or(|d| d <= now)).collect();
        let lookups = due.iter().map(|(key, refresh)| {
            let resolver = &resolver;
            async move {
                let host = key.1 .0.rsplit_once(':').map_or(key.1 .0.as_str(), |(h, _)| h);
                let port: u16 = key.1 .0.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(0);
                let result = resolver.lookup_ip(host).await.map(|found| {
                    let mut addrs: Vec<SocketAddr> = found.iter().map(|ip| SocketAddr::new(ip, port)).collect();
                    addrs.sort();
                    addrs.dedup();
                    let ttl = found.valid_until().saturating_duration_since(Instant::now());
                    (addrs, ttl)
                });
                (key.clone(), *refresh, result)
            }
        });
        let results = futures_util::future::join_all(lookups).await;
        let mut good: Vec<(Key, Vec<SocketAddr>)> = Vec::new();
        for (key, refresh, result) in results {
            let entry = entries.entry(key.clone()).or_default();
            match result {
                Ok((addrs, ttl)) if !addrs.is_empty() => {
                    entry.due = Some(Instant::now() + refresh.min(ttl).max(MIN_INTERVAL));
                    entry.error = None;
                    good.push((key, addrs));
                }
                Ok(_) => note_failure(entry, &key, "no addresses".to_string(), refresh),
                Err(e) => note_failure(entry, &key, e.to_string(), refresh),
            }
        }
        if !due.is_empty() {
            let wanted_keys: Vec<Key> = wanted.iter().map(|(k, _)| k.clone()).collect();
            let _ = app
                .update_discovered(|d| {
                    d.dns.retain(|k, _| wanted_keys.contains(k));
                    for (key, addrs) in good {
                        d.dns.insert(key, addrs);
                    }
                })
                .await;
            report(&app, &source, &entries);
        }
        let next = entries.values().filter_map(|e| e.due).min();
        // With no names to look up, the config is only looked at now and then.
        let idle = if wanted.is_empty() { CONFIG_CHECK * 5 } else { CONFIG_CHECK };
        let wait = next.map_or(idle, |n| n.saturating_duration_since(Instant::now()).min(CONFIG_CHECK));
        if !pause(&stop, wait.max(Duration::from_millis(50))).await {
            return;
        }
    }
}

fn note_failure(entry: &mut Entry, key: &Key, error: String, refresh: Duration) {
    if entry.error.as_deref() != Some(error.as_str()) {
        tracing::warn!(upstream = %key.0, name = %key.1 .0, %error, "dns: lookup failed; keeping the last good addresses");
    }
    entry.error = Some(error);
    entry.due = Some(Instant::now() + refresh.min(Duration::from_secs(5)).max(MIN_INTERVAL));
}

/// The provider's state: up while every name's last lookup succeeded.
fn report(app: &App, source: &str, entries: &HashMap<Key, Entry>) {
    let found = app.discovered().dns;
    let mut keys: Vec<&Key> = entries.keys().collect();
    keys.sort();
    let names: Vec<serde_json::Value> = keys
        .iter()
        .map(|key| {
            json!({
                "upstream": key.0,
                "name": key.1 .0,
                "addresses": found.get(*key).map(|a| a.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
                "error": entries.get(*key).and_then(|e| e.error.as_deref()),
            })
        })
        .collect();
    let errors: Vec<String> = keys
        .iter()
        .filter_map(|k| Some(format!("{} {}: {}", k.0, k.1 .0, entries.get(*k)?.error.as_deref()?)))
        .collect();
    let now = crate::access_log::rfc3339_now();
    app.set_provider(NAME, |s| {
        s.up = errors.is_empty();
        s.source = source.to_string();
        if errors.is_empty() {
            s.last_sync = Some(now);
        } else {
            s.last_error = errors.first().cloned();
            s.last_error_time = Some(now);
        }
        s.detail = json!({ "names": names });
    });
}

fn build(resolvers: &[SocketAddr]) -> Result<TokioResolver, hickory_resolver::ResolveError> {
    let mut builder = if resolvers.is_empty() {
        TokioResolver::builder_tokio()?
    } else {
        let servers: Vec<NameServerConfig> = resolvers
            .iter()
            .flat_map(|a| [NameServerConfig::new(*a, Protocol::Udp), NameServerConfig::new(*a, Protocol::Tcp)])
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], servers),
            TokioConnectionProvider::default(),
        )
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    // Every A and AAAA record is a server, not only one family's.
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    Ok(builder.build())
}
