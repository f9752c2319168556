//! Docker labels -> servers and routes, validated like the file: a bad
//! label skips its container (with the container's name and the label's
//! key) and never the others. Containers are read oldest first (by
//! creation time, then name), so the result does not depend on the
//! engine's listing order, and of two conflicting containers the one that
//! was there first keeps its routes: a container started later never takes
//! over a route in service.

use std::collections::{BTreeMap, HashMap};

use super::discovered::{Container, DockerDiscovery, Skipped};
use super::route_path::route_prefix;
use super::{Config, DockerSettings, HostPattern, RouteSpec, ServerOrigin, ServerSpec, UpstreamAddr};

const PREFIX: &str = "rampart.";
/// The label Compose puts on every container of a service.
const COMPOSE_SERVICE: &str = "com.docker.compose.service";

/// Turn the running containers into servers and routes for `file`'s pools.
pub fn discover_containers(containers: &[Container], settings: &DockerSettings, file: &Config) -> DockerDiscovery {
    let mut out = DockerDiscovery::default();
    let mut sorted: Vec<&Container> = containers.iter().collect();
    sorted.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)).then_with(|| a.id.cmp(&b.id)));
    // Route name -> (spec, container that defined it first).
    let mut names: HashMap<String, (RouteSpec, String)> = HashMap::new();
    // Host and path -> the route there, and who defined it.
    let mut places: HashMap<(HostPattern, String), (String, String)> = HashMap::new();
    for r in &file.routes {
        places.insert((r.host.clone(), r.prefix.clone()), (r.name.clone(), "the config file".to_string()));
    }
    for c in sorted {
        let found = match read_container(c, settings, file) {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(skip) => {
                out.skipped.push(skip);
                continue;
            }
        };
        let Some((pool, server, routes)) = found else {
            out.not_ready += 1;
            continue;
        };
        // Routes must not clash with the file's or another container's.
        let mut clash = None;
        for (i, r) in routes.iter().enumerate() {
            if file.routes.iter().any(|f| f.name == r.name) {
                clash = Some(format!("route name {:?} is already used by the config file", r.name));
            } else if let Some((known, by)) = names.get(&r.name) {
                if known != r {
                    clash = Some(format!(
                        "route {:?} differs from the one container {by} defines ({})",
                        r.name,
                        route_difference(known, r)
                    ));
                }
            } else if let Some((owner, by)) = places.get(&(r.host.clone(), r.prefix.clone())) {
                clash = Some(format!(
                    "route {:?}: host {} and path {} are already routed by {owner:?} ({by})",
                    r.name,
                    r.host,
                    display_path(&r.prefix)
                ));
            } else if let Some(twin) = routes[..i].iter().find(|o| o.host == r.host && o.prefix == r.prefix) {
                clash = Some(format!(
                    "routes {:?} and {:?} both route host {} and path {}",
                    twin.name,
                    r.name,
                    r.host,
                    display_path(&r.prefix)
                ));
            }
            if clash.is_some() {
                break;
            }
        }
        if let Some(reason) = clash {
            out.skipped.push(Skipped { container: c.name.clone(), label: None, reason });
            continue;
        }
        for r in routes {
            if !names.contains_key(&r.name) {
                places.insert((r.host.clone(), r.prefix.clone()), (r.name.clone(), format!("container {}", c.name)));
                names.insert(r.name.clone(), (r.clone(), c.name.clone()));
                out.routes.push(r);
            }
        }
        if !out.servers.iter().any(|(p, s)| *p == pool && s.addr == server.addr) {
            out.servers.push((pool, server));
        }
        out.taking_part += 1;
    }
    out
}

/// What differs between two definitions of one route, for the message.
fn route_difference(a: &RouteSpec, b: &RouteSpec) -> String {
    let keys: Vec<&str> = [
        (a.host != b.host, "host"),
        (a.prefix != b.prefix, "path"),
        (a.strip_prefix != b.strip_prefix, "strip_prefix"),
        (a.upstream != b.upstream, "upstream"),
        (a.middleware != b.middleware, "middleware"),
    ]
    .into_iter()
    .filter_map(|(differs, key)| differs.then_some(key))
    .collect();
    if keys.is_empty() {
        "its other settings".to_string()
    } else {
        format!("its {}", keys.join(", "))
    }
}

fn display_path(prefix: &str) -> String {
    if prefix.is_empty() {
        "/".to_string()
    } else {
        format!("{prefix}/")
    }
}

type Found = Option<(String, ServerSpec, Vec<RouteSpec>)>;

/// `Ok(None)`: not taking part; `Ok(Some(None))`: taking part but not ready.
fn read_container(c: &Container, settings: &DockerSettings, file: &Config) -> Result<Option<Found>, Skipped> {
    let bad =
        |label: &str, reason: String| Skipped { container: c.name.clone(), label: Some(label.to_string()), reason };
    let enable = match c.labels.get("rampart.enable") {
        None => settings.exposed_by_default,
        Some(v) => parse_bool(v).ok_or_else(|| bad("rampart.enable", format!("expected true or false, got {v:?}")))?,
    };
    if !enable {
        return Ok(None);
    }
    let mut upstream = None;
    let mut port = None;
    let mut weight = 1u32;
    let mut routes: BTreeMap<&str, RouteLabels> = BTreeMap::new();
    for (key, value) in c.labels.range(PREFIX.to_string()..) {
        let Some(rest) = key.strip_prefix(PREFIX) else { break };
        match rest {
            "enable" => {}
            "upstream" => {
                if !valid_name(value) {
                    return Err(bad(
                        key,
                        format!("invalid pool name {value:?}; use letters, digits, '-', '_' and '.'"),
                    ));
                }
                upstream = Some(value.clone());
            }
            "port" => {
                port = Some(
                    value
                        .trim()
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| bad(key, format!("expected a port number, got {value:?}")))?,
                )
            }
            "weight" => {
                weight = value
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|w| (1..=1000).contains(w))
                    .ok_or_else(|| bad(key, format!("weight must be between 1 and 1000, got {value:?}")))?;
            }
            _ => {
                let field = rest.strip_prefix("routes.").and_then(|r| r.rsplit_once('.'));
                let Some((name, field)) = field.filter(|(n, _)| valid_name(n)) else {
                    return Err(bad(key, "unknown label; expected rampart.enable, .upstream, .port, .weight or .routes.NAME.{host,path,strip_prefix,middleware}".to_string()));
                };
                let r = routes.entry(name).or_default();
                match field {
                    "host" => r.host = Some(value.clone()),
                    "path" => r.path = Some(value.clone()),
                    "strip_prefix" => {
                        r.strip_prefix = parse_bool(value)
                            .ok_or_else(|| bad(key, format!("expected true or false, got {value:?}")))?
                    }
                    "middleware" => {
                        r.middleware =
                            value.split(',').map(str::trim).filter(|m| !m.is_empty()).map(String::from).collect()
                    }
                    _ => {
                        return Err(bad(
                            key,
                            "unknown route field; expected host, path, strip_prefix or middleware".to_string(),
                        ))
                    }
                }
            }
        }
    }
    let pool = upstream.unwrap_or_else(|| match c.labels.get(COMPOSE_SERVICE) {
        Some(service) if valid_name(service) => service.clone(),
        _ => c.name.clone(),
    });
    if file.upstreams.iter().any(|u| u.name == pool && u.files.is_some()) {
        return Err(bad(
            "rampart.upstream",
            format!("pool {pool:?} is a static upstream in the config file; containers cannot join it"),
        ));
    }
    let port = match port {
        Some(p) => p,
        None => match c.exposed_ports.as_slice() {
            [only] => *only,
            [] => return Err(bad("rampart.port", "missing, and the container exposes no TCP port".to_string())),
            many => {
                return Err(bad(
                    "rampart.port",
                    format!("missing, and the container exposes {} ports; say which", many.len()),
                ))
            }
        },
    };
    let ip = match &settings.network {
        Some(net) => match c.networks.get(net) {
            Some(Some(ip)) => *ip,
            _ => {
                return Err(Skipped {
                    container: c.name.clone(),
                    label: None,
                    reason: format!("has no address on network {net:?}"),
                })
            }
        },
        None => match c.networks.iter().collect::<Vec<_>>().as_slice() {
            [(_, Some(ip))] => *ip,
            [] | [(_, None)] => {
                return Err(Skipped {
                    container: c.name.clone(),
                    label: None,
                    reason: "has no network address".to_string(),
                })
            }
            many => {
                let nets: Vec<&str> = many.iter().map(|(n, _)| n.as_str()).collect();
                return Err(Skipped {
                    container: c.name.clone(),
                    label: None,
                    reason: format!(
                        "is on several networks ({}); set [providers.docker] network to choose",
                        nets.join(", ")
                    ),
                });
            }
        },
    };
    let mut specs = Vec::with_capacity(routes.len());
    for (name, r) in routes {
        specs.push(
            r.compile(name, &pool, file)
                .map_err(|(field, reason)| bad(&format!("rampart.routes.{name}.{field}"), reason))?,
        );
    }
    if !c.ready {
        return Ok(Some(None));
    }
    let addr = UpstreamAddr(std::net::SocketAddr::new(ip, port).to_string());
    let server = ServerSpec { addr, weight, origin: ServerOrigin::Docker(c.name.clone()) };
    Ok(Some(Some((pool, server, specs))))
}

#[derive(Debug, Default)]
struct RouteLabels {
    host: Option<String>,
    path: Option<String>,
    strip_prefix: bool,
    middleware: Vec<String>,
}

impl RouteLabels {
    /// As `[[routes]]` would be checked; the error names the field.
    fn compile(self, name: &str, pool: &str, file: &Config) -> Result<RouteSpec, (&'static str, String)> {
        if name == super::NO_ROUTE {
            return Err(("host", format!("route name {name:?} is reserved for requests that match no route")));
        }
        let host = match &self.host {
            None => HostPattern::Any,
            Some(h) => HostPattern::parse(h).map_err(|e| ("host", e))?,
        };
        let prefix = match &self.path {
            None => String::new(),
            Some(p) => route_prefix(p).map_err(|e| ("path", e))?,
        };
        if let Some(m) = self.middleware.iter().find(|m| !file.middleware.contains_key(*m)) {
            return Err(("middleware", format!("unknown middleware {m:?} (middleware come from the config file)")));
        }
        Ok(RouteSpec {
            name: name.to_string(),
            host,
            prefix,
            strip_prefix: self.strip_prefix,
            upstream: pool.to_string(),
            middleware: self.middleware,
            preserve_host: true,
            line: 0,
            col: 0,
        })
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 128 && n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests;
