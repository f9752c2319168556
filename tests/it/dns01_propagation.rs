//! DNS-01's default propagation check, with no `resolvers` set: the proxy
//! finds the zone's name servers (SOA, NS, their addresses) and asks each
//! one directly on port 53 until it returns the value (for `rfc2136`, the
//! `nameserver` too), and only then tells the CA. With `exec`, the CNAME on
//! `_acme-challenge` and the name servers are looked up through the
//! system's resolver (`/etc/resolv.conf`).
//!
//! Port 53 and `/etc/resolv.conf` are the system's, so each test runs in a
//! network namespace of its own ([`NetNs`]): a hidden primary Knot on
//! 127.0.0.1:53 (the one `/etc/resolv.conf` names, which Pebble asks too),
//! and the zone's only name server, a secondary on 127.0.0.2:53 that
//! follows it by NOTIFY and IXFR. The secondary is frozen first, like one
//! that lags behind: the CA could validate at once, so only the check
//! stands between the order and the CA. Thawed, it catches up and the
//! retry gets the certificate.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::acme_util::{logged, sorted, wait_for_cert, AcmeSetup, FAILED};
use crate::knot::{Knot, KEY, ZONE};
use crate::netns::NetNs;
use crate::util::*;

const PRIMARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const SECONDARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Provider {
    /// lego's exec protocol, the hook sending the update with knsupdate.
    Exec,
    Rfc2136,
}

/// The exec hook: `present|cleanup FQDN VALUE` as an RFC 2136 update of
/// the primary.
fn hook(primary: &Knot) -> String {
    format!(
        r#"#!/bin/sh
echo "hook $1 $2" >&2
case "$1" in
  present) op=add ;;
  cleanup) op=delete ;;
  *) exit 2 ;;
esac
knsupdate -y "hmac-sha256:{KEY}:{}" <<EOF
server {PRIMARY} 53
zone {ZONE}.
update $op $2 60 TXT "$3"
send
EOF
"#,
        primary.secret
    )
}

/// With `exec`, the system's resolver finds the CNAME's target and the
/// zone's name server, and only that name server is asked.
#[test]
fn exec_waits_for_the_zones_name_server_found_through_the_system_resolver() {
    let ns = NetNs::create(IpAddr::V4(PRIMARY));
    let wrapper = ns.exec_prefix();
    ns.run(move || lagging_secondary(Provider::Exec, wrapper, "[127.0.0.2:53]"));
}

/// With `rfc2136`, the `nameserver` and the zone's name server are asked.
#[test]
fn rfc2136_waits_for_the_zones_name_server_besides_the_primary() {
    let ns = NetNs::create(IpAddr::V4(PRIMARY));
    let wrapper = ns.exec_prefix();
    ns.run(move || lagging_secondary(Provider::Rfc2136, wrapper, "[127.0.0.1:53, 127.0.0.2:53]"));
}

/// The order fails on the check naming only 127.0.0.2:53, before the CA
/// is asked, its records cleaned up; once the secondary catches up, the
/// retry gets one certificate for the apex and the CNAME'd name, the check
/// having seen the values at `checked`.
async fn lagging_secondary(provider: Provider, wrapper: Vec<String>, checked: &str) {
    let (primary, secondary) = Knot::start_pair(SocketAddr::from((PRIMARY, 53)), SocketAddr::from((SECONDARY, 53)));
    secondary.freeze();
    let s = AcmeSetup::with_dns(Some(primary.addr)).await;
    let table = match provider {
        Provider::Exec => {
            let script = s.certs.path().join("hook.sh");
            std::fs::write(&script, hook(&primary)).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            format!("provider = \"exec\"\ncommand = \"{}\"\n", script.display())
        }
        Provider::Rfc2136 => format!(
            "provider = \"rfc2136\"\nnameserver = \"{}\"\ntsig_key = \"{KEY}\"\ntsig_algorithm = \"hmac-sha256\"\n\
             tsig_secret = \"{}\"\n",
            primary.addr, primary.secret
        ),
    };
    let cname = format!("cname.{ZONE}");
    let rest = format!(
        "[acme.dns]\n{table}propagation_timeout = \"4s\"\n\n\
         [[certificates]]\nnames = [\"{ZONE}\", \"{cname}\"]\n\n\
         [[routes]]\nhost = \"{ZONE}\"\nupstream = \"app\"\n\n[[routes]]\nhost = \"{cname}\"\nupstream = \"app\"\n"
    );
    let root = s.pebble.root().await;
    let config = s.config("dns-01", "", &rest);
    // Through `ip netns exec`: the namespace's resolv.conf is its /etc/resolv.conf.
    let p = Proxy::start_wrapped(&wrapper, &config);
    let logs = || format!("proxy:\n{}\npebble:\n{}", p.stderr.lock().unwrap().join("\n"), s.pebble.log());

    // The secondary lags: the first order ends on the check, not at the CA.
    let ended = eventually(Duration::from_secs(30), || {
        !logged(&p, FAILED).is_empty() || !logged(&p, "certificate issued").is_empty()
    })
    .await;
    assert!(ended, "the first order neither failed nor succeeded:\n{}", logs());
    assert!(logged(&p, "certificate issued").is_empty(), "issued before the name server had the records:\n{}", logs());
    let error = logged(&p, FAILED)[0]["fields"]["error"].as_str().unwrap().to_string();
    assert!(error.contains("was not visible at 127.0.0.2:53 within 4 s"), "{error}");
    assert!(!s.pebble.log().contains("Pulled a task from the Tasks queue"), "the CA was asked:\n{}", logs());
    // Both records went where the CNAMEs lead, and were removed again.
    let (apex, delegated) = (format!("_acme-challenge.{ZONE}."), format!("delegated._acme-challenge.{ZONE}."));
    let applied = |fqdn: &str, added: bool| match provider {
        Provider::Exec => {
            let action = if added { "present" } else { "cleanup" };
            let line = format!("hook {action} {fqdn}");
            !p.log_lines(&[line.as_str()]).is_empty()
        }
        Provider::Rfc2136 => logged(&p, "DNS update applied")
            .iter()
            .any(|v| v["fields"]["fqdn"] == fqdn && v["fields"]["added"] == added),
    };
    assert!(applied(&apex, true) && applied(&delegated, true), "{}", logs());
    assert!(eventually(Duration::from_secs(10), || applied(&apex, false) && applied(&delegated, false)).await);
    assert!(primary.txt(&apex).is_empty() && primary.txt(&delegated).is_empty());

    // The secondary catches up: the retry gets the certificate.
    secondary.thaw();
    let cert = wait_for_cert(&s, &p, &cname, &root, Duration::from_secs(60), |_| true).await;
    assert_eq!(sorted(cert.info.names.clone()), sorted(vec![ZONE.to_string(), cname.clone()]));
    let visible = logged(&p, "TXT record visible");
    assert!(visible.len() >= 2, "{}", logs());
    for v in &visible {
        assert_eq!(v["fields"]["servers"], checked, "{v}");
    }
}
