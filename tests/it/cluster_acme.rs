//! Shared ACME through `[cluster]`, against a real Pebble and a real Redis,
//! with real instances on 127.0.0.1-4 sharing the same ports. Pebble
//! validates on 127.0.0.1, where the first instance listens: it routes no
//! ACME host of its own (host "*"), so every challenge it answers was
//! created by another instance. One order per name across the instances,
//! the certificate served by all, a forced renewal done by exactly one,
//! a Redis restart that loses nothing, and an instance started while Redis
//! is down serving its local copy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::acme_util::{logged, poll_cert, renew_line, AcmeSetup, Root};
use crate::redis_server::RedisServer;
use crate::util::*;

const DOMAIN: &str = "shared.rampart.test";

/// The ACME setup (its HTTP and HTTPS ports shared by every instance, each
/// on its own address) and Redis.
struct Setup {
    acme: AcmeSetup,
    redis: RedisServer,
}

impl std::ops::Deref for Setup {
    type Target = AcmeSetup;
    fn deref(&self) -> &AcmeSetup {
        &self.acme
    }
}

impl Setup {
    async fn new() -> Setup {
        Setup { acme: AcmeSetup::new().await, redis: RedisServer::start() }
    }

    /// Instance `n` on 127.0.0.n; `host` is its route's host.
    fn start(&self, n: u8, certs: &std::path::Path, challenge: &str, host: &str, renew: Option<&str>) -> Proxy {
        let rest = format!(
            "[cluster]\nredis = \"{}\"\nkey_prefix = \"c:\"\ntimeout = \"2s\"\n\n\
             [[routes]]\nhost = \"{host}\"\nupstream = \"app\"\n",
            self.redis.url()
        );
        Proxy::start(&self.acme.config_on(&format!("127.0.0.{n}"), certs, challenge, &renew_line(renew), &rest))
    }

    fn https(&self, n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, n], self.acme.https.port()))
    }
}

/// The serial instance `n` serves for DOMAIN once `want` accepts it.
async fn served(s: &Setup, n: u8, root: &Root, within: Duration, want: impl Fn(&str) -> bool) -> String {
    let context = || format!("instance {n}; pebble:\n{}", s.pebble.log());
    poll_cert(s.https(n), DOMAIN, root, within, |h| want(&h.info.serial), context).await.info.serial
}

async fn one_order_across_the_cluster(challenge: &str) {
    let mut s = Setup::new().await;
    let root = s.pebble.root().await;
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    // The instance Pebble talks to, with no ACME host of its own.
    let responder = s.start(1, dirs[1].path(), challenge, "*", None);
    let b = s.start(2, dirs[2].path(), challenge, DOMAIN, None);
    let c = s.start(3, dirs[3].path(), challenge, DOMAIN, None);

    let first = served(&s, 2, &root, Duration::from_secs(60), |_| true).await;
    let t = Instant::now();
    assert_eq!(served(&s, 3, &root, Duration::from_secs(5), |x| x == first).await, first);
    eprintln!("{challenge}: the second instance served the certificate {:?} after the first", t.elapsed());
    assert_eq!(s.pebble.orders(), 1, "one order for the name across the instances:\n{}", s.pebble.log());
    assert_eq!(logged(&b, "ordering certificate").len() + logged(&c, "ordering certificate").len(), 1);
    assert!(
        !logged(&responder, "answering another instance's ACME challenge").is_empty(),
        "Pebble's check went to the responder"
    );
    assert_eq!(logged(&responder, "ordering certificate").len(), 0);
    // Both keep a local copy.
    let slug = s.pebble.slug();
    for d in [&dirs[2], &dirs[3]] {
        assert!(s.pebble.stored(d.path(), &format!("{DOMAIN}.crt")).exists());
    }

    // Redis restarted (its append-only file kept): nothing lost. A new
    // instance with an empty certs_dir gets the certificate from it.
    s.redis.restart();
    let d = s.start(4, dirs[4].path(), challenge, DOMAIN, None);
    assert_eq!(served(&s, 4, &root, Duration::from_secs(15), |_| true).await, first);
    assert_eq!(s.pebble.orders(), 1);
    drop(d);

    // Forced renewal on both (the stored one made to look 11 minutes old):
    // exactly one orders, both serve the new certificate.
    drop(b);
    drop(c);
    let key = format!("c:acme:{slug}:cert:{DOMAIN}");
    assert_eq!(s.redis.cli(&["HSET", &key, "issued", "0"]), "0");
    let b = s.start(2, dirs[2].path(), challenge, DOMAIN, Some("100000d"));
    let c = s.start(3, dirs[3].path(), challenge, DOMAIN, Some("100000d"));
    let renewed = served(&s, 2, &root, Duration::from_secs(60), |x| x != first).await;
    assert_eq!(served(&s, 3, &root, Duration::from_secs(10), |x| x == renewed).await, renewed);
    // The other one waited for the lock and found the work done.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(s.pebble.orders(), 2, "renewed by exactly one instance:\n{}", s.pebble.log());
    assert_eq!(logged(&b, "ordering certificate").len() + logged(&c, "ordering certificate").len(), 1);
    drop(c);

    // Redis down: an instance started now serves its local copy.
    s.redis.kill();
    let c = s.start(3, dirs[3].path(), challenge, DOMAIN, None);
    assert_eq!(served(&s, 3, &root, Duration::from_secs(10), |_| true).await, renewed);
    assert_eq!(status(&c).await["cluster"]["up"], false);
    assert_eq!(s.pebble.orders(), 2);
    drop(responder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_one_order_answered_by_another_instance() {
    one_order_across_the_cluster("tls-alpn-01").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_one_order_answered_by_another_instance() {
    one_order_across_the_cluster("http-01").await;
}
