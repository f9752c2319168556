//! What the ACME tests share around a [`Pebble`]: the setup (Pebble
//! validating on the HTTP and HTTPS ports the proxy will listen on, a
//! `certs_dir`, an `app` upstream), the proxy's config pointed at it, the
//! certificate a handshake shows once it satisfies a test, and the proxy's
//! JSON log lines by message.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::pebble::Pebble;
use crate::tls_util::{client_config, handshake_with, Handshake};
use crate::util::{closed_port, eventually, Proxy, Upstream};

pub type Root = rustls::pki_types::CertificateDer<'static>;

pub struct AcmeSetup {
    pub pebble: Pebble,
    pub certs: tempfile::TempDir,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub upstream: Upstream,
}

impl AcmeSetup {
    /// Pebble with challtestsrv as its DNS server.
    pub async fn new() -> AcmeSetup {
        Self::with_dns(None).await
    }

    /// Pebble asking `dns` (a server the test runs) when given.
    pub async fn with_dns(dns: Option<SocketAddr>) -> AcmeSetup {
        let (http, https) = (closed_port(), closed_port());
        AcmeSetup {
            pebble: Pebble::start_with_dns(http.port(), https.port(), dns),
            certs: tempfile::tempdir().unwrap(),
            http,
            https,
            upstream: Upstream::named("app").await,
        }
    }

    /// A config with every listener on 127.0.0.1 (admin on an ephemeral
    /// port) and this setup's `certs_dir`; see [`AcmeSetup::config_on`].
    pub fn config(&self, challenge: &str, acme: &str, rest: &str) -> String {
        self.config_on("127.0.0.1", self.certs.path(), challenge, acme, rest)
    }

    /// A config listening on `ip` (this setup's HTTP and HTTPS ports, admin
    /// ephemeral) with `certs` as `certs_dir`; `[acme]` points at Pebble,
    /// with `challenge` and the extra `acme` lines; the `app` upstream, then
    /// `rest` (routes, more tables).
    pub fn config_on(&self, ip: &str, certs: &Path, challenge: &str, acme: &str, rest: &str) -> String {
        format!(
            r#"[listen]
http = "{ip}:{}"
https = "{ip}:{}"
admin = "{ip}:0"

[tls]
certs_dir = "{}"

[acme]
directory = "{}"
challenge = "{challenge}"
ca_cert = "{}"
{acme}
[upstreams.app]
servers = ["{}"]

{rest}"#,
            self.http.port(),
            self.https.port(),
            certs.display(),
            self.pebble.directory(),
            self.pebble.cert.display(),
            self.upstream.addr,
        )
    }

    /// Where the proxy keeps `name` (account key, certificate, key) for
    /// this CA under this setup's `certs_dir`.
    pub fn stored(&self, name: &str) -> PathBuf {
        self.pebble.stored(self.certs.path(), name)
    }
}

/// `renew_before = "R"` as an `[acme]` line, or nothing.
pub fn renew_line(renew_before: Option<&str>) -> String {
    renew_before.map(|r| format!("renew_before = \"{r}\"\n")).unwrap_or_default()
}

/// Poll handshakes with `sni` at `addr`, trusting only `root`, until the
/// certificate shown satisfies `want`; after `within`, panic with
/// `context()` (the logs).
pub async fn poll_cert(
    addr: SocketAddr,
    sni: &str,
    root: &Root,
    within: Duration,
    want: impl Fn(&Handshake) -> bool,
    context: impl Fn() -> String,
) -> Handshake {
    let deadline = Instant::now() + within;
    loop {
        // A fresh config each time: a resumed session shows the old chain.
        let cfg = client_config(Some(std::slice::from_ref(root)), &[b"h2", b"http/1.1"]);
        let last = handshake_with(cfg, addr, sni).await;
        match last {
            Ok(h) if want(&h) => return h,
            _ if Instant::now() > deadline => {
                panic!("no matching certificate for {sni} at {addr} ({last:?});\n{}", context())
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// [`poll_cert`] at the setup's HTTPS port, the proxy's and Pebble's logs
/// in the panic.
pub async fn wait_for_cert(
    s: &AcmeSetup,
    p: &Proxy,
    domain: &str,
    root: &Root,
    within: Duration,
    want: impl Fn(&Handshake) -> bool,
) -> Handshake {
    let context = || format!("proxy:\n{}\npebble:\n{}", p.stderr.lock().unwrap().join("\n"), s.pebble.log());
    poll_cert(s.https, domain, root, within, want, context).await
}

/// The proxy's JSON log lines whose message is `message`.
pub fn logged(p: &Proxy, message: &str) -> Vec<serde_json::Value> {
    p.stderr
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == message)
        .collect()
}

/// Wait until `message` was logged `n` times; all of them.
pub async fn wait_logged_n(p: &Proxy, message: &str, n: usize, within: Duration) -> Vec<serde_json::Value> {
    assert!(
        eventually(within, || logged(p, message).len() >= n).await,
        "{message:?} not logged {n} times:\n{}",
        p.stderr.lock().unwrap().join("\n")
    );
    logged(p, message)
}

/// Wait until `message` was logged; the first one.
pub async fn wait_logged(p: &Proxy, message: &str, within: Duration) -> serde_json::Value {
    wait_logged_n(p, message, 1, within).await.remove(0)
}

/// What the proxy logs when an order fails.
pub const FAILED: &str = "certificate order failed; keeping the current certificate";

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}
