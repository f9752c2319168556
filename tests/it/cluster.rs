//! `[cluster]` with a real Redis and three real instances: rate limits
//! that hold across the instances, and what each `on_store_error` mode
//! does when Redis freezes, dies and comes back.

use std::time::Duration;

use http::{Request, StatusCode};

use crate::redis_server::RedisServer;
use crate::util::*;

/// `timeout`: the store timeout; the counting test gives a loaded machine
/// (tests in parallel on two cores) room, so that no call falls back.
fn cluster_config(
    redis: &RedisServer,
    timeout: &str,
    upstream: std::net::SocketAddr,
    middleware: &str,
    routes: &str,
) -> String {
    format!(
        "[cluster]\nredis = \"{}\"\nkey_prefix = \"t:\"\ntimeout = \"{timeout}\"\n\
         [upstreams.app]\nservers = [\"{upstream}\"]\n{middleware}{routes}",
        redis.url()
    )
}

/// Start three instances on 127.0.0.1, .2 and .3 with the same config.
fn three(config: &str) -> Vec<Proxy> {
    (1..=3)
        .map(|i| {
            let listen = format!("[listen]\nhttp = \"127.0.0.{i}:0\"\nadmin = \"127.0.0.{i}:0\"\n");
            Proxy::start(&format!("{listen}{config}"))
        })
        .collect()
}

async fn cluster_status(p: &Proxy) -> serde_json::Value {
    status(p).await["cluster"].clone()
}

/// Until every instance sees Redis up and all three instances listed.
async fn wait_joined(proxies: &[Proxy]) {
    for p in proxies {
        let joined = eventually_async(Duration::from_secs(15), || async {
            let c = cluster_status(p).await;
            c["up"] == true && c["instances"].as_array().map_or(0, |a| a.len()) == proxies.len()
        })
        .await;
        assert!(joined, "instance {} never saw the cluster: {}", p.http, cluster_status(p).await);
    }
}

/// Send `n` GETs for `path` to `p`, one at a time, each bounded by
/// `limit` (a request waiting on a frozen Redis would exceed it); the
/// status codes.
async fn statuses(p: &Proxy, path: &str, n: usize, limit: Duration) -> Vec<u16> {
    let c = client();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let req = Request::get(p.url(path)).header("host", "a").body(full("")).unwrap();
        let a = tokio::time::timeout(limit, c.request(req))
            .await
            .unwrap_or_else(|_| panic!("a request to {path} on {} took longer than {limit:?}", p.http))
            .unwrap();
        out.push(a.status().as_u16());
    }
    out
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_scoped_limit_holds_across_three_instances() {
    let redis = RedisServer::start();
    let up = Upstream::named("ok").await;
    // Refill is one token per 100 s: what passes is the burst, however
    // long the run takes. Local buckets would pass 3 x 60.
    let config = cluster_config(
        &redis,
        "2s",
        up.addr,
        "[middleware.limit]\ntype = \"rate_limit\"\nscope = \"cluster\"\naverage = 0.01\nburst = 60\n",
        "[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"app\"\nmiddleware = [\"limit\"]\n",
    );
    let proxies = three(&config);
    wait_joined(&proxies).await;
    let s = cluster_status(&proxies[0]).await;
    assert_eq!(s["key_prefix"], "t:");
    let ids: Vec<&str> = s["instances"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&s["instance"].as_str().unwrap()), "{s}");

    // 20 clients in parallel, each sending 15 requests spread over the three.
    let urls: Vec<String> = proxies.iter().map(|p| p.url("/")).collect();
    let mut tasks = Vec::new();
    for client_no in 0..20usize {
        let urls = urls.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut ok = 0;
            let mut limited = 0;
            for i in 0..15 {
                let url = &urls[(client_no + i) % urls.len()];
                let a = send(&c, Request::get(url.as_str()).header("host", "a").body(full("")).unwrap()).await;
                match a.status {
                    StatusCode::OK => ok += 1,
                    StatusCode::TOO_MANY_REQUESTS => limited += 1,
                    other => panic!("unexpected {other}"),
                }
            }
            (ok, limited)
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (o, l) = t.await.unwrap();
        ok += o;
        limited += l;
    }
    assert_eq!(ok + limited, 300);
    assert!((54..=66).contains(&ok), "accepted {ok} of 300 with a cluster-wide burst of 60");
    assert_eq!(up.hits(), ok);
    // Each instance counted its own rejections; none saw Redis fail.
    let mut rejected = 0.0;
    for p in &proxies {
        let m = get(&p.admin_url("/metrics"), "a").await.text();
        assert_eq!(metric(&m, "rampart_cluster_up "), 1.0, "{m}");
        assert_eq!(metric(&m, "rampart_cluster_store_errors_total{operation=\"ratelimit\"} "), 0.0);
        rejected += metric(&m, "rampart_ratelimit_rejected_total{route=\"r\"} ");
    }
    assert_eq!(rejected as usize, limited);
    // The bucket is in Redis under the prefix, keyed by the client address.
    // The key names the limit too (100 s per request in ns, burst 60).
    assert_eq!(redis.cli(&["EXISTS", "t:rl:limit:100000000000:60:127.0.0.1"]), "1", "{}", redis.cli(&["KEYS", "*"]));

    // The status page lists the three live instances, as a browser renders it.
    let url = proxies[1].admin_url("/");
    let dom = tokio::task::spawn_blocking(move || chromium(&url, &["--dump-dom"])).await.unwrap();
    let html = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(html.contains("<h2>Cluster</h2>"), "{html}");
    for id in &ids {
        assert!(html.contains(id), "page lacks instance {id}: {html}");
    }
    assert!(html.contains("(this one)"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_on_store_error_mode_while_redis_is_frozen_then_dead_then_back() {
    let mut redis = RedisServer::start();
    let up = Upstream::named("ok").await;
    let mw = |name: &str, mode: &str| {
        format!("[middleware.{name}]\ntype = \"rate_limit\"\nscope = \"cluster\"\naverage = 0.01\nburst = 3\non_store_error = \"{mode}\"\n")
    };
    let route = |name: &str| {
        format!("[[routes]]\nname = \"{name}\"\npath = \"/{name}\"\nupstream = \"app\"\nmiddleware = [\"{name}\"]\n")
    };
    let config = cluster_config(
        &redis,
        "1s",
        up.addr,
        &format!("{}{}{}", mw("local", "local"), mw("allow", "allow"), mw("deny", "deny")),
        &format!("{}{}{}", route("local"), route("allow"), route("deny")),
    );
    let proxies = three(&config);
    wait_joined(&proxies).await;
    // Three times the 1 s store timeout: only a request that waited on
    // the frozen Redis without one could take this long.
    let limit = Duration::from_secs(3);

    redis.freeze();
    for p in &proxies {
        assert_eq!(statuses(p, "/allow", 10, limit).await, vec![200; 10], "allow on {}", p.http);
        assert_eq!(statuses(p, "/deny", 10, limit).await, vec![429; 10], "deny on {}", p.http);
        // local: this instance's own bucket, burst 3.
        let local = statuses(p, "/local", 10, limit).await;
        assert_eq!(local.iter().filter(|&&s| s == 200).count(), 3, "local on {}: {local:?}", p.http);
        let c = cluster_status(p).await;
        assert_eq!(c["up"], false, "{c}");
        // The breaker: 30 requests, at most the first waited on Redis.
        let m = get(&p.admin_url("/metrics"), "a").await.text();
        assert_eq!(metric(&m, "rampart_cluster_up "), 0.0);
        let errors = metric(&m, "rampart_cluster_store_errors_total{operation=\"ratelimit\"} ");
        assert!(errors <= 1.0, "{errors} rate-limit calls reached the frozen Redis on {}", p.http);
    }

    redis.kill();
    for p in &proxies {
        assert_eq!(statuses(p, "/allow", 5, limit).await, vec![200; 5]);
        assert_eq!(statuses(p, "/deny", 5, limit).await, vec![429; 5]);
        assert_eq!(statuses(p, "/local", 5, limit).await, vec![429; 5], "local bucket of {} still empty", p.http);
    }

    // Back: the shared buckets again (the deny route's was never written).
    redis.restart();
    wait_joined(&proxies).await;
    let mut accepted = 0;
    for p in &proxies {
        accepted += statuses(p, "/deny", 3, limit).await.iter().filter(|&&s| s == 200).count();
    }
    assert_eq!(accepted, 3, "one shared burst of 3 across the three instances");
}

/// The password from RAMPART_REDIS_PASSWORD or from the URL; never shown.
#[tokio::test]
async fn the_password_comes_from_the_environment_or_the_url_and_is_never_shown() {
    let redis = RedisServer::start_with_password(Some("s3cret-pw"));
    let up = Upstream::named("ok").await;
    let config = |url: &str| {
        format!("[cluster]\nredis = \"{url}\"\n[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\npath = \"/\"\nupstream = \"app\"\n", up.addr)
    };
    let plain = redis.url();
    let with_pw = format!("redis://:s3cret-pw@{}/0", redis.addr);
    let from_env =
        Proxy::start_in_env(tempfile::tempdir().unwrap(), &config(&plain), &[("RAMPART_REDIS_PASSWORD", "s3cret-pw")]);
    let from_url = Proxy::start(&config(&with_pw));
    let wrong =
        Proxy::start_in_env(tempfile::tempdir().unwrap(), &config(&plain), &[("RAMPART_REDIS_PASSWORD", "wrong")]);
    for p in [&from_env, &from_url] {
        assert!(
            eventually_async(Duration::from_secs(10), || async { cluster_status(p).await["up"] == true }).await,
            "{}",
            cluster_status(p).await
        );
    }
    let shown = cluster_status(&from_url).await["redis"].as_str().unwrap().to_string();
    assert_eq!(shown, format!("redis://:***@{}/0", redis.addr));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(cluster_status(&wrong).await["up"], false, "a wrong password must not count as up");
    for p in [&from_env, &from_url, &wrong] {
        let logs = p.stderr.lock().unwrap().join("\n");
        assert!(!logs.contains("s3cret-pw"), "the password reached the log");
        assert!(!get(&p.admin_url("/api/status"), "a").await.text().contains("s3cret-pw"));
    }
    // Both instances are in the list, under the configured prefix.
    assert_eq!(redis.cli(&["HLEN", "rampart:instances"]), "2");
}

#[tokio::test]
async fn without_a_cluster_there_is_no_cluster_object_or_metric() {
    let up = Upstream::named("ok").await;
    let p = Proxy::start(&format!(
        "[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\npath = \"/\"\nupstream = \"app\"\n",
        up.addr
    ));
    let s = status(&p).await;
    assert!(s.get("cluster").is_none(), "{s}");
    assert!(s.get("routes").is_some());
    let m = get(&p.admin_url("/metrics"), "a").await.text();
    assert!(!m.contains("rampart_cluster_"), "{m}");
}

#[tokio::test]
async fn cluster_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rampart.toml");
    let check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(binary()).args(["check", "--config"]).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{text}");
        String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "PATH")
    };
    let err = check("[cluster]\nredis = \"http://127.0.0.1:6379\"\n\n[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n");
    assert!(err.contains("PATH:2:9: error: redis must be a redis:// or rediss:// URL"), "{err}");
    let err = check(
        "[cluster]\nredis = \"redis://127.0.0.1:6379\"\n\n[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n\n[middleware.limit]\ntype = \"rate_limit\"\naverage = 1\nscope = \"everywhere\"\n",
    );
    assert!(err.contains("PATH:10:1: error: middleware \"limit\": scope must be \"local\" or \"cluster\""), "{err}");
    let err = check(
        "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n\n[middleware.limit]\ntype = \"rate_limit\"\naverage = 1\nscope = \"cluster\"\n",
    );
    assert!(
        err.contains("PATH:4:1: error: middleware \"limit\": scope = \"cluster\" needs a [cluster] section"),
        "{err}"
    );
}

/// A reload that raises a cluster limit applies it at once, as with a
/// local limiter: the bucket spent under the old numbers is not inherited.
#[tokio::test]
async fn a_raised_cluster_limit_applies_at_once() {
    let redis = RedisServer::start();
    let up = Upstream::named("ok").await;
    let limit = |average: &str, burst: u32| {
        cluster_config(
            &redis,
            "2s",
            up.addr,
            &format!("[middleware.limit]\ntype = \"rate_limit\"\nscope = \"cluster\"\naverage = {average}\nburst = {burst}\n"),
            "[[routes]]\nname = \"r\"\nhost = \"*\"\nupstream = \"app\"\nmiddleware = [\"limit\"]\n",
        )
    };
    let p = Proxy::start(&limit("0.01", 3));
    wait_joined(std::slice::from_ref(&p)).await;
    let spent = statuses(&p, "/", 5, Duration::from_secs(5)).await;
    assert_eq!(spent, [200, 200, 200, 429, 429]);
    let text = std::fs::read_to_string(p.config_path()).unwrap();
    std::fs::write(p.config_path(), text.replace("average = 0.01\nburst = 3", "average = 1000\nburst = 1000")).unwrap();
    assert_eq!(post_reload(&p).await.status, 200);
    assert_eq!(statuses(&p, "/", 3, Duration::from_secs(5)).await, [200, 200, 200]);
}

/// Foreign data of another type under one client's key fails that key's
/// calls (its requests fall back as `on_store_error` says), not the store:
/// the breaker stays closed for every other client.
#[tokio::test]
async fn an_error_about_one_key_does_not_take_the_store_down() {
    let redis = RedisServer::start();
    let up = Upstream::named("ok").await;
    let p = Proxy::start(&cluster_config(
        &redis,
        "2s",
        up.addr,
        "[middleware.limit]\ntype = \"rate_limit\"\nscope = \"cluster\"\naverage = 0.01\nburst = 3\n",
        "[[routes]]\nname = \"r\"\nhost = \"*\"\nupstream = \"app\"\nmiddleware = [\"limit\"]\n",
    ));
    wait_joined(std::slice::from_ref(&p)).await;
    assert_eq!(redis.cli(&["HSET", "t:rl:limit:100000000000:3:127.0.0.1", "a", "b"]), "1");
    // Local fallback for this client: its own burst of 3.
    assert_eq!(statuses(&p, "/", 4, Duration::from_secs(5)).await, [200, 200, 200, 429]);
    let m = get(&p.admin_url("/metrics"), "a").await.text();
    assert!(m.contains("rampart_cluster_store_errors_total{operation=\"ratelimit\"} 4"), "{m}");
    assert!(p.log_lines(&["cluster store unreachable"]).is_empty(), "one key's error took the store down");
    assert_eq!(cluster_status(&p).await["up"], true);
}
