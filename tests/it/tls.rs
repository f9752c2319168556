//! TLS termination through the real binary: SNI certificate choice, unknown
//! names, protocol versions, ALPN/HTTP2 with curl, resumption and session
//! tickets, alerts, the port-80 redirect, and certificate errors surfaced
//! by `rampart check`.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::tls_util::*;
use crate::util::*;

const LISTEN_TLS: &str = "[listen]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n";

fn routes(up: &Upstream, tls_table: &str) -> String {
    format!(
        r#"{LISTEN_TLS}
{tls_table}

[upstreams.app]
servers = ["{}"]

[[routes]]
host = "rsa.example.test"
upstream = "app"

[[routes]]
host = "app.example.test"
upstream = "app"

[[routes]]
host = "nocert.example.test"
upstream = "app"

[[routes]]
host = "*.wild.example.test"
upstream = "app"
"#,
        up.addr
    )
}

/// A temp dir with certs/: RSA for rsa.example.test, ECDSA for
/// app.example.test and a wildcard ECDSA for *.wild.example.test.
fn certs_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    write_cert(&certs, "rsa", &["rsa.example.test"], true);
    write_cert(&certs, "app", &["app.example.test"], false);
    write_cert(&certs, "wild", &["*.wild.example.test"], false);
    dir
}

#[tokio::test]
async fn sni_picks_the_static_certificate() {
    let up = Upstream::named("app").await;
    let p = Proxy::start_in(certs_dir(), &routes(&up, "[tls]\ncerts_dir = \"certs\""));
    let https = p.https.expect("https listener logged");

    let rsa = handshake(https, "rsa.example.test").await.unwrap();
    assert_eq!(rsa.info.names, ["rsa.example.test"]);
    assert!(rsa.is_rsa(), "RSA certificate expected");

    let ec = handshake(https, "app.example.test").await.unwrap();
    assert_eq!(ec.info.names, ["app.example.test"]);
    assert!(!ec.is_rsa(), "ECDSA certificate expected");

    let wild = handshake(https, "a.wild.example.test").await.unwrap();
    assert_eq!(wild.info.names, ["*.wild.example.test"]);
    // A wildcard covers one label only: the deeper name gets the fallback.
    let deeper = handshake(https, "x.a.wild.example.test").await.unwrap();
    assert_ne!(deeper.info.names, ["*.wild.example.test"]);

    // Unknown name with the default policy: the self-signed fallback.
    let unknown = handshake(https, "unknown.example.test").await.unwrap();
    assert!(unknown.info.names.contains(&"localhost".to_string()));
    assert!(unknown.info.names.contains(&"nocert.example.test".to_string()));

    // The request really is served over TLS.
    let (ok, body, err) = curl(&[
        "-k",
        "--resolve",
        &format!("app.example.test:{}:127.0.0.1", https.port()),
        &format!("https://app.example.test:{}/", https.port()),
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(body, "app");

    // Status and metrics list the certificates.
    let status = get(&p.admin_url("/api/status"), "admin").await.json();
    let domains: Vec<&str> =
        status["certificates"].as_array().unwrap().iter().filter_map(|c| c["domain"].as_str()).collect();
    for d in ["rsa.example.test", "app.example.test", "*.wild.example.test", "localhost"] {
        assert!(domains.contains(&d), "{d} missing from {domains:?}");
    }
    assert!(status["certificates"][0]["days_left"].as_i64().is_some());
    let metrics = get(&p.admin_url("/metrics"), "admin").await.text();
    assert!(metrics.contains("rampart_certificate_expiry_timestamp_seconds{domain=\"rsa.example.test\"}"));
    assert!(metrics.contains("rampart_tls_handshakes_total{result=\"success\"}"));
}

/// A `certs_dir` that does not exist (a typo) without `[acme]` still
/// serves, self-signed as documented, but says so at start; an existing
/// one does not.
#[tokio::test]
async fn a_missing_certs_dir_without_acme_is_warned_about() {
    let up = Upstream::named("app").await;
    let p = Proxy::start_in(certs_dir(), &routes(&up, "[tls]\ncerts_dir = \"certz\""));
    let https = p.https.unwrap();
    assert!(handshake(https, "app.example.test").await.is_ok());
    let warned = || p.log_lines(&["certs_dir does not exist", "certz"]).len() == 1;
    assert!(eventually(Duration::from_secs(5), warned).await, "{:?}", p.log_lines(&["WARN"]));
    let q = Proxy::start_in(certs_dir(), &routes(&up, "[tls]\ncerts_dir = \"certs\""));
    assert!(q.https.is_some());
    assert!(q.log_lines(&["certs_dir does not exist"]).is_empty());
}

#[tokio::test]
async fn unknown_sni_can_be_rejected() {
    let up = Upstream::named("app").await;
    let p = Proxy::start_in(certs_dir(), &routes(&up, "[tls]\ncerts_dir = \"certs\"\nunknown_sni = \"reject\""));
    let https = p.https.unwrap();
    let err = handshake(https, "unknown.example.test").await.unwrap_err();
    assert!(!err.is_empty());
    // Known names still work, and a route host without a certificate gets
    // the self-signed one rather than a failure.
    assert_eq!(handshake(https, "app.example.test").await.unwrap().info.names, ["app.example.test"]);
    assert!(handshake(https, "nocert.example.test").await.is_ok());
    let metrics = get(&p.admin_url("/metrics"), "admin").await.text();
    assert!(metrics.contains("rampart_tls_handshakes_total{result=\"failure\"}"));
}

#[tokio::test]
async fn http2_over_tls_with_curl_and_alpn() {
    let up = Upstream::echo().await;
    let p = Proxy::start_in(certs_dir(), &routes(&up, "[tls]\ncerts_dir = \"certs\""));
    let https = p.https.unwrap();
    let port = https.port();
    let resolve = format!("app.example.test:{port}:127.0.0.1");
    let url = format!("https://app.example.test:{port}/h2?x=1");
    let (ok, out, err) = curl(&["-k", "--http2", "--resolve", &resolve, "-w", "\n%{http_version}", &url]).await;
    assert!(ok, "{err}");
    let (body, version) = out.rsplit_once('\n').unwrap();
    assert_eq!(version, "2");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["uri"], "/h2?x=1");
    assert_eq!(v["headers"]["x-forwarded-proto"][0], "https");

    let (ok, out, err) =
        curl(&["-k", "--http1.1", "--resolve", &resolve, "-o", "/dev/null", "-w", "%{http_version}", &url]).await;
    assert!(ok, "{err}");
    assert_eq!(out, "1.1");

    let h = handshake(https, "app.example.test").await.unwrap();
    assert_eq!(h.alpn.as_deref(), Some(&b"h2"[..]));
}

fn s_client(addr: std::net::SocketAddr, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-servername", "app.example.test"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is needed for this test (scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let ok = text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    (ok, text)
}

#[tokio::test]
async fn only_tls_12_and_13_are_accepted() {
    let up = Upstream::named("app").await;
    let p = Proxy::start_in(certs_dir(), &routes(&up, "[tls]\ncerts_dir = \"certs\""));
    let https = p.https.unwrap();
    // SECLEVEL=0 lets this OpenSSL actually offer TLS 1.1.
    let (ok, text) = s_client(https, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    assert!(!ok, "TLS 1.1 was accepted:\n{text}");
    let (ok, text) = s_client(https, &["-tls1_2"]);
    assert!(ok, "TLS 1.2 refused:\n{text}");
    let (ok, text) = s_client(https, &["-tls1_3"]);
    assert!(ok, "TLS 1.3 refused:\n{text}");
}

#[tokio::test]
async fn sessions_resume() {
    let up = Upstream::named("app").await;
    let p = Proxy::start_in(certs_dir(), &routes(&up, "[tls]\ncerts_dir = \"certs\""));
    let https = p.https.unwrap();
    let cfg = client_config(None, &[b"http/1.1"]);
    let first = handshake_with(cfg.clone(), https, "app.example.test").await.unwrap();
    assert!(!first.resumed);
    let second = handshake_with(cfg, https, "app.example.test").await.unwrap();
    assert!(second.resumed, "second handshake was not resumed");
}

#[tokio::test]
async fn acme_tls_alpn_without_a_challenge_is_refused() {
    let up = Upstream::named("app").await;
    let p = Proxy::start_in(certs_dir(), &routes(&up, "[tls]\ncerts_dir = \"certs\""));
    let cfg = client_config(None, &[b"acme-tls/1"]);
    assert!(handshake_with(cfg, p.https.unwrap(), "app.example.test").await.is_err());
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn plain_http_redirects_hosts_with_tls() {
    let up = Upstream::named("app").await;
    let p = Proxy::start_in(certs_dir(), &routes(&up, "[tls]\ncerts_dir = \"certs\""));
    let port = p.https.unwrap().port();
    let a = get(&p.url("/a/b?x=1&y=%20z"), "App.Example.Test:8080").await;
    assert_eq!(a.status, 308);
    assert_eq!(a.headers["location"], format!("https://app.example.test:{port}/a/b?x=1&y=%20z").as_str());
    let w = get(&p.url("/"), "a.wild.example.test").await;
    assert_eq!(w.status, 308);
    // A host with no certificate of its own keeps being served on port 80.
    let n = get(&p.url("/x"), "nocert.example.test").await;
    assert_eq!(n.status, 200);
    assert_eq!(n.text(), "app");
    assert_eq!(up.hits(), 1);
}

/// A host ACME has not got a certificate for yet (here the CA cannot be
/// reached) stays on plain HTTP: a redirect would send its clients into
/// the self-signed fallback's certificate error.
#[tokio::test]
async fn a_host_still_waiting_for_its_acme_certificate_is_not_redirected() {
    let up = Upstream::named("app").await;
    let acme = format!(
        "[tls]\ncerts_dir = \"certs\"\n[acme]\nchallenge = \"http-01\"\ndirectory = \"https://{}/dir\"\n",
        closed_port()
    );
    let config = format!(
        "{LISTEN_TLS}\n{acme}\n[upstreams.app]\nservers = [\"{}\"]\n\
         [[routes]]\nhost = \"waiting.example.test\"\nupstream = \"app\"\n\
         [[routes]]\nhost = \"app.example.test\"\nupstream = \"app\"\n",
        up.addr
    );
    let p = Proxy::start_in(certs_dir(), &config);
    let a = get(&p.url("/x"), "waiting.example.test").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "app");
    // One with a certificate in certs_dir is still sent to HTTPS.
    assert_eq!(get(&p.url("/"), "app.example.test").await.status, 308);
}

#[tokio::test]
async fn redirect_can_be_turned_off() {
    let up = Upstream::named("app").await;
    let p = Proxy::start_in(certs_dir(), &routes(&up, "[tls]\ncerts_dir = \"certs\"\nredirect_http = false"));
    let a = get(&p.url("/a?b=c"), "app.example.test").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "app");
}

#[tokio::test]
async fn a_missing_key_is_a_config_error_naming_the_file() {
    let up = Upstream::named("app").await;
    let dir = certs_dir();
    std::fs::remove_file(dir.path().join("certs/app.key")).unwrap();
    let config = routes(&up, "[tls]\ncerts_dir = \"certs\"");
    let path = dir.path().join("rampart.toml");
    std::fs::write(&path, &config).unwrap();
    let out = Command::new(binary()).args(["check", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("app.key"), "{err}");
    assert!(err.contains("rampart.toml:1:1: error:"), "{err}");

    let out = Command::new(binary()).args(["run", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("app.key"));
}

/// A reload (SIGHUP, as after a certbot renewal) reads `certs_dir` again: a
/// replaced certificate is served, a removed one is gone, and a broken one
/// fails the reload while the running certificates keep serving.
#[tokio::test]
async fn a_reload_reads_static_certificates_again() {
    let up = Upstream::named("app").await;
    let p = Proxy::start_in(certs_dir(), &routes(&up, "[tls]\ncerts_dir = \"certs\""));
    let https = p.https.expect("https listener logged");
    let certs = p.config_path().parent().unwrap().join("certs");
    assert_eq!(handshake(https, "app.example.test").await.unwrap().info.names, ["app.example.test"]);

    // Renewed with one more name; the RSA certificate removed.
    write_cert(&certs, "app", &["app.example.test", "renewed.example.test"], false);
    std::fs::remove_file(certs.join("rsa.crt")).unwrap();
    std::fs::remove_file(certs.join("rsa.key")).unwrap();
    p.signal("HUP");
    let renewed = eventually_async(Duration::from_secs(10), || async {
        handshake(https, "app.example.test").await.is_ok_and(|h| h.info.names.len() == 2)
    })
    .await;
    assert!(renewed, "the renewed certificate is not served");
    let reloaded = eventually_async(Duration::from_secs(10), || async {
        get(&p.admin_url("/metrics"), "admin")
            .await
            .text()
            .contains(r#"rampart_config_reloads_total{result="success"} 1"#)
    })
    .await;
    assert!(reloaded, "the reload was not counted as a success");
    // The expiry series follow: the renewed name gains one, the removed
    // certificate's name loses its own.
    let metrics = get(&p.admin_url("/metrics"), "admin").await.text();
    assert!(metrics.contains(r#"rampart_certificate_expiry_timestamp_seconds{domain="renewed.example.test"}"#));
    assert!(!metrics.contains(r#"rampart_certificate_expiry_timestamp_seconds{domain="rsa.example.test"}"#));
    let rsa = handshake(https, "rsa.example.test").await.unwrap();
    assert!(
        rsa.info.names.contains(&"localhost".to_string()),
        "removed certificate still served: {:?}",
        rsa.info.names
    );

    // A broken certificate fails the reload, naming the file; the renewed
    // one keeps serving.
    std::fs::write(certs.join("app.crt"), "not a certificate").unwrap();
    p.signal("HUP");
    let failed =
        eventually_async(Duration::from_secs(10), || async { status(&p).await["last_reload"]["ok"] == false }).await;
    assert!(failed, "a broken certificate did not fail the reload");
    let errors = status(&p).await["last_reload"]["errors"].to_string();
    assert!(errors.contains("app.crt") && errors.contains("rampart.toml:1:1"), "{errors}");
    let still = handshake(https, "app.example.test").await.unwrap();
    assert_eq!(still.info.names, ["app.example.test", "renewed.example.test"]);
}

/// Counts the TLS 1.3 tickets a client is given, keeping them for resumption.
#[derive(Debug, Default)]
struct TicketCounter {
    inner: Option<Arc<dyn rustls::client::ClientSessionStore>>,
    tls13: std::sync::atomic::AtomicUsize,
}

impl TicketCounter {
    fn new() -> Arc<Self> {
        Arc::new(TicketCounter {
            inner: Some(Arc::new(rustls::client::ClientSessionMemoryCache::new(32))),
            ..Default::default()
        })
    }
    fn tls13(&self) -> usize {
        self.tls13.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn inner(&self) -> &dyn rustls::client::ClientSessionStore {
        self.inner.as_deref().unwrap()
    }
}

impl rustls::client::ClientSessionStore for TicketCounter {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner().set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner().kx_hint(name)
    }
    fn set_tls12_session(&self, name: ServerName<'static>, v: rustls::client::Tls12ClientSessionValue) {
        self.inner().set_tls12_session(name, v)
    }
    fn tls12_session(&self, name: &ServerName<'_>) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner().tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner().remove_tls12_session(name)
    }
    fn insert_tls13_ticket(&self, name: ServerName<'static>, v: rustls::client::Tls13ClientSessionValue) {
        self.tls13.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner().insert_tls13_ticket(name, v)
    }
    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner().take_tls13_ticket(name)
    }
}

/// One request over TLS with rustls driven by hand on a blocking socket:
/// the client's Finished and the request leave in one write, as browsers
/// and curl send them. Returns the plaintext that came with the first bytes
/// the server sent after the handshake, and the whole answer.
fn request_by_hand(cfg: Arc<rustls::ClientConfig>, addr: std::net::SocketAddr) -> (Vec<u8>, Vec<u8>, bool) {
    use std::io::{Read, Write};
    let name = ServerName::try_from("app.example.test").unwrap();
    let mut tls = rustls::ClientConnection::new(cfg, name).unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0; 64 * 1024];
    let send = |tls: &mut rustls::ClientConnection, tcp: &mut std::net::TcpStream| {
        let mut out = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut out).unwrap();
        }
        tcp.write_all(&out).unwrap();
    };
    while tls.is_handshaking() {
        send(&mut tls, &mut tcp);
        if !tls.is_handshaking() {
            break;
        }
        let n = tcp.read(&mut buf).unwrap();
        assert!(n > 0, "closed during the handshake");
        tls.read_tls(&mut &buf[..n]).unwrap();
        tls.process_new_packets().unwrap();
    }
    let resumed = tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    tls.writer().write_all(b"GET /slow HTTP/1.1\r\nhost: app.example.test\r\nconnection: close\r\n\r\n").unwrap();
    send(&mut tls, &mut tcp);
    let mut first = None;
    let mut answer = Vec::new();
    loop {
        let n = tcp.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        tls.read_tls(&mut &buf[..n]).unwrap();
        let state = tls.process_new_packets().unwrap();
        let mut plain = vec![0; state.plaintext_bytes_to_read()];
        tls.reader().read_exact(&mut plain).unwrap();
        first.get_or_insert_with(|| plain.clone());
        answer.extend_from_slice(&plain);
        if state.peer_has_closed() {
            break;
        }
    }
    (first.unwrap_or_default(), answer, resumed)
}

/// A TLS 1.3 server's session ticket is sent with its first answer, not on
/// its own before it: one write, one segment and one wake-up of the client
/// fewer per connection. Rampart sends one ticket per handshake.
#[tokio::test]
async fn the_session_ticket_comes_with_the_first_answer() {
    // The upstream answers late, so a ticket sent on its own would arrive
    // well before the answer.
    let up = Upstream::start(|_req| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        hyper::Response::new(full("slow answer"))
    })
    .await;
    let p = Proxy::start_in(certs_dir(), &routes(&up, "[tls]\ncerts_dir = \"certs\""));
    let https = p.https.unwrap();
    let tickets = TicketCounter::new();
    let mut cfg = (*client_config(None, &[b"http/1.1"])).clone();
    cfg.resumption = rustls::client::Resumption::store(tickets.clone());
    let cfg = Arc::new(cfg);

    for round in 0..2 {
        let cfg = Arc::clone(&cfg);
        let (first, answer, resumed) = tokio::task::spawn_blocking(move || request_by_hand(cfg, https)).await.unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200"), "round {round}: {answer}");
        assert!(answer.ends_with("slow answer"), "round {round}: {answer}");
        assert!(!first.is_empty(), "round {round}: the first bytes after the handshake brought no answer");
        assert_eq!(resumed, round == 1, "round {round}: the second connection resumes");
        assert_eq!(tickets.tls13(), round + 1, "round {round}: one ticket per handshake");
    }
}

/// TLS 1.2 clients wait for the server's final flight before they send a
/// request; it is never held back. Sessions resume over TLS 1.2 too.
#[tokio::test]
async fn tls_12_clients_are_answered_and_resume() {
    let up = Upstream::start(|_req| async { hyper::Response::new(full("over 1.2")) }).await;
    let p = Proxy::start_in(certs_dir(), &routes(&up, "[tls]\ncerts_dir = \"certs\""));
    let https = p.https.unwrap();
    let cfg = client_config_for(&[&rustls::version::TLS12], None, &[b"http/1.1"]);
    for round in 0..2 {
        let cfg = Arc::clone(&cfg);
        let (_, answer, resumed) = tokio::task::spawn_blocking(move || request_by_hand(cfg, https)).await.unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("over 1.2"), "round {round}: {answer}");
        assert_eq!(resumed, round == 1, "round {round}: the second connection resumes");
    }
}

/// A failed handshake still tells the client why, with its alert.
#[tokio::test]
async fn a_failed_handshake_is_told_with_an_alert() {
    let up = Upstream::named("app").await;
    let p = Proxy::start_in(certs_dir(), &routes(&up, "[tls]\ncerts_dir = \"certs\""));
    let cfg = client_config(None, &[b"no-such-protocol"]);
    let err = handshake_with(cfg, p.https.unwrap(), "app.example.test").await.unwrap_err();
    assert!(err.contains("NoApplicationProtocol"), "{err}");
}

#[tokio::test]
async fn plain_http_sent_to_the_https_port_is_told_so() {
    let up = Upstream::named("app").await;
    let p = Proxy::start_in(certs_dir(), &routes(&up, "[tls]\ncerts_dir = \"certs\""));
    let answer = raw_exchange(p.https.unwrap(), b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(answer.ends_with("plain HTTP request sent to HTTPS port\n"), "{answer}");
    assert_eq!(up.hits(), 0);
}

/// rustls' warnings about what clients get wrong (wrk and some health
/// checkers send an IP address as the server name, on every handshake) are
/// not logged at the default level: they would be a line per connection.
#[tokio::test]
async fn client_mistakes_rustls_warns_about_are_not_logged() {
    let up = Upstream::named("app").await;
    let p = Proxy::start_in(certs_dir(), &routes(&up, "[tls]\ncerts_dir = \"certs\""));
    let https = p.https.unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("openssl")
            .args(["s_client", "-connect", &https.to_string(), "-servername", "127.0.0.1"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl is needed for this test (scripts/test installs it)")
    })
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("CONNECTED"));
    // A reload logs a line after the handshake's: once it is in, anything
    // the handshake logged is too.
    assert_eq!(post_reload(&p).await.status, 200);
    let reloaded = || p.stderr.lock().unwrap().iter().any(|l| l.contains("config reloaded"));
    assert!(eventually(Duration::from_secs(10), reloaded).await);
    let lines = p.stderr.lock().unwrap().join("\n");
    assert!(!lines.contains("Illegal SNI"), "{lines}");
}

/// A CA that accepts the connection and never answers: each request to it
/// ends after 30 s and the order goes to its backoff, instead of holding
/// the order queue for the whole order's time. Traffic is served meanwhile.
#[tokio::test]
async fn a_ca_that_never_answers_fails_the_order_not_the_queue() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ca = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let up = Upstream::named("app").await;
    let config = format!(
        "{LISTEN_TLS}\n[tls]\ncerts_dir = \"certs\"\n[acme]\nchallenge = \"http-01\"\ndirectory = \"https://{ca}/dir\"\n\
         [upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nhost = \"silent.example.test\"\nupstream = \"app\"\n",
        up.addr
    );
    let p = Proxy::start_in(certs_dir(), &config);
    assert_eq!(get(&p.url("/"), "silent.example.test").await.text(), "app");
    let failed = eventually(Duration::from_secs(90), || !p.log_lines(&["did not answer within 30s"]).is_empty()).await;
    assert!(failed, "{}", p.stderr.lock().unwrap().join("\n"));
}
