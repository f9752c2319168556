//! Upstream health: active probes, passive ejection, retries, and no failed
//! requests when a server dies.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::util::*;

const FAST_PROBES: &str = "interval = \"200ms\"\ntimeout = \"200ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 2";

fn health_ok(name: &'static str) -> impl Fn(Request<Incoming>) -> std::future::Ready<Response<BoxBody>> + Clone {
    move |_req| std::future::ready(Response::new(full(name)))
}

#[tokio::test]
async fn a_dead_server_leaves_rotation_and_returns_after_recovering() {
    let a = Upstream::named("a").await;
    let b = Upstream::start(health_ok("b")).await;
    let b_addr = b.addr;
    let p = Proxy::start(&format!(
        "[upstreams.app]\nservers = [\"{}\", \"{}\"]\nmax_fails = 0\n[upstreams.app.health]\npath = \"/health\"\n{FAST_PROBES}\n[[routes]]\nupstream = \"app\"\n",
        a.addr, b_addr
    ));
    assert_eq!(server_up(&status(&p).await, "app", b_addr), Some(true));
    b.stop();
    assert!(
        eventually_async(Duration::from_secs(15), || async {
            server_up(&status(&p).await, "app", b_addr) == Some(false)
        })
        .await
    );
    let metrics = get(&p.admin_url("/metrics"), "admin").await.text();
    assert!(
        metrics.contains(&format!("rampart_upstream_server_up{{upstream=\"app\",server=\"{b_addr}\"}} 0")),
        "{metrics}"
    );
    // Out of rotation: every request goes to a.
    for _ in 0..6 {
        assert_eq!(get(&p.url("/"), "x").await.text(), "a");
    }
    // Back after healthy_threshold passing probes.
    let b2 = Upstream::serve_on(rebind(b_addr).await, health_ok("b"));
    assert!(
        eventually_async(Duration::from_secs(15), || async {
            server_up(&status(&p).await, "app", b_addr) == Some(true)
        })
        .await
    );
    let mut seen_b = false;
    for _ in 0..6 {
        seen_b |= get(&p.url("/"), "x").await.text() == "b";
    }
    assert!(seen_b);
    drop(b2);
    // State changes are logged with pool, server, old -> new and a reason.
    let log = p.stderr.lock().unwrap().join("\n");
    assert!(log.contains("upstream server state changed") && log.contains("\"from\":\"up\",\"to\":\"down\""), "{log}");
}

#[tokio::test]
async fn live_traffic_failures_eject_a_server_without_waiting_for_probes() {
    let a = Upstream::named("a").await;
    let dead = closed_port();
    let p = Proxy::start(&format!(
        "[upstreams.app]\nservers = [\"{}\", \"{dead}\"]\nmax_fails = 2\nfail_timeout = \"60s\"\n[[routes]]\nupstream = \"app\"\n",
        a.addr
    ));
    // Connect failures are retried on a, so clients never see them.
    for _ in 0..8 {
        let r = get(&p.url("/"), "x").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "a");
    }
    assert_eq!(server_up(&status(&p).await, "app", dead), Some(false));
    let log = p.stderr.lock().unwrap().join("\n");
    assert!(log.contains("\"to\":\"ejected\""), "{log}");
}

#[tokio::test]
async fn killing_one_of_three_servers_under_load_fails_no_request() {
    let ups = [Upstream::named("a").await, Upstream::named("b").await, Upstream::named("c").await];
    let p = Proxy::start(&format!(
        "[upstreams.app]\nservers = [\"{}\", \"{}\", \"{}\"]\n[upstreams.app.health]\npath = \"/\"\n{FAST_PROBES}\n[[routes]]\nupstream = \"app\"\n",
        ups[0].addr, ups[1].addr, ups[2].addr
    ));
    let url = p.url("/");
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        let done = Arc::clone(&done);
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut failures = Vec::new();
            for _ in 0..300 {
                let a = send(&c, Request::get(&url).header("host", "x").body(full("")).unwrap()).await;
                if a.status != StatusCode::OK {
                    failures.push(format!("{} {}", a.status, a.text()));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    assert!(eventually(Duration::from_secs(30), || done.load(Ordering::Relaxed) >= 200).await);
    ups[1].stop();
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    assert_eq!(done.load(Ordering::Relaxed), 1200);
    assert!(failures.is_empty(), "{} failed requests: {:?}", failures.len(), &failures[..failures.len().min(5)]);
}

#[tokio::test]
async fn a_hanging_server_is_ejected_and_its_requests_get_504() {
    let good = Upstream::named("good").await;
    // Accepts connections and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });
    let p = Proxy::start(&format!(
        "[upstreams.app]\nservers = [\"{}\", \"{hang_addr}\"]\nresponse_timeout = \"300ms\"\nmax_fails = 0\n[upstreams.app.health]\npath = \"/\"\n{FAST_PROBES}\n[[routes]]\nupstream = \"app\"\n",
        good.addr
    ));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(&p.url("/"), "x").await.status);
    }
    // Requests that went to the hanging server timed out cleanly.
    assert!(statuses.iter().all(|s| *s == StatusCode::OK || *s == StatusCode::GATEWAY_TIMEOUT), "{statuses:?}");
    assert!(statuses.contains(&StatusCode::GATEWAY_TIMEOUT), "{statuses:?}");
    assert!(
        eventually_async(Duration::from_secs(15), || async {
            server_up(&status(&p).await, "app", hang_addr) == Some(false)
        })
        .await
    );
    for _ in 0..6 {
        assert_eq!(get(&p.url("/"), "x").await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn all_servers_down_is_503_with_retry_after() {
    let a = Upstream::named("a").await;
    let a_addr = a.addr;
    let p = Proxy::start(&format!(
        "[upstreams.app]\nservers = [\"{a_addr}\"]\n[upstreams.app.health]\npath = \"/\"\n{FAST_PROBES}\n[[routes]]\nupstream = \"app\"\n"
    ));
    a.stop();
    assert!(
        eventually_async(Duration::from_secs(15), || async {
            server_up(&status(&p).await, "app", a_addr) == Some(false)
        })
        .await
    );
    let r = get(&p.url("/"), "x").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key("retry-after"));
    assert!(r.text().contains("no upstream server available"));
}

#[tokio::test]
async fn probes_follow_reloads_and_state_survives_them() {
    let keep = Upstream::named("keep").await;
    let down = Upstream::named("down").await;
    let down_addr = down.addr;
    let gone = Upstream::named("gone").await;
    let cfg = |with_gone: bool| {
        let mut s = format!(
            "[upstreams.app]\nservers = [\"{}\", \"{down_addr}\"]\n[upstreams.app.health]\npath = \"/\"\n{FAST_PROBES}\n[[routes]]\nupstream = \"app\"\n",
            keep.addr
        );
        if with_gone {
            s.push_str(&format!("[upstreams.old]\nservers = [\"{}\"]\n[upstreams.old.health]\npath = \"/\"\n{FAST_PROBES}\n[[routes]]\npath = \"/old\"\nupstream = \"old\"\n", gone.addr));
        }
        s
    };
    let p = Proxy::start(&cfg(true));
    assert!(eventually(Duration::from_secs(10), || gone.hits() >= 2).await, "old pool is probed");
    down.stop();
    assert!(
        eventually_async(Duration::from_secs(15), || async {
            server_up(&status(&p).await, "app", down_addr) == Some(false)
        })
        .await
    );

    std::fs::write(p.config_path(), format!("{}{}", LISTEN, cfg(false))).unwrap();
    let r = post_reload(&p).await;
    // The listen section is unchanged (ephemeral ports are written the same way).
    assert_eq!(r.status, 200, "{}", r.text());
    // The server that stays keeps its state: still down right after the reload.
    assert_eq!(server_up(&status(&p).await, "app", down_addr), Some(false));
    // The removed pool is no longer probed.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = gone.hits();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(gone.hits(), after, "probes of the removed pool kept running");
}

/// A server live traffic ejected and a passing probe brought back is
/// logged coming back, as one a request brought back is. (Two servers:
/// live traffic never ejects a pool's only one.)
#[tokio::test]
async fn a_probe_that_ends_an_ejection_is_logged() {
    let slow_on_request = |req: hyper::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        hyper::Response::new(full("ok"))
    };
    let up = Upstream::start(slow_on_request).await;
    let other = Upstream::start(slow_on_request).await;
    let p = Proxy::start(&format!(
        "[upstreams.app]\nservers = [\"{}\", \"{}\"]\nresponse_timeout = \"300ms\"\nmax_fails = 1\nfail_timeout = \"60s\"\n\
         [upstreams.app.health]\npath = \"/health\"\n{FAST_PROBES}\n[[routes]]\nupstream = \"app\"\n",
        up.addr, other.addr
    ));
    assert_eq!(get(&p.url("/slow"), "x").await.status, StatusCode::GATEWAY_TIMEOUT);
    let logged = |to: &str| p.stderr.lock().unwrap().iter().any(|l| l.contains(to));
    assert!(eventually(Duration::from_secs(5), || logged("\"to\":\"ejected\"")).await);
    assert!(
        eventually(Duration::from_secs(10), || logged(
            "\"from\":\"ejected\",\"to\":\"up\",\"reason\":\"passing probe\""
        ))
        .await,
        "{}",
        p.stderr.lock().unwrap().join("\n")
    );
    assert_eq!(get(&p.url("/"), "x").await.status, StatusCode::OK);
}
