//! ACME DNS-01 against real peers: Pebble validating through Knot DNS (RFC
//! 2136 updates signed with TSIG, under an update policy) or through
//! pebble-challtestsrv fed by an `exec` hook script. One certificate for an
//! apex and its wildcard; handshakes for names under both verified against
//! Pebble's root; renewal; a refused update and a wrong TSIG secret. The
//! propagation check with no `resolvers` set, which asks the zone's name
//! servers on port 53, is tested in `dns01_propagation.rs`.

use std::time::Duration;

use crate::acme_util::{logged, renew_line, sorted, wait_for_cert, wait_logged_n, AcmeSetup, FAILED};
use crate::knot::{Knot, Policy, KEY, ZONE};
use crate::util::*;

/// DNS-01 with `dns_table` as `[acme.dns]`: one certificate for the apex
/// and its wildcard, both route hosts.
fn config(s: &AcmeSetup, dns_table: &str, renew_before: Option<&str>) -> String {
    let acme = format!("email = \"ops@example.com\"\n{}", renew_line(renew_before));
    let rest = format!(
        "[acme.dns]\n{dns_table}\n[[certificates]]\nnames = [\"{ZONE}\", \"*.{ZONE}\"]\n\n\
         [[routes]]\nhost = \"*.{ZONE}\"\nupstream = \"app\"\n\n[[routes]]\nhost = \"{ZONE}\"\nupstream = \"app\"\n"
    );
    s.config("dns-01", &acme, &rest)
}

fn rfc2136_table(knot: &Knot, secret_file: &std::path::Path) -> String {
    format!(
        "provider = \"rfc2136\"\nnameserver = \"{}\"\ntsig_key = \"{KEY}\"\ntsig_algorithm = \"hmac-sha256\"\n\
         tsig_secret_file = \"{}\"\npropagation_timeout = \"30s\"\n",
        knot.addr,
        secret_file.display()
    )
}

/// Names under the wildcard and the apex share one certificate issued
/// through RFC 2136; the challenge records are gone afterwards; renewal
/// replaces it for all of them; an update the server refuses fails the
/// renewal, logged, retried with backoff, while the old one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc2136_issues_one_certificate_for_apex_and_wildcard() {
    let mut knot = Knot::start(Policy::AcmeChallenge);
    let s = AcmeSetup::with_dns(Some(knot.addr)).await;
    let secret_file = s.certs.path().join("tsig.secret");
    std::fs::write(&secret_file, format!("{}\n", knot.secret)).unwrap();
    let root = s.pebble.root().await;
    let table = rfc2136_table(&knot, &secret_file);

    let p = Proxy::start(&config(&s, &table, None));
    let want_names = sorted(vec![ZONE.to_string(), format!("*.{ZONE}")]);
    let first = wait_for_cert(&s, &p, &format!("a.{ZONE}"), &root, Duration::from_secs(90), |_| true).await;
    assert_eq!(sorted(first.info.names.clone()), want_names);
    for name in [format!("b.{ZONE}"), ZONE.to_string()] {
        let h = wait_for_cert(&s, &p, &name, &root, Duration::from_secs(5), |_| true).await;
        assert_eq!(h.info.serial, first.info.serial, "{name} gets the same certificate");
    }
    // Both values were published at one name, and both are removed.
    let updates = knot.log();
    assert!(eventually(Duration::from_secs(10), || knot.txt(&format!("_acme-challenge.{ZONE}")).is_empty()).await);
    let applied = logged(&p, "DNS update applied");
    assert_eq!(applied.iter().filter(|v| v["fields"]["added"] == true).count(), 2, "{updates}");
    assert_eq!(applied.iter().filter(|v| v["fields"]["added"] == false).count(), 2);
    drop(p);

    // Renewal: one new certificate for all three names.
    let p = Proxy::start(&config(&s, &table, Some("100000d")));
    let renewed = wait_for_cert(&s, &p, &format!("a.{ZONE}"), &root, Duration::from_secs(90), |h| {
        h.info.serial != first.info.serial
    })
    .await;
    assert_eq!(sorted(renewed.info.names.clone()), want_names);
    for name in [format!("b.{ZONE}"), ZONE.to_string()] {
        let h = wait_for_cert(&s, &p, &name, &root, Duration::from_secs(5), |_| true).await;
        assert_eq!(h.info.serial, renewed.info.serial, "{name} gets the renewed certificate");
    }
    drop(p);

    // The server's policy no longer allows the records: the renewal fails,
    // is logged and retried with backoff, the current certificate stays.
    knot.restart(Policy::Refuse);
    let p = Proxy::start(&config(&s, &table, Some("100000d")));
    let failures = wait_logged_n(&p, FAILED, 2, Duration::from_secs(60)).await;
    let error = failures[0]["fields"]["error"].as_str().unwrap().to_string();
    assert!(error.contains("refused"), "{error}");
    assert_eq!(failures[0]["fields"]["retry_in_secs"], 2);
    assert_eq!(failures[1]["fields"]["retry_in_secs"], 4);
    let served = wait_for_cert(&s, &p, &format!("b.{ZONE}"), &root, Duration::from_secs(5), |_| true).await;
    assert_eq!(served.info.serial, renewed.info.serial);
}

/// A secret that is not the server's: the error says TSIG and names the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_tsig_secret_is_a_clear_error() {
    let knot = Knot::start(Policy::AcmeChallenge);
    let s = AcmeSetup::with_dns(Some(knot.addr)).await;
    let secret_file = s.certs.path().join("tsig.secret");
    std::fs::write(&secret_file, "c2VjcmV0IHRoYXQgdGhlIHNlcnZlciBkb2VzIG5vdCBrbm93IGF0IGFsbCE=\n").unwrap();
    let p = Proxy::start(&config(&s, &rfc2136_table(&knot, &secret_file), None));
    let failures = wait_logged_n(&p, FAILED, 1, Duration::from_secs(60)).await;
    let error = failures[0]["fields"]["error"].as_str().unwrap();
    assert!(error.starts_with("TSIG:"), "{error}");
    assert!(error.contains(KEY) && error.contains("secret"), "{error}");
    assert!(knot.txt(&format!("_acme-challenge.{ZONE}")).is_empty());
}

/// lego's exec protocol: a shell script that feeds pebble-challtestsrv's
/// management API; its stderr lands in the proxy's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_hook_publishes_through_a_dns_api() {
    let s = AcmeSetup::with_dns(None).await;
    let hook = s.certs.path().join("hook.sh");
    let script = format!(
        r#"#!/bin/sh
# lego exec protocol: $1 = present|cleanup, $2 = FQDN, $3 = value
api="http://{}"
echo "hook $1 $2" >&2
case "$1" in
  present) curl -sf -X POST -d "{{\"host\":\"$2\",\"value\":\"$3\"}}" "$api/set-txt" ;;
  cleanup) curl -sf -X POST -d "{{\"host\":\"$2\"}}" "$api/clear-txt" ;;
  *) exit 2 ;;
esac
"#,
        s.pebble.challtest_mgmt
    );
    std::fs::write(&hook, script).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let table = format!(
        "provider = \"exec\"\ncommand = \"{}\"\nresolvers = [\"{}\"]\npropagation_timeout = \"30s\"\n",
        hook.display(),
        s.pebble.challtest_dns
    );
    let root = s.pebble.root().await;
    let p = Proxy::start(&config(&s, &table, None));
    let cert = wait_for_cert(&s, &p, &format!("a.{ZONE}"), &root, Duration::from_secs(90), |_| true).await;
    assert_eq!(sorted(cert.info.names.clone()), sorted(vec![ZONE.to_string(), format!("*.{ZONE}")]));
    let h = wait_for_cert(&s, &p, ZONE, &root, Duration::from_secs(5), |_| true).await;
    assert_eq!(h.info.serial, cert.info.serial);
    let fqdn = format!("_acme-challenge.{ZONE}.");
    let lines = p.stderr.lock().unwrap().join("\n");
    assert!(lines.contains(&format!("hook present {fqdn}")), "{lines}");
    assert!(
        eventually(Duration::from_secs(10), || {
            p.stderr.lock().unwrap().iter().any(|l| l.contains(&format!("hook cleanup {fqdn}")))
        })
        .await
    );
}

/// `_acme-challenge.cname.example.test` is a CNAME: the record is written at
/// its target, where the CA finds it through the CNAME.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cname_on_the_challenge_name_is_followed() {
    let knot = Knot::start(Policy::AcmeChallenge);
    let s = AcmeSetup::with_dns(Some(knot.addr)).await;
    let secret_file = s.certs.path().join("tsig.secret");
    std::fs::write(&secret_file, &knot.secret).unwrap();
    let root = s.pebble.root().await;
    let name = format!("cname.{ZONE}");
    let config = config(&s, &rfc2136_table(&knot, &secret_file), None)
        .replace(&format!("names = [\"{ZONE}\", \"*.{ZONE}\"]"), &format!("names = [\"{name}\"]"));
    let p = Proxy::start(&config);
    let cert = wait_for_cert(&s, &p, &name, &root, Duration::from_secs(90), |h| h.info.names == [name.clone()]).await;
    assert_eq!(cert.info.names, [name]);
    let target = format!("delegated._acme-challenge.{ZONE}.");
    let applied = logged(&p, "DNS update applied");
    assert!(applied.iter().any(|v| v["fields"]["fqdn"] == target.as_str()), "{applied:?}");
}
