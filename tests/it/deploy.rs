//! The deployment files, proven without a container engine: the config the
//! image ships passes `rampart check` (as the Dockerfile's `RUN` does), the
//! binary serves the reference stack with it, `rampart healthcheck` (the
//! image's HEALTHCHECK) tells a live proxy from a dead one, and the compose
//! file and Kubernetes ConfigMap agree with the shipped config.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `rampart check --config PATH`: (exit code, stdout, stderr).
fn check(path: &Path) -> (i32, String, String) {
    let out = Command::new(binary()).args(["check", "--config"]).arg(path).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `rampart healthcheck --url URL`: the exit code.
fn healthcheck(url: &str) -> i32 {
    Command::new(binary()).args(["healthcheck", "--url", url]).output().unwrap().status.code().unwrap_or(-1)
}

/// The upstream server addresses the shipped config names, and the compose
/// service behind each.
const SHIPPED_SERVERS: [&str; 3] = ["backend:7600", "frontend:7601", "admin-frontend:7602"];

/// The shipped config made runnable on loopback: `[listen]` replaced by the
/// harness's ephemeral ports, `[tls]`/`[acme]` removed (no certificates, no
/// Let's Encrypt in a test), and every server address replaced through
/// `servers`. Everything else (routes, upstream settings, middleware) is
/// exactly what the image ships.
fn runnable_copy(servers: &HashMap<&str, String>) -> String {
    let mut doc: toml::Table = read("deploy/rampart.toml").parse().unwrap();
    doc.remove("tls");
    doc.remove("acme");
    let listen = LISTEN.parse::<toml::Table>().unwrap()["listen"].clone();
    doc.insert("listen".into(), listen);
    let upstreams = doc["upstreams"].as_table_mut().unwrap();
    for (name, u) in upstreams.iter_mut() {
        for s in u["servers"].as_array_mut().unwrap() {
            let addr = s.as_str().unwrap_or_else(|| s["addr"].as_str().unwrap());
            let Some(local) = servers.get(addr) else {
                panic!("upstream {name}: server {addr} has no stand-in; update tests/it/deploy.rs")
            };
            *s = toml::Value::String(local.clone());
        }
    }
    toml::to_string(&doc).unwrap()
}

#[test]
fn shipped_config_passes_check() {
    let (code, out, err) = check(&repo_file("deploy/rampart.toml"));
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert_eq!(out.trim(), "ok: 6 routes, 3 upstreams, 5 middleware");
}

#[test]
fn shipped_config_names_the_compose_services() {
    let config = read("deploy/rampart.toml");
    let compose = read("deploy/docker-compose.yml");
    for server in SHIPPED_SERVERS {
        assert!(config.contains(&format!("\"{server}\"")), "{server}");
        let (service, port) = server.split_once(':').unwrap();
        // A service key at two spaces of indentation under `services:`.
        assert!(compose.contains(&format!("\n  {service}:")), "compose has no service {service:?}");
        assert!(compose.contains(&format!("\"--port\", \"{port}\"")), "compose's {service} does not listen on {port}");
    }
    // Files the compose file mounts exist next to it.
    for mounted in ["./rampart.toml", "./prometheus.yml", "./prometheus-alerts.yml"] {
        assert!(compose.contains(&format!("- {mounted}:")), "{mounted}");
        assert!(repo_file("deploy").join(mounted).exists(), "{mounted} is mounted but missing");
    }
    // The grace period covers the drain.
    assert!(config.contains("shutdown_timeout = \"30s\""));
    assert!(compose.contains("stop_grace_period: 40s"));
}

/// The config embedded in the Kubernetes ConfigMap (a YAML block scalar,
/// read without a YAML parser) is valid and routes like the shipped one.
#[test]
fn kubernetes_configmap_config_passes_check() {
    let yaml = read("deploy/k8s/configmap.yaml");
    let start =
        yaml.find("  rampart.toml: |\n").expect("configmap has data.rampart.toml") + "  rampart.toml: |\n".len();
    let mut embedded = String::new();
    for line in yaml[start..].lines() {
        if line.is_empty() {
            embedded.push('\n');
        } else if let Some(l) = line.strip_prefix("    ") {
            embedded.push_str(l);
            embedded.push('\n');
        } else {
            break;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rampart.toml");
    std::fs::write(&path, &embedded).unwrap();
    let (code, out, err) = check(&path);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}\nconfig:\n{embedded}");
    let (_, shipped, _) = check(&repo_file("deploy/rampart.toml"));
    assert_eq!(out, shipped, "the ConfigMap routes differently from deploy/rampart.toml");
    // Several replicas run ACME only through a shared store: one order
    // per name, one renewer (docs/operations.md, "Several instances").
    let has = |table: &str| embedded.lines().any(|l| l.trim() == table);
    assert!(!has("[acme]") || has("[cluster]"), "replicas running ACME need [cluster]");
    // Three replicas, the Redis in the kustomization, the password from a Secret.
    let deployment = read("deploy/k8s/deployment.yaml");
    assert!(deployment.contains("  replicas: 3\n"));
    assert!(deployment.contains("RAMPART_REDIS_PASSWORD"));
    assert!(read("deploy/k8s/kustomization.yaml").contains("  - redis.yaml\n"));
    let redis = read("deploy/k8s/redis.yaml");
    assert!(redis.contains("maxmemory-policy noeviction") && redis.contains("appendonly yes"));
    assert!(embedded.contains("redis = \"redis://redis:6379/0\""), "[cluster] names redis.yaml's Service");
}

#[tokio::test]
async fn shipped_config_serves_the_reference_stack() {
    let backend = Upstream::echo().await;
    let frontend = Upstream::named("frontend").await;
    let admin_frontend = Upstream::named("admin-frontend").await;
    let servers = HashMap::from([
        ("backend:7600", backend.addr.to_string()),
        ("frontend:7601", frontend.addr.to_string()),
        ("admin-frontend:7602", admin_frontend.addr.to_string()),
    ]);
    let config = runnable_copy(&servers);
    let mut proxy = Proxy::start(&config);

    // Host and path routing, with the prefix stripped where nginx's
    // `proxy_pass http://backend:7600/;` would strip it.
    let cases = [
        ("logen.example.com", "/api/users?page=2", "/users?page=2"),
        ("logen.example.com", "/customer/orders", "/customer/orders"),
        ("admin.logen.example.com", "/api/stats", "/stats"),
        ("admin.logen.example.com", "/admin/users", "/admin/users"),
    ];
    for (host, path, upstream_uri) in cases {
        let a = get(&proxy.url(path), host).await;
        assert_eq!(a.status, 200, "{host}{path}: {}", a.text());
        assert_eq!(a.json()["uri"], upstream_uri, "{host}{path}");
    }
    let a = get(&proxy.url("/"), "logen.example.com").await;
    assert_eq!((a.status.as_u16(), a.text().as_str()), (200, "frontend"));
    let a = get(&proxy.url("/settings"), "admin.logen.example.com").await;
    assert_eq!((a.status.as_u16(), a.text().as_str()), (200, "admin-frontend"));
    let a = get(&proxy.url("/"), "unknown.example.com").await;
    assert_eq!(a.status, 404);

    // The image's HEALTHCHECK and the Kubernetes probes.
    assert_eq!(healthcheck(&proxy.admin_url("/healthz")), 0);
    assert_eq!(get(&proxy.admin_url("/readyz"), "localhost").await.status, 200);
    let dead = closed_port();
    assert_ne!(healthcheck(&format!("http://{dead}/healthz")), 0);
    // Without --url it asks the admin listener the config names, on
    // loopback when that is all addresses.
    let dir = tempfile::tempdir().unwrap();
    for (admin, want) in
        [(proxy.admin.to_string(), 0), (format!("0.0.0.0:{}", proxy.admin.port()), 0), (dead.to_string(), 1)]
    {
        let config = dir.path().join("probe.toml");
        std::fs::write(&config, format!("[listen]\nadmin = \"{admin}\"\n")).unwrap();
        let out = Command::new(binary()).arg("healthcheck").arg("--config").arg(&config).output().unwrap();
        assert_eq!(out.status.code(), Some(want), "admin {admin}: {}", String::from_utf8_lossy(&out.stderr));
    }

    // Prometheus sees the routes by their stable names.
    let metrics = get(&proxy.admin_url("/metrics"), "localhost").await.text();
    assert!(metrics.contains("rampart_http_requests_total{") && metrics.contains("route=\"site-api\""), "{metrics}");

    // The reload path the compose file and the ConfigMap sidecar use.
    let reload = post_reload(&proxy).await;
    assert_eq!(reload.status, 200, "{}", reload.text());

    // `docker stop` / pod termination: SIGTERM drains and exits 0.
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)), Some(0));
}

/// The labels-only variant: its config passes `check`, and the labels of
/// its compose services, read by the same code the Docker provider runs,
/// give the reference stack's six routes with nothing skipped.
#[test]
fn labels_only_variant_gives_the_reference_routes() {
    let (code, out, err) = check(&repo_file("deploy/rampart.labels.toml"));
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let compose = read("deploy/docker-compose.labels.yml");
    assert!(compose.contains("- ./rampart.labels.toml:/etc/rampart/rampart.toml:ro"));
    assert!(!compose.contains("docker.sock:/var/run/docker.sock\n") || compose.contains("socket-proxy:"));
    // Services and their labels, from the compose file's `- rampart.K=V` lines.
    let mut containers = Vec::new();
    for line in compose.lines() {
        let line = line.split(" #").next().unwrap().trim_end();
        if let Some(name) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ') && l.ends_with(':')) {
            let service = name.split_whitespace().next().unwrap().trim_end_matches(':').to_string();
            containers.push(rampart::config::Container {
                id: format!("id-{}", containers.len()),
                name: format!("logen-{service}-1"),
                labels: [("com.docker.compose.service".to_string(), service)].into(),
                networks: [(
                    "logen_edge".to_string(),
                    Some(format!("10.0.0.{}", containers.len() + 2).parse().unwrap()),
                )]
                .into(),
                exposed_ports: vec![],
                ready: true,
                created: 0,
            });
        } else if let (Some(label), Some(c)) = (line.trim().strip_prefix("- rampart."), containers.last_mut()) {
            let (k, v) = label.split_once('=').unwrap();
            c.labels.insert(format!("rampart.{k}"), v.to_string());
        }
    }
    let config = rampart::config::Config::load(&repo_file("deploy/rampart.labels.toml")).unwrap();
    let found = rampart::config::Discovered { containers: Some(containers), ..Default::default() };
    let (merged, docker) = config.merged(&found);
    assert!(docker.skipped.is_empty(), "{:?}", docker.skipped);
    assert_eq!(docker.taking_part, 3, "backend, frontend, admin-frontend");
    let mut routes: Vec<(String, String, String)> =
        merged.routes.iter().map(|r| (r.host.to_string(), format!("{}/", r.prefix), r.upstream.clone())).collect();
    routes.sort();
    let expected = [
        ("admin.logen.example.com", "/", "admin-frontend"),
        ("admin.logen.example.com", "/admin/", "api"),
        ("admin.logen.example.com", "/api/", "api"),
        ("logen.example.com", "/", "frontend"),
        ("logen.example.com", "/api/", "api"),
        ("logen.example.com", "/customer/", "api"),
    ];
    let expected: Vec<(String, String, String)> =
        expected.iter().map(|(h, p, u)| (h.to_string(), p.to_string(), u.to_string())).collect();
    assert_eq!(routes, expected);
    let api = merged.upstreams.iter().find(|u| u.name == "api").unwrap();
    assert_eq!(api.balance, rampart::config::Balance::LeastConn, "the file's pool settings stay");
    assert_eq!(api.servers.len(), 1);
}
