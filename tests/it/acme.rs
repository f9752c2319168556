//! ACME against a real Pebble: issuance over TLS-ALPN-01 and HTTP-01, a
//! client trusting Pebble's root completes the handshake, a restart loads
//! the stored certificate without a new order, forced renewal changes the
//! serial, and a CA outage during renewal keeps the old certificate until
//! the CA is back; a host added by a reload gets its certificate too, and
//! a static certificate a reload adds or removes takes the host from ACME
//! or gives it back.

use std::path::Path;
use std::time::Duration;

use crate::acme_util::{logged, renew_line, wait_for_cert, wait_logged, AcmeSetup};
use crate::tls_util::*;
use crate::util::*;

fn config(s: &AcmeSetup, domain: &str, challenge: &str, renew_before: Option<&str>) -> String {
    let acme = format!("email = \"ops@example.com\"\n{}", renew_line(renew_before));
    s.config(challenge, &acme, &format!("[[routes]]\nhost = \"{domain}\"\nupstream = \"app\"\n"))
}

fn start(s: &AcmeSetup, domain: &str, challenge: &str, renew_before: Option<&str>) -> Proxy {
    Proxy::start(&config(s, domain, challenge, renew_before))
}

#[cfg(unix)]
fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issues_persists_and_renews() {
    let s = AcmeSetup::new().await;
    let domain = "alpn.rampart.test";
    let root = s.pebble.root().await;

    let p = start(&s, domain, "tls-alpn-01", None);
    let first = wait_for_cert(&s, &p, domain, &root, Duration::from_secs(60), |_| true).await;
    assert_eq!(first.info.names, [domain]);
    #[cfg(unix)]
    {
        assert_private(&s.stored("account.key"));
        assert_private(&s.stored(&format!("{domain}.key")));
        assert_private(&s.stored(&format!("{domain}.crt")));
    }
    let metrics = get(&p.admin_url("/metrics"), "admin").await.text();
    assert!(metrics.contains(&format!("rampart_certificate_expiry_timestamp_seconds{{domain=\"{domain}\"}}")));
    let account_key = std::fs::read(s.stored("account.key")).unwrap();
    drop(p);

    // Restart: the stored certificate is served at once, no new order.
    let p = start(&s, domain, "tls-alpn-01", None);
    let again = wait_for_cert(&s, &p, domain, &root, Duration::from_secs(5), |_| true).await;
    assert_eq!(again.info.serial, first.info.serial);
    let next = wait_logged(&p, "next certificate order scheduled", Duration::from_secs(10)).await;
    assert!(next["fields"]["in_secs"].as_u64().unwrap() > 86_400, "{next}");
    assert!(logged(&p, "ordering certificate").is_empty());
    drop(p);

    // renew_before longer than the certificate's life: renewed right away.
    let p = start(&s, domain, "tls-alpn-01", Some("100000d"));
    let renewed =
        wait_for_cert(&s, &p, domain, &root, Duration::from_secs(60), |h| h.info.serial != first.info.serial).await;
    assert_eq!(renewed.info.names, [domain]);
    assert_eq!(std::fs::read(s.stored("account.key")).unwrap(), account_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_issues_and_renewal_survives_a_ca_outage() {
    let mut s = AcmeSetup::new().await;
    let domain = "http.rampart.test";
    let root = s.pebble.root().await;

    let p = start(&s, domain, "http-01", None);
    let first = wait_for_cert(&s, &p, domain, &root, Duration::from_secs(60), |_| true).await;
    assert_eq!(first.info.names, [domain]);
    // Port 80 now redirects the host to HTTPS.
    let r = get(&format!("http://{}/x?y=1", s.http), domain).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.headers["location"], format!("https://{domain}:{}/x?y=1", s.https.port()).as_str());
    drop(p);

    // The CA is down when renewal comes due: the old certificate stays.
    s.pebble.stop();
    let p = start(&s, domain, "http-01", Some("100000d"));
    wait_logged(&p, "certificate order failed; keeping the current certificate", Duration::from_secs(30)).await;
    let during = handshake(s.https, domain).await.unwrap();
    assert_eq!(during.info.serial, first.info.serial);

    // The CA is back (a new instance, new root): the retry succeeds.
    s.pebble.restart();
    let new_root = s.pebble.root().await;
    let renewed =
        wait_for_cert(&s, &p, domain, &new_root, Duration::from_secs(60), |h| h.info.serial != first.info.serial).await;
    assert_eq!(renewed.info.names, [domain]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_added_by_reload_gets_its_certificate() {
    let s = AcmeSetup::new().await;
    let (first, added) = ("first.rampart.test", "added.rampart.test");
    let root = s.pebble.root().await;
    let p = start(&s, first, "tls-alpn-01", None);
    wait_for_cert(&s, &p, first, &root, Duration::from_secs(60), |_| true).await;

    // Add a route for a new host and reload: ACME orders its certificate
    // without a restart.
    let config =
        format!("{}\n[[routes]]\nhost = \"{added}\"\nupstream = \"app\"\n", config(&s, first, "tls-alpn-01", None));
    std::fs::write(p.config_path(), config).unwrap();
    let r = post_reload(&p).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cert = wait_for_cert(&s, &p, added, &root, Duration::from_secs(60), |_| true).await;
    assert_eq!(cert.info.names, [added]);
}

/// A static certificate keeps ACME away from its host; once a reload has
/// removed it (staging certificates cleared for production ones, say),
/// ACME orders one for the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_static_certificate_a_reload_removed_gets_an_acme_one() {
    let s = AcmeSetup::new().await;
    let domain = "was-static.rampart.test";
    write_cert(s.certs.path(), "static", &[domain], false);
    let root = s.pebble.root().await;
    let p = start(&s, domain, "tls-alpn-01", None);
    let first = handshake(s.https, domain).await.unwrap();
    assert_eq!(first.info.names, [domain], "the static certificate is served");

    std::fs::remove_file(s.certs.path().join("static.crt")).unwrap();
    std::fs::remove_file(s.certs.path().join("static.key")).unwrap();
    let r = post_reload(&p).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Pebble's root verifies it: the ACME certificate, not the static one.
    let cert = wait_for_cert(&s, &p, domain, &root, Duration::from_secs(60), |_| true).await;
    assert_eq!(cert.info.names, [domain]);
}

/// The other way round: a static certificate that a reload adds for a host
/// ACME manages ends its orders (here failing ones, the CA being down),
/// instead of spending the CA's rate limit on a certificate never served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_certificate_added_by_reload_ends_the_hosts_acme_orders() {
    let mut s = AcmeSetup::new().await;
    let domain = "now-static.rampart.test";
    s.pebble.stop();
    let p = start(&s, domain, "tls-alpn-01", None);
    wait_logged(&p, "certificate order failed; keeping the current certificate", Duration::from_secs(30)).await;

    write_cert(s.certs.path(), "static", &[domain], false);
    let r = post_reload(&p).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The next retry is due within seconds (backoff from 2 s): it stops.
    wait_logged(&p, "a static certificate covers the host now; no more ACME orders for it", Duration::from_secs(30))
        .await;
    let orders = logged(&p, "ordering certificate").len();
    let served = handshake(s.https, domain).await.unwrap();
    assert_eq!(served.info.names, [domain], "the static certificate is served");
    // Past the retry that would have come next (4 s after the second
    // failure): no further order.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(logged(&p, "ordering certificate").len(), orders, "ACME kept ordering");
}
