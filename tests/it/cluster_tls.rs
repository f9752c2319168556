//! `[cluster]` over TLS: `rediss://` to a real redis-server that serves TLS
//! only, its certificate signed by a private CA that the instances trust
//! through `RAMPART_REDIS_CA_FILE`, the password from
//! `RAMPART_REDIS_PASSWORD`. An instance given the wrong CA reports the
//! cluster down and keeps serving.

use std::time::Duration;

use http::{Request, StatusCode};

use crate::redis_server::RedisServer;
use crate::tls_util::TestCa;
use crate::util::*;

async fn cluster_status(p: &Proxy) -> serde_json::Value {
    status(p).await["cluster"].clone()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

/// Send `n` GETs for `/` to `p`, one at a time; the status codes.
async fn statuses(p: &Proxy, n: usize) -> Vec<StatusCode> {
    let c = client();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(send(&c, Request::get(p.url("/")).header("host", "a").body(full("")).unwrap()).await.status);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rediss_with_a_private_ca_shares_a_limit_and_a_wrong_ca_is_down_but_serving() {
    let redis = RedisServer::start_tls(Some("tls-pw"));
    assert!(redis.url().starts_with("rediss://127.0.0.1:"), "{}", redis.url());
    let ca_file = redis.ca_file.clone().unwrap();
    let ca_file = ca_file.to_str().unwrap();
    let other = tempfile::tempdir().unwrap();
    let wrong_ca = other.path().join("other-ca.pem");
    std::fs::write(&wrong_ca, TestCa::new("some other CA").pem()).unwrap();
    let up = Upstream::named("ok").await;
    // Refill is one token per 100 s: what passes is the burst of 10 shared
    // by the instances, however long the run takes (local buckets: 10 each).
    // The generous timeouts are for a loaded machine: a connection attempt
    // that timed out would be logged instead of the certificate's refusal
    // (the log has the first failure of an outage only).
    let config = |i: u8| {
        format!(
            "[listen]\nhttp = \"127.0.0.{i}:0\"\nadmin = \"127.0.0.{i}:0\"\n\
             [cluster]\nredis = \"{}\"\nkey_prefix = \"tls:\"\ntimeout = \"5s\"\nconnect_timeout = \"10s\"\n\
             [upstreams.app]\nservers = [\"{}\"]\n\
             [middleware.limit]\ntype = \"rate_limit\"\nscope = \"cluster\"\naverage = 0.01\nburst = 10\n\
             [[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"app\"\nmiddleware = [\"limit\"]\n",
            redis.url(),
            up.addr
        )
    };
    let env = [("RAMPART_REDIS_PASSWORD", "tls-pw"), ("RAMPART_REDIS_CA_FILE", ca_file)];
    let a = Proxy::start_in_env(tempfile::tempdir().unwrap(), &config(1), &env);
    let b = Proxy::start_in_env(tempfile::tempdir().unwrap(), &config(2), &env);
    let wrong = Proxy::start_in_env(
        tempfile::tempdir().unwrap(),
        &config(3),
        &[("RAMPART_REDIS_PASSWORD", "tls-pw"), ("RAMPART_REDIS_CA_FILE", wrong_ca.to_str().unwrap())],
    );

    // Both instances with the right CA reach Redis and see each other.
    for p in [&a, &b] {
        let joined = eventually_async(Duration::from_secs(40), || async {
            let c = cluster_status(p).await;
            c["up"] == true && c["instances"].as_array().map_or(0, |l| l.len()) == 2
        })
        .await;
        assert!(joined, "instance {} never joined over TLS: {}", p.http, cluster_status(p).await);
    }
    let sa = cluster_status(&a).await;
    let sb = cluster_status(&b).await;
    assert_eq!(sa["redis"], redis.url());
    let listed: Vec<&str> = sa["instances"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert!(listed.contains(&sa["instance"].as_str().unwrap()) && listed.contains(&sb["instance"].as_str().unwrap()));
    let sw = cluster_status(&wrong).await;
    assert!(!listed.contains(&sw["instance"].as_str().unwrap()), "the wrong-CA instance joined: {sa}");

    // One shared bucket: 30 requests alternating between the two instances.
    let mut codes = Vec::new();
    for _ in 0..15 {
        codes.extend(statuses(&a, 1).await);
        codes.extend(statuses(&b, 1).await);
    }
    let ok = codes.iter().filter(|&&s| s == StatusCode::OK).count();
    let limited = codes.iter().filter(|&&s| s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((ok, limited), (10, 20), "{codes:?}");
    assert_eq!(up.hits(), 10);
    for p in [&a, &b] {
        let m = get(&p.admin_url("/metrics"), "a").await.text();
        assert_eq!(metric(&m, "rampart_cluster_up "), 1.0, "{m}");
        assert_eq!(metric(&m, "rampart_cluster_store_errors_total{operation=\"ratelimit\"} "), 0.0, "{m}");
    }
    // The state is in this Redis, read back over TLS with the same CA.
    assert_eq!(redis.cli(&["HLEN", "tls:instances"]), "2");
    assert_eq!(redis.cli(&["EXISTS", "tls:rl:limit:100000000000:10:127.0.0.1"]), "1");

    // The wrong CA: the handshake fails, the cluster is down, traffic is
    // served from this instance's own bucket (on_store_error = "local").
    let refused = eventually_async(Duration::from_secs(40), || async {
        !wrong.log_lines(&["cluster store", "invalid peer certificate"]).is_empty()
    })
    .await;
    if !refused {
        let m = get(&wrong.admin_url("/metrics"), "a").await.text();
        let m: Vec<&str> = m.lines().filter(|l| l.starts_with("rampart_cluster")).collect();
        let status = cluster_status(&wrong).await;
        let log = wrong.stderr.lock().unwrap().join("\n");
        panic!("no certificate error logged: {log}\n{m:?}\n{status}");
    }
    let c = cluster_status(&wrong).await;
    assert_eq!(c["up"], false, "{c}");
    assert_eq!(statuses(&wrong, 5).await, vec![StatusCode::OK; 5]);
    assert_eq!(up.hits(), 15);
    let m = get(&wrong.admin_url("/metrics"), "a").await.text();
    assert_eq!(metric(&m, "rampart_cluster_up "), 0.0, "{m}");
    assert!(metric(&m, "rampart_cluster_store_errors_total{operation=\"connect\"} ") >= 1.0, "{m}");
    for p in [&a, &b, &wrong] {
        assert!(!p.stderr.lock().unwrap().join("\n").contains("tls-pw"), "the password reached the log");
    }
}
