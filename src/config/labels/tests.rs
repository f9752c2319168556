use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;
use crate::config::Discovered;

fn file(text: &str) -> Config {
    let base = "[providers.docker]\n[middleware.gzip]\ntype = \"compress\"\n";
    Config::parse(std::path::Path::new("rampart.toml"), &format!("{base}{text}")).unwrap()
}

fn container(name: &str, ip: &str, labels: &[(&str, &str)]) -> Container {
    Container {
        id: format!("id-{name}"),
        name: name.to_string(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        networks: BTreeMap::from([("bridge".to_string(), Some(ip.parse::<IpAddr>().unwrap()))]),
        exposed_ports: vec![],
        ready: true,
        created: 0,
    }
}

fn settings(file: &Config) -> DockerSettings {
    file.providers.docker.clone().unwrap()
}

#[test]
fn labelled_containers_become_servers_and_routes() {
    let f = file("[upstreams.api]\nbalance = \"least_conn\"\n");
    let cs = vec![
        container(
            "api-1",
            "172.17.0.2",
            &[("rampart.enable", "true"), ("rampart.upstream", "api"), ("rampart.port", "7600")],
        ),
        container(
            "api-2",
            "172.17.0.3",
            &[
                ("rampart.enable", "true"),
                ("rampart.upstream", "api"),
                ("rampart.port", "7600"),
                ("rampart.weight", "2"),
            ],
        ),
        container(
            "web",
            "172.17.0.4",
            &[
                ("rampart.enable", "true"),
                ("rampart.port", "8080"),
                ("rampart.routes.site.host", "Example.COM"),
                ("rampart.routes.site.path", "/app/"),
                ("rampart.routes.site.strip_prefix", "true"),
                ("rampart.routes.site.middleware", "gzip"),
            ],
        ),
        container("quiet", "172.17.0.5", &[("rampart.port", "80")]),
    ];
    let d = discover_containers(&cs, &settings(&f), &f);
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    assert_eq!(d.taking_part, 3);
    let (merged, _) = f.merged(&Discovered { containers: Some(cs), dns: Default::default() });
    let api = merged.upstreams.iter().find(|u| u.name == "api").unwrap();
    assert_eq!(api.balance, crate::config::Balance::LeastConn, "the file's pool keeps its settings");
    let addrs: Vec<(&str, u32)> = api.servers.iter().map(|s| (s.addr.0.as_str(), s.weight)).collect();
    assert_eq!(addrs, [("172.17.0.2:7600", 1), ("172.17.0.3:7600", 2)]);
    let web = merged.upstreams.iter().find(|u| u.name == "web").expect("a pool named after the container");
    assert_eq!(web.servers[0].addr.0, "172.17.0.4:8080");
    let route = merged.routes.iter().find(|r| r.name == "site").unwrap();
    assert_eq!(route.host, HostPattern::Exact("example.com".into()));
    assert_eq!((route.prefix.as_str(), route.strip_prefix, route.upstream.as_str()), ("/app", true, "web"));
    assert_eq!(route.middleware, ["gzip"]);
}

#[test]
fn a_bad_label_skips_only_its_container_and_names_the_key() {
    let f = file("");
    let ok = [("rampart.enable", "true"), ("rampart.port", "80")];
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("rampart.enable", "yes")], "rampart.enable"),
        (&[("rampart.enable", "true"), ("rampart.port", "http")], "rampart.port"),
        (&[("rampart.enable", "true"), ("rampart.port", "80"), ("rampart.weight", "0")], "rampart.weight"),
        (&[("rampart.enable", "true"), ("rampart.prot", "80")], "rampart.prot"),
        (&[("rampart.enable", "true")], "rampart.port"),
        (
            &[("rampart.enable", "true"), ("rampart.port", "80"), ("rampart.routes.r.host", "bad host")],
            "rampart.routes.r.host",
        ),
        (
            &[("rampart.enable", "true"), ("rampart.port", "80"), ("rampart.routes.r.path", "api")],
            "rampart.routes.r.path",
        ),
        (
            &[("rampart.enable", "true"), ("rampart.port", "80"), ("rampart.routes.r.middleware", "gzip,nope")],
            "rampart.routes.r.middleware",
        ),
        (
            &[("rampart.enable", "true"), ("rampart.port", "80"), ("rampart.routes.r.colour", "red")],
            "rampart.routes.r.colour",
        ),
    ];
    for (labels, key) in cases {
        let cs = vec![container("bad", "10.0.0.1", labels), container("good", "10.0.0.2", &ok)];
        let d = discover_containers(&cs, &settings(&f), &f);
        assert_eq!(d.skipped.len(), 1, "{labels:?}: {:?}", d.skipped);
        assert_eq!(d.skipped[0].container, "bad");
        assert_eq!(d.skipped[0].label.as_deref(), Some(*key), "{}", d.skipped[0]);
        assert_eq!(d.servers.len(), 1);
        assert_eq!(d.servers[0].1.addr.0, "10.0.0.2:80");
    }
}

#[test]
fn networks_ports_health_and_defaults() {
    let f = file("");
    let s = settings(&f);
    let mut two = container("two-nets", "10.0.0.1", &[("rampart.enable", "true"), ("rampart.port", "80")]);
    two.networks.insert("other".into(), Some("10.1.0.1".parse().unwrap()));
    let mut exposed =
        container("exposed", "10.0.0.2", &[("rampart.enable", "true"), ("com.docker.compose.service", "svc")]);
    exposed.exposed_ports = vec![9000];
    let mut starting = container("starting", "10.0.0.3", &[("rampart.enable", "true"), ("rampart.port", "80")]);
    starting.ready = false;
    let d = discover_containers(&[two.clone(), exposed, starting], &s, &f);
    assert_eq!(d.skipped.len(), 1);
    assert!(d.skipped[0].reason.contains("several networks"), "{}", d.skipped[0]);
    assert_eq!(
        d.servers,
        [(
            "svc".to_string(),
            ServerSpec {
                addr: UpstreamAddr("10.0.0.2:9000".into()),
                weight: 1,
                origin: ServerOrigin::Docker("exposed".into()),
            }
        )]
    );
    assert_eq!(d.not_ready, 1);
    // With `network` set, that network's address is used.
    let s = DockerSettings { network: Some("other".into()), ..s };
    let d = discover_containers(&[two], &s, &f);
    assert_eq!(d.servers[0].1.addr.0, "10.1.0.1:80");
    // exposed_by_default takes unlabelled containers, not those that opt out.
    let s = DockerSettings { exposed_by_default: true, network: None, ..s };
    let plain = container("plain", "10.0.0.4", &[("rampart.port", "80")]);
    let out = container("out", "10.0.0.5", &[("rampart.enable", "false"), ("rampart.port", "80")]);
    let d = discover_containers(&[plain, out], &s, &f);
    assert_eq!(d.servers.len(), 1);
    assert_eq!(d.servers[0].0, "plain");
}

#[test]
fn conflicting_routes_skip_the_later_container() {
    let f =
        file("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nhost = \"taken.example\"\nupstream = \"a\"\n");
    let r = |name: &'static str, host: &'static str| {
        vec![("rampart.enable", "true"), ("rampart.port", "80"), ("rampart.upstream", "p"), (name, host)]
    };
    let cs = vec![
        container("a-1", "10.0.0.1", &r("rampart.routes.x.host", "x.example")),
        container("a-2", "10.0.0.2", &r("rampart.routes.x.host", "x.example")),
        container("b", "10.0.0.3", &r("rampart.routes.x.host", "other.example")),
        container("c", "10.0.0.4", &r("rampart.routes.y.host", "taken.example")),
    ];
    let d = discover_containers(&cs, &settings(&f), &f);
    assert_eq!(d.routes.len(), 1, "replicas share one route");
    let skipped: Vec<&str> = d.skipped.iter().map(|s| s.container.as_str()).collect();
    assert_eq!(skipped, ["b", "c"]);
    assert_eq!(d.servers.len(), 2);
}

/// A container started later never takes over a route in service, whatever
/// its name; one container cannot define one place twice; and a message
/// names who holds the place and what differs.
#[test]
fn the_container_there_first_keeps_its_routes() {
    let f = file("");
    let labels = |pool: &'static str, route: &'static str| {
        vec![("rampart.enable", "true"), ("rampart.port", "80"), ("rampart.upstream", pool), (route, "clash.test")]
    };
    let mut old = container("c1", "10.0.0.1", &labels("p1", "rampart.routes.x1.host"));
    old.created = 100;
    let mut newer = container("a0", "10.0.0.2", &labels("p0", "rampart.routes.x0.host"));
    newer.created = 200;
    let d = discover_containers(&[newer.clone(), old.clone()], &settings(&f), &f);
    assert_eq!(d.routes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["x1"]);
    assert_eq!(d.skipped.len(), 1);
    assert_eq!(d.skipped[0].container, "a0");
    assert!(d.skipped[0].reason.contains("already routed by \"x1\" (container c1)"), "{}", d.skipped[0]);

    let mut twice = container(
        "t",
        "10.0.0.3",
        &[
            ("rampart.enable", "true"),
            ("rampart.port", "80"),
            ("rampart.routes.a5.host", "rt5.test"),
            ("rampart.routes.a5.strip_prefix", "true"),
            ("rampart.routes.b5.host", "rt5.test"),
        ],
    );
    twice.created = 300;
    let d = discover_containers(&[twice], &settings(&f), &f);
    assert!(d.routes.is_empty());
    assert!(d.skipped[0].reason.contains("routes \"a5\" and \"b5\" both route host rt5.test"), "{}", d.skipped[0]);

    let mut replica = container("c2", "10.0.0.4", &labels("p1", "rampart.routes.x1.host"));
    replica.labels.insert("rampart.routes.x1.strip_prefix".into(), "true".into());
    replica.created = 150;
    let d = discover_containers(&[old, replica], &settings(&f), &f);
    assert!(
        d.skipped[0].reason.contains("differs from the one container c1 defines (its strip_prefix)"),
        "{}",
        d.skipped[0]
    );
}

#[test]
fn dns_addresses_become_servers_of_their_pool() {
    let f = file("[upstreams.api]\nservers = [{ dns = \"tasks.api:7600\", weight = 3 }, \"127.0.0.1:9\"]\n");
    let mut found = Discovered::default();
    let key = ("api".to_string(), UpstreamAddr("tasks.api:7600".into()));
    found.dns.insert(key, vec!["127.0.0.2:7600".parse().unwrap(), "[::1]:7600".parse().unwrap()]);
    let (merged, _) = f.merged(&found);
    let servers: Vec<(String, u32, String)> =
        merged.upstreams[0].servers.iter().map(|s| (s.addr.0.clone(), s.weight, s.origin.to_string())).collect();
    assert_eq!(
        servers,
        [
            ("127.0.0.1:9".into(), 1, "file".into()),
            ("127.0.0.2:7600".into(), 3, "dns:tasks.api:7600".into()),
            ("[::1]:7600".into(), 3, "dns:tasks.api:7600".into()),
        ]
    );
}
