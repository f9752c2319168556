//! The running configuration as one immutable [`Snapshot`], swapped
//! atomically on reload. A request loads the snapshot once to be routed and
//! keeps the matched [`Route`] (its pool and middleware) to the end, so a
//! reload never changes a request halfway through.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::cluster::Cluster;
use crate::config::{Config, ConfigError, ConfigErrors, MiddlewareSpec};
use crate::metrics::RouteMetrics;
use crate::middleware::{self, Chain, Compiled};
use crate::router::Router;
use crate::upstream::Pool;

/// Read and validate a config file, as [`Config::load`], and when it has
/// problems add those of its middleware definitions' values, which show
/// only where a definition is compiled: `rampart check` and a failed
/// reload then report every problem at once.
pub fn load_config(path: &Path) -> Result<Config, ConfigErrors> {
    Config::load_checked(path).map_err(|rejected| {
        let mut errors = rejected.errors.0;
        for spec in &rejected.middleware {
            if let Err(e) = middleware::check(spec) {
                errors.push(definition_error(path, spec, &e));
            }
        }
        errors.sort_by_key(|e| (e.line, e.col));
        ConfigErrors(errors)
    })
}

/// A definition that does not build, at the key its problem is about.
fn definition_error(path: &Path, spec: &MiddlewareSpec, e: &middleware::DefinitionError) -> ConfigError {
    let (line, col) = spec.position(e.key);
    ConfigError { path: path.to_path_buf(), line, col, message: format!("middleware {:?}: {e}", spec.name) }
}

/// A route as the request path needs it: everything resolved.
#[derive(Debug)]
pub struct Route {
    /// Stable label for metrics and logs.
    pub name: Arc<str>,
    pub metrics: RouteMetrics,
    pub prefix: String,
    pub strip_prefix: bool,
    pub preserve_host: bool,
    pub pool: Arc<Pool>,
    pub middleware: Chain,
}

#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub router: Router<Arc<Route>>,
    pub pools: HashMap<String, Arc<Pool>>,
    pub middleware: HashMap<String, Compiled>,
    /// Routes in file order, for status output.
    pub routes: Vec<Arc<Route>>,
    /// The shared store (`[cluster]`), made once at start and handed from
    /// snapshot to snapshot.
    pub cluster: Option<Arc<Cluster>>,
}

impl Snapshot {
    /// Build a snapshot, carrying over long-lived state (and the cluster
    /// store) from `previous`.
    pub fn compile(config: Config, previous: Option<&Snapshot>) -> Result<Snapshot, ConfigErrors> {
        let cluster = previous.and_then(|p| p.cluster.clone());
        Self::compile_with(config, previous, cluster)
    }

    /// What [`Snapshot::compile`] would refuse, for `rampart check`: its
    /// middleware are only checked (`middleware::check`), so a check opens
    /// no cache directory a running instance uses.
    pub fn check(config: Config) -> Result<(), ConfigErrors> {
        Self::build(config, None, None, true).map(|_| ())
    }

    /// The same, with the process's cluster store (the first snapshot's).
    pub fn compile_with(
        config: Config,
        previous: Option<&Snapshot>,
        cluster: Option<Arc<Cluster>>,
    ) -> Result<Snapshot, ConfigErrors> {
        Self::build(config, previous, cluster, false)
    }

    fn build(
        config: Config,
        previous: Option<&Snapshot>,
        cluster: Option<Arc<Cluster>>,
        checking: bool,
    ) -> Result<Snapshot, ConfigErrors> {
        let mut errors = Vec::new();
        let mut pools = HashMap::new();
        for spec in &config.upstreams {
            let old = previous.and_then(|p| p.pools.get(&spec.name)).map(|p| p.as_ref());
            match Pool::build(spec, old) {
                Ok(pool) => {
                    pools.insert(spec.name.clone(), Arc::new(pool));
                }
                Err(msg) => errors.push(ConfigError { path: config.source.clone(), line: 1, col: 1, message: msg }),
            }
        }
        let mut compiled = HashMap::new();
        for (name, spec) in &config.middleware {
            if checking {
                // Dropped with the snapshot: only the errors are wanted.
                if let Err(e) = middleware::check(spec) {
                    errors.push(definition_error(&config.source, spec, &e));
                }
                continue;
            }
            // Unchanged definitions keep their state (rate-limit buckets),
            // unless they read a file, which may have changed.
            let reusable = |old: &&Compiled| old.spec == spec.kind && !old.middleware.reads_files();
            if let Some(old) = previous.and_then(|p| p.middleware.get(name)).filter(reusable) {
                compiled
                    .insert(name.clone(), Compiled { spec: old.spec.clone(), middleware: Arc::clone(&old.middleware) });
                continue;
            }
            let old = previous.and_then(|p| p.middleware.get(name)).map(|c| c.middleware.as_ref());
            match middleware::compile(spec, cluster.as_ref(), old) {
                Ok(m) => {
                    compiled.insert(name.clone(), Compiled { spec: spec.kind.clone(), middleware: m });
                }
                Err(e) => errors.push(definition_error(&config.source, spec, &e)),
            }
        }
        let mut router = Router::default();
        let mut routes = Vec::with_capacity(config.routes.len());
        for spec in &config.routes {
            // Config validation has already checked the reference.
            let Some(pool) = pools.get(&spec.upstream) else {
                continue;
            };
            let name: Arc<str> = spec.name.as_str().into();
            let route = Arc::new(Route {
                metrics: RouteMetrics::new(Arc::clone(&name)),
                name,
                prefix: spec.prefix.clone(),
                strip_prefix: spec.strip_prefix,
                preserve_host: spec.preserve_host,
                pool: Arc::clone(pool),
                middleware: Chain(
                    spec.middleware.iter().filter_map(|m| compiled.get(m)).map(|c| Arc::clone(&c.middleware)).collect(),
                ),
            });
            router.insert(&spec.host, &spec.prefix, Arc::clone(&route));
            routes.push(route);
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| (e.line, e.col));
            return Err(ConfigErrors(errors));
        }
        Ok(Snapshot { config: Arc::new(config), router, pools, middleware: compiled, routes, cluster })
    }
}

/// The holder every request reads from.
pub struct State {
    current: ArcSwap<Snapshot>,
}

impl State {
    pub fn new(initial: Snapshot) -> Self {
        State { current: ArcSwap::from_pointee(initial) }
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn swap(&self, next: Snapshot) -> Arc<Snapshot> {
        self.current.swap(Arc::new(next))
    }
}
