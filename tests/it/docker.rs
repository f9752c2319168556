//! Docker discovery against a real engine (tests/it/engine.rs): labelled
//! containers join pools and routes as they start, share traffic, leave as
//! they stop or turn unhealthy, bad labels are reported and skipped, and an
//! engine restart loses nothing. Reached three ways: `DOCKER_HOST`,
//! `endpoint = "tcp://..."` through a socket proxy, `endpoint = "unix://..."`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::BodyExt;

use crate::engine::{engine, site, skip, Engine, USE};
use crate::util::{client, eventually_async, full, get, status, Proxy, Upstream};

/// The servers `/api/status` lists for `pool`.
async fn servers(p: &Proxy, pool: &str) -> Vec<String> {
    let s = status(p).await;
    let Some(u) = s["upstreams"].as_array().and_then(|a| a.iter().find(|u| u["name"] == pool)) else {
        return vec![];
    };
    u["servers"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["addr"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

async fn body(p: &Proxy, host: &str) -> String {
    get(&p.url("/"), host).await.text()
}

fn labels<'a>(pool: &'a str, host: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("rampart.enable", "true"),
        ("rampart.upstream", pool),
        ("rampart.port", "8080"),
        ("rampart.routes.site.host", host),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_replicas_join_share_traffic_and_a_stopped_one_leaves_without_failed_requests() {
    let e = match engine() {
        Ok(e) => e,
        Err(why) => return skip("docker_replicas_join_share_traffic", &why),
    };
    let _shared = USE.read().await;
    // Found through DOCKER_HOST; the file's pool keeps its settings.
    let docker_host = format!("unix://{}", e.socket.display());
    let p = Proxy::start_in_env(
        tempfile::tempdir().unwrap(),
        "[providers.docker]\n[upstreams.web]\nconnect_timeout = \"1s\"\nretries = 2\n",
        &[("DOCKER_HOST", &docker_host)],
    );
    let sites: Vec<_> = (1..=3).map(|i| site(&format!("a-{i}"))).collect();
    let names = ["a-1", "a-2", "a-3"];
    e.run(names[0], sites[0].path(), &labels("web", "web.test"), &[]).unwrap();
    let started = Instant::now();
    assert!(
        eventually_async(Duration::from_secs(20), || async { body(&p, "web.test").await == "a-1" }).await,
        "the labelled container never got traffic"
    );
    eprintln!("a-1 answered through the proxy {:?} after `docker run` returned", started.elapsed());

    for i in 1..3 {
        e.run(names[i], sites[i].path(), &labels("web", "web.test"), &[]).unwrap();
    }
    assert!(eventually_async(Duration::from_secs(20), || async { servers(&p, "web").await.len() == 3 }).await);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..60 {
        *seen.entry(body(&p, "web.test").await).or_default() += 1;
    }
    // Round-robin over three equal servers.
    for n in names {
        assert_eq!(seen.get(n), Some(&20), "{seen:?}");
    }

    // Load while one replica stops: every GET answered 200.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let url = p.url("/");
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed), url.clone());
        load.push(tokio::spawn(async move {
            let c = client();
            let deadline = Instant::now() + Duration::from_secs(60);
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let req = Request::get(&url).header("host", "web.test").body(full("")).unwrap();
                let answer = tokio::time::timeout(Duration::from_secs(20), c.request(req)).await;
                match answer {
                    Ok(Ok(r)) if r.status() == 200 => {
                        let _ = r.into_body().collect().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("failed GET: {:?}", other.map(|r| r.map(|r| r.status())));
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_stop = ok.load(Ordering::Relaxed);
    let stopper = e.docker(&["stop", "-t", "5", names[1]]);
    stopper.unwrap();
    assert!(eventually_async(Duration::from_secs(20), || async { servers(&p, "web").await.len() == 2 }).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("under load: {ok} GETs answered 200 ({before_stop} before the stop), {failed} failed");
    assert!(ok > before_stop, "load kept going through the stop");
    assert_eq!(failed, 0);
    for _ in 0..20 {
        assert_ne!(body(&p, "web.test").await, "a-2", "a stopped replica got a request");
    }
    e.remove(&names);
}

/// A socket proxy in front of the engine: TCP on loopback to its unix socket.
async fn tcp_socket_proxy(e: &Engine) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let socket = e.socket.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let socket = socket.clone();
            tokio::spawn(async move {
                if let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_container_that_turns_unhealthy_stops_getting_traffic() {
    let e = match engine() {
        Ok(e) => e,
        Err(why) => return skip("docker_container_that_turns_unhealthy_stops_getting_traffic", &why),
    };
    let _shared = USE.read().await;
    let endpoint = tcp_socket_proxy(e).await;
    let p = Proxy::start(&format!("[providers.docker]\nendpoint = \"tcp://{endpoint}\"\n"));
    let health = [
        "--health-cmd",
        "test -f /www/ok",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "--health-timeout",
        "1s",
    ];
    let sites = [site("b-1"), site("b-2")];
    for (i, s) in sites.iter().enumerate() {
        std::fs::write(s.path().join("ok"), "").unwrap();
        e.run(&format!("b-{}", i + 1), s.path(), &labels("health", "health.test"), &health).unwrap();
    }
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    let both = eventually_async(Duration::from_secs(30), || async {
        let b = body(&p, "health.test").await;
        let mut seen = seen.lock().unwrap();
        seen.insert(b);
        seen.contains("b-1") && seen.contains("b-2")
    })
    .await;
    let seen = seen.into_inner().unwrap();
    assert!(both, "both healthy replicas get traffic: {seen:?}");
    let s = status(&p).await;
    let docker = &s["providers"]["docker"];
    assert_eq!(docker["up"], true, "{docker}");
    assert_eq!(docker["source"], format!("tcp://{endpoint}"));
    assert!(docker["detail"]["api_version"].as_str().is_some_and(|v| v.starts_with("1.")), "{docker}");
    let origins: Vec<String> = s["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["name"] == "health")
        .flat_map(|u| u["servers"].as_array().unwrap().iter().map(|s| s["origin"].as_str().unwrap_or("").to_string()))
        .collect();
    assert!(origins.contains(&"docker:b-2".to_string()), "{origins:?}");

    std::fs::remove_file(sites[1].path().join("ok")).unwrap();
    assert!(eventually_async(Duration::from_secs(30), || async { servers(&p, "health").await.len() == 1 }).await);
    for _ in 0..20 {
        assert_eq!(body(&p, "health.test").await, "b-1");
    }
    e.remove(&["b-1", "b-2"]);
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn provider_up(p: &Proxy) -> Option<f64> {
    metric(&get(&p.admin_url("/metrics"), "admin").await.text(), "rampart_provider_up{provider=\"docker\"}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_bad_label_is_skipped_and_an_engine_restart_loses_nothing() {
    let e = match engine() {
        Ok(e) => e,
        Err(why) => return skip("docker_bad_label_is_skipped_and_an_engine_restart_loses_nothing", &why),
    };
    // This test stops the shared engine: no other may use it meanwhile.
    let _alone = USE.write().await;
    let file = Upstream::named("file").await;
    let p = Proxy::start(&format!(
        "[providers.docker]\nendpoint = \"unix://{}\"\n[upstreams.file]\nservers = [\"{}\"]\n[[routes]]\nhost = \"file.test\"\nupstream = \"file\"\n",
        e.socket.display(),
        file.addr
    ));
    let (good, bad) = (site("c-good"), site("c-bad"));
    e.run("c-good", good.path(), &labels("good", "good.test"), &[]).unwrap();
    let mut bad_labels = labels("bad", "bad.test");
    bad_labels[2] = ("rampart.port", "http");
    e.run("c-bad", bad.path(), &bad_labels, &[]).unwrap();
    assert!(eventually_async(Duration::from_secs(20), || async { body(&p, "good.test").await == "c-good" }).await);
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            !p.log_lines(&["c-bad", "rampart.port", "skipped"]).is_empty()
        })
        .await,
        "the bad label is logged with the container and the key"
    );
    let s = status(&p).await;
    let skipped = s["providers"]["docker"]["detail"]["skipped"].to_string();
    assert!(skipped.contains("c-bad") && skipped.contains("rampart.port"), "{skipped}");
    assert_eq!(get(&p.url("/"), "bad.test").await.status, 404, "the bad container's route is not there");
    assert_eq!(provider_up(&p).await, Some(1.0));
    let s = status(&p).await;
    assert_eq!(
        (s["last_reload"]["ok"].as_bool(), s["last_reload"]["trigger"].as_str()),
        (Some(true), Some("discovery"))
    );

    // A broken edit of the file is refused; discovery goes on over the
    // file's last good config without hiding that refusal.
    let good_file = std::fs::read_to_string(p.config_path()).unwrap();
    std::fs::write(
        p.config_path(),
        format!(
            "{good_file}
[[routes]]
upstream = \"nowhere\"
"
        ),
    )
    .unwrap();
    assert_eq!(crate::util::post_reload(&p).await.status, 422);
    let late = site("c-late");
    let late_labels = [("rampart.enable", "true"), ("rampart.port", "8080"), ("rampart.routes.late.host", "late.test")];
    e.run("c-late", late.path(), &late_labels, &[]).unwrap();
    assert!(
        eventually_async(Duration::from_secs(20), || async { body(&p, "late.test").await == "c-late" }).await,
        "{}",
        p.stderr.lock().unwrap().join("\n")
    );
    let s = status(&p).await;
    assert_eq!(s["last_reload"]["ok"], false, "{}", s["last_reload"]);
    assert_eq!(body(&p, "file.test").await, "file");
    std::fs::write(p.config_path(), &good_file).unwrap();
    assert!(
        eventually_async(Duration::from_secs(20), || async { status(&p).await["last_reload"]["ok"] == true }).await
    );

    // A file reload that leaves a container out shows on the status page at
    // once, not at the next Docker event.
    let clash = format!("{good_file}\n[[routes]]\nhost = \"good.test\"\nupstream = \"file\"\n");
    std::fs::write(p.config_path(), &clash).unwrap();
    assert_eq!(crate::util::post_reload(&p).await.status, 200);
    let skipped = status(&p).await["providers"]["docker"]["detail"]["skipped"].to_string();
    assert!(skipped.contains("c-good"), "{skipped}");
    // [providers] is read at start only, as the reload's warning says: a
    // file without the table keeps reading the labels as before.
    let endpoint = format!("[providers.docker]\nendpoint = \"unix://{}\"\n", e.socket.display());
    std::fs::write(p.config_path(), good_file.replace(&endpoint, "")).unwrap();
    assert_eq!(crate::util::post_reload(&p).await.status, 200);
    assert_eq!(body(&p, "good.test").await, "c-good");
    let skipped = status(&p).await["providers"]["docker"]["detail"]["skipped"].to_string();
    assert!(!skipped.contains("c-good") && skipped.contains("c-bad"), "{skipped}");
    assert!(!p.log_lines(&["read at start only", "[providers]"]).is_empty());
    std::fs::write(p.config_path(), &good_file).unwrap();
    assert_eq!(crate::util::post_reload(&p).await.status, 200);
    let failures = |text: &str| metric(text, "rampart_config_reloads_total{result=\"failure\"}");
    let failed_before = failures(&get(&p.admin_url("/metrics"), "admin").await.text());

    e.stop();
    assert!(eventually_async(Duration::from_secs(20), || async { provider_up(&p).await == Some(0.0) }).await);
    let s = status(&p).await;
    assert!(s["providers"]["docker"]["last_error"].is_string(), "{}", s["providers"]);
    // The engine is down: the file's routes and the containers last seen
    // (still running: live-restore) keep serving.
    for _ in 0..10 {
        assert_eq!(body(&p, "file.test").await, "file");
        assert_eq!(body(&p, "good.test").await, "c-good");
    }
    e.restart().unwrap();
    assert!(eventually_async(Duration::from_secs(60), || async { provider_up(&p).await == Some(1.0) }).await);
    assert_eq!(servers(&p, "good").await.len(), 1);
    for _ in 0..10 {
        assert_eq!(body(&p, "good.test").await, "c-good");
        assert_eq!(body(&p, "file.test").await, "file");
    }
    let metrics = get(&p.admin_url("/metrics"), "admin").await.text();
    assert_eq!(failures(&metrics), failed_before, "the engine's restart failed no reload");
    e.remove(&["c-good", "c-bad", "c-late"]);
}
