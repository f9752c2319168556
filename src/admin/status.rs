//! The live state as JSON (`/api/status`) and the self-contained HTML page
//! that renders it. Request totals come from [`super::traffic`]; the page
//! turns successive totals into rates.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::app::App;
use crate::metrics::{Name, ServerLabels};

/// Set the per-server gauges from live state, just before a scrape; this
/// keeps the request path free of gauge updates and drops removed servers.
pub fn refresh_gauges(app: &App) {
    let m = &app.metrics;
    let families = [&m.upstream_server_up, &m.upstream_in_flight, &m.upstream_idle_connections];
    refresh_cache_gauges(app);
    m.upstream_server_series.refresh(&families, || {
        let snapshot = app.state.load();
        let mut current = std::collections::HashSet::new();
        for pool in snapshot.pools.values() {
            for s in &pool.servers {
                let labels =
                    ServerLabels { upstream: Name(Arc::clone(&pool.name)), server: Name(Arc::clone(&s.label)) };
                m.upstream_server_up.get_or_create(&labels).set(i64::from(s.is_up()));
                m.upstream_in_flight.get_or_create(&labels).set(s.in_flight() as i64);
                m.upstream_idle_connections.get_or_create(&labels).set(s.idle.len() as i64);
                current.insert(labels);
            }
        }
        current
    });
}

/// The cache middleware in the running config, by name.
pub fn caches(app: &App) -> Vec<(String, Arc<crate::cache::Cache>, crate::cache::Settings)> {
    let snapshot = app.state.load();
    let mut out: Vec<_> = snapshot
        .middleware
        .iter()
        .filter_map(|(name, c)| {
            let m = c.middleware.downcast_ref::<crate::middleware::cache::CacheMiddleware>()?;
            Some((name.clone(), Arc::clone(&m.cache), m.settings.clone()))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `rampart_cache_bytes{tier}` from the caches' own counts, before a scrape.
fn refresh_cache_gauges(app: &App) {
    let caches = caches(app);
    if caches.is_empty() {
        return;
    }
    let memory: u64 = caches.iter().map(|(_, c, _)| c.store.memory_bytes()).sum();
    let disk: u64 = caches.iter().filter_map(|(_, c, _)| c.store.disk.as_ref().map(|d| d.bytes())).sum();
    let m = &app.metrics;
    m.cache_bytes.get_or_create(&crate::metrics::TierLabels { tier: "memory" }).set(memory as i64);
    m.cache_bytes.get_or_create(&crate::metrics::TierLabels { tier: "disk" }).set(disk as i64);
}

fn cache_json(app: &App) -> Option<Value> {
    let caches = caches(app);
    if caches.is_empty() {
        return None;
    }
    let mut obj = serde_json::Map::new();
    for (name, c, s) in caches {
        obj.insert(
            name,
            json!({
                "entries": c.store.entries(),
                "memory_bytes": c.store.memory_bytes(),
                "max_size": s.max_size,
                "max_object_size": s.max_object_size,
                "dir": s.dir.as_ref().map(|d| d.display().to_string()),
                "disk_bytes": c.store.disk.as_ref().map(|d| d.bytes()),
                "disk_entries": c.store.disk.as_ref().map(|d| d.entries()),
                "fetches_in_flight": c.flights.in_flight(),
            }),
        );
    }
    Some(Value::Object(obj))
}

pub fn status_json(app: &App) -> Value {
    let snapshot = app.state.load();
    let traffic = super::traffic::from_exposition(&app.metrics.encode());
    let zero = super::traffic::Totals::default();
    let routes: Vec<Value> = snapshot
        .config
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "host": r.host.to_string(),
                "path": if r.prefix.is_empty() { "/".to_string() } else { format!("{}/", r.prefix) },
                "strip_prefix": r.strip_prefix,
                "upstream": r.upstream,
                "middleware": r.middleware,
                "traffic": traffic.routes.get(r.name.as_str()).unwrap_or(&zero),
            })
        })
        .collect();
    let mut pools: Vec<&Arc<crate::upstream::Pool>> = snapshot.pools.values().collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    let upstreams: Vec<Value> = pools
        .iter()
        .map(|p| {
            json!({
                "name": &*p.name,
                // A static upstream's directory; it has no servers.
                "static": p.files.as_ref().map(|f| f.spec().root.display().to_string()),
                "balance": match p.spec.balance { crate::config::Balance::RoundRobin => "round_robin", crate::config::Balance::LeastConn => "least_conn" },
                "servers": p.servers.iter().map(|s| json!({
                    "addr": s.addr.0,
                    "origin": p.spec.servers.iter().find(|o| o.addr == s.addr).map(|o| o.origin.to_string()),
                    "weight": s.weight,
                    "up": s.is_up(),
                    "in_flight": s.in_flight(),
                    // Kept-alive connections waiting for a request.
                    "idle": s.idle.len(),
                    "traffic": traffic.servers.get(&(p.name.to_string(), s.label.to_string())).unwrap_or(&zero),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let mut status = json!({
        "ready": app.is_ready(),
        "time_ms": now_ms,
        // Requests that matched no route (counted under route="none").
        "unmatched": traffic.routes.get(crate::config::NO_ROUTE).unwrap_or(&zero),
        "config": app.config_path.as_ref().map(|p| p.display().to_string()),
        "routes": routes,
        "upstreams": upstreams,
        "certificates": app.tls.get().map(|t| t.status_json()).unwrap_or_else(|| json!([])),
        "on_demand": app.acme.get().and_then(|a| a.on_demand.as_ref()).map(|o| o.status_json()),
        "last_reload": app.last_reload(),
        "providers": app.providers(),
    });
    if let (Some(cache), Some(obj)) = (cache_json(app), status.as_object_mut()) {
        obj.insert("cache".into(), cache);
    }
    // Only with [cluster], as the contract has it.
    if let (Some(c), Some(obj)) = (snapshot.cluster.as_ref(), status.as_object_mut()) {
        obj.insert("cluster".to_string(), c.status_json());
    }
    status
}

pub const PAGE: &str = include_str!("status.html");
