//! Pools: round-robin and least-connections over real upstreams.

use std::sync::Arc;
use std::time::Duration;

use http::Response;
use tokio::sync::Notify;

use crate::util::*;

#[tokio::test]
async fn smooth_weighted_round_robin_distributes_exactly() {
    let (a, b, c) = (Upstream::named("a").await, Upstream::named("b").await, Upstream::named("c").await);
    let p = Proxy::start(&format!(
        "[upstreams.app]\nservers = [\"{}\", {{ addr = \"{}\", weight = 2 }}, {{ addr = \"{}\", weight = 3 }}]\n[[routes]]\nupstream = \"app\"\n",
        a.addr, b.addr, c.addr
    ));
    let mut seq = String::new();
    for _ in 0..60 {
        seq.push_str(&get(&p.url("/"), "x").await.text());
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (10, 20, 30));
    // Smooth: nginx's interleaving for weights 1,2,3 repeats every 6 picks.
    assert_eq!(&seq[..6], "cbacbc");
    assert!(seq.as_bytes().chunks(6).all(|w| w == b"cbacbc"), "{seq}");
}

#[tokio::test]
async fn least_conn_avoids_a_server_held_busy() {
    let release = Arc::new(Notify::new());
    let r2 = Arc::clone(&release);
    let slow = Upstream::start(move |_req| {
        let r = Arc::clone(&r2);
        async move {
            r.notified().await;
            Response::new(full("slow"))
        }
    })
    .await;
    let fast = Upstream::named("fast").await;
    let p = Proxy::start(&format!(
        "[upstreams.app]\nbalance = \"least_conn\"\nservers = [\"{}\", \"{}\"]\n[[routes]]\nupstream = \"app\"\n",
        slow.addr, fast.addr
    ));
    let mut pending = Vec::new();
    for _ in 0..20 {
        let url = p.url("/");
        let (slow_before, fast_before) = (slow.hits(), fast.hits());
        pending.push(tokio::spawn(async move { get(&url, "x").await.text() }));
        // Wait until one of the servers has taken the request.
        assert!(eventually(Duration::from_secs(10), || slow.hits() > slow_before || fast.hits() > fast_before).await);
        if fast.hits() > fast_before {
            // Let it finish so it no longer counts as in flight.
            let done = pending.pop().unwrap().await.unwrap();
            assert_eq!(done, "fast");
        }
    }
    // The slow server got at most the one request that found both idle.
    assert!(slow.hits() <= 1, "slow server got {} requests", slow.hits());
    assert_eq!(slow.hits() + fast.hits(), 20);
    release.notify_waiters();
    for t in pending {
        assert_eq!(t.await.unwrap(), "slow");
    }
}
