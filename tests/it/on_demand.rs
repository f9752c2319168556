//! On-demand TLS against a real Pebble: the ask endpoint is a test upstream
//! allowing names that start with "ok"; a handshake for an allowed name gets
//! a Pebble certificate inside its own wait, a refused name never reaches
//! Pebble (and is asked about once), and a flood of random names stays
//! within max_per_hour asks and orders.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::acme_util::{logged, AcmeSetup};
use crate::tls_util::*;
use crate::util::*;

/// The ACME setup, plus the ask endpoint and the names it was asked about.
struct Setup {
    acme: AcmeSetup,
    ask: Upstream,
    asked: Arc<Mutex<Vec<String>>>,
}

impl std::ops::Deref for Setup {
    type Target = AcmeSetup;
    fn deref(&self) -> &AcmeSetup {
        &self.acme
    }
}

impl Setup {
    async fn new() -> Setup {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&asked);
        let ask = Upstream::start(move |req: Request<Incoming>| {
            let log = Arc::clone(&log);
            async move {
                let q = req.uri().query().unwrap_or_default().to_string();
                let domain = q.strip_prefix("domain=").unwrap_or_default().to_string();
                log.lock().unwrap().push(domain.clone());
                let status = if domain.starts_with("ok") { StatusCode::OK } else { StatusCode::FORBIDDEN };
                let mut r = Response::new(full(""));
                *r.status_mut() = status;
                r
            }
        })
        .await;
        Setup { acme: AcmeSetup::new().await, ask, asked }
    }

    fn start(&self, wait: &str, max_per_hour: u32) -> Proxy {
        let on_demand = format!(
            "[acme.on_demand]\nask = \"http://{}/api/domains/allowed\"\nwait = \"{wait}\"\nmax_per_hour = {max_per_hour}\n\n\
             [[routes]]\nhost = \"*.shop.test\"\nupstream = \"app\"\n",
            self.ask.addr
        );
        Proxy::start(&self.acme.config("tls-alpn-01", "", &on_demand))
    }

    fn asked(&self, name: &str) -> usize {
        self.asked.lock().unwrap().iter().filter(|d| *d == name).count()
    }
}

fn metric(text: &str, result: &str) -> u64 {
    let prefix = format!("rampart_acme_on_demand_total{{result=\"{result}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.trim().parse().unwrap()).unwrap_or(0)
}

fn orders(p: &Proxy) -> Vec<String> {
    logged(p, "ordering certificate").iter().map(|v| v["fields"]["domain"].to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_names_get_a_certificate_in_the_handshake_and_refused_ones_never_reach_the_ca() {
    let s = Setup::new().await;
    let root = s.pebble.root().await;
    let p = s.start("8s", 10);

    // One handshake, trusting only Pebble's root: it waits for the order.
    let cfg = client_config(Some(std::slice::from_ref(&root)), &[b"http/1.1"]);
    let h = handshake_with(cfg, s.https, "ok1.shop.test").await.unwrap_or_else(|e| {
        panic!("{e}\nproxy:\n{}\npebble:\n{}", p.stderr.lock().unwrap().join("\n"), s.pebble.log())
    });
    assert_eq!(h.info.names, ["ok1.shop.test"]);
    assert_eq!(s.asked("ok1.shop.test"), 1);

    // Refused: the fallback at once, asked once however often it comes.
    for _ in 0..3 {
        let h = handshake(s.https, "no1.shop.test").await.unwrap();
        assert!(!h.info.names.contains(&"no1.shop.test".to_string()), "{:?}", h.info.names);
    }
    assert_eq!(s.asked("no1.shop.test"), 1);
    // Not a route host: never asked.
    let _ = handshake(s.https, "ok.elsewhere.test").await;
    assert_eq!(s.asked("ok.elsewhere.test"), 0);

    let log = s.pebble.log();
    assert!(log.contains("ok1.shop.test"), "Pebble's log names the orders it got:\n{log}");
    assert!(!log.contains("no1.shop.test") && !log.contains("elsewhere"), "{log}");
    assert_eq!(orders(&p), ["\"ok1.shop.test\""]);

    let text = get(&p.admin_url("/metrics"), "admin").await.text();
    assert_eq!((metric(&text, "issued"), metric(&text, "refused"), metric(&text, "limited")), (1, 1, 0), "{text}");
    let status = status(&p).await;
    let names = &status["on_demand"]["names"];
    assert_eq!(names[0], serde_json::json!({"name": "no1.shop.test", "state": "refused"}), "{status}");
    assert_eq!(names[1], serde_json::json!({"name": "ok1.shop.test", "state": "allowed"}), "{status}");
    let page = get(&p.admin_url("/"), "admin").await.text();
    assert!(page.contains("On-demand TLS") && page.contains("od-names"), "the status page lists on-demand names");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_names_stays_within_max_per_hour() {
    let s = Setup::new().await;
    let p = s.start("1s", 3);
    for i in 0..30 {
        let name = format!("ok-{i}-{}.shop.test", std::process::id());
        let _ = handshake(s.https, &name).await;
    }
    assert_eq!(s.asked.lock().unwrap().len(), 3, "asked: {:?}", s.asked.lock().unwrap());
    let text = get(&p.admin_url("/metrics"), "admin").await.text();
    assert_eq!(metric(&text, "limited"), 27, "{text}");
    assert!(eventually(Duration::from_secs(30), || orders(&p).len() == 3).await);
    // The three allowed names get their certificates; no other order came.
    assert!(eventually(Duration::from_secs(60), || { logged(&p, "certificate issued").len() == 3 }).await);
    assert_eq!(orders(&p).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_endpoint_that_cannot_be_reached_is_reported_as_failed_not_refused() {
    let acme = AcmeSetup::new().await;
    let on_demand = format!(
        "[acme.on_demand]\nask = \"http://{}/allowed\"\nwait = \"1s\"\nmax_per_hour = 10\n\n\
         [[routes]]\nhost = \"*.shop.test\"\nupstream = \"app\"\n",
        closed_port()
    );
    let p = Proxy::start(&acme.config("tls-alpn-01", "", &on_demand));
    let h = handshake(acme.https, "ok1.shop.test").await.unwrap();
    assert!(!h.info.names.contains(&"ok1.shop.test".to_string()), "{:?}", h.info.names);

    let text = get(&p.admin_url("/metrics"), "admin").await.text();
    assert_eq!((metric(&text, "failed"), metric(&text, "refused")), (1, 0), "{text}");
    let status = status(&p).await;
    let names = &status["on_demand"]["names"];
    assert_eq!(names[0], serde_json::json!({"name": "ok1.shop.test", "state": "ask_failed"}), "{status}");
    assert!(orders(&p).is_empty());
}
