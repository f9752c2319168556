//! Hostile requests through the real binary: paths spelt to walk around a
//! guard, headers that try to take over what the proxy owns, ambiguous
//! framing, misbehaving upstreams, and files that change under a reload.
//! A raw echo upstream answers with the exact bytes it received, so each
//! test sees what reached the backend.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::util::*;

/// A backend that records every complete HTTP/1.1 request it receives,
/// byte for byte, and answers each with those bytes as its body.
struct RawEcho {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    /// Bytes received at all, complete requests or not.
    bytes: Arc<std::sync::atomic::AtomicUsize>,
}

impl RawEcho {
    async fn start() -> RawEcho {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (r2, b2) = (Arc::clone(&requests), Arc::clone(&bytes));
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(echo_conn(s, Arc::clone(&r2), Arc::clone(&b2)));
            }
        });
        RawEcho { addr, requests, bytes }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn bytes(&self) -> usize {
        self.bytes.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn echo_conn(mut s: TcpStream, requests: Arc<Mutex<Vec<String>>>, bytes: Arc<std::sync::atomic::AtomicUsize>) {
    let mut buf = Vec::new();
    loop {
        let Some(len) = complete_request(&buf) else {
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    bytes.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
            continue;
        };
        let req: Vec<u8> = buf.drain(..len).collect();
        let text = String::from_utf8_lossy(&req).into_owned();
        requests.lock().unwrap().push(text);
        let head = format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n", req.len());
        if s.write_all(head.as_bytes()).await.is_err() || s.write_all(&req).await.is_err() {
            return;
        }
    }
}

/// The length of the first complete request in `buf` (head and body, by
/// Content-Length or chunked), if it is all there.
fn complete_request(buf: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head) = req.parse(buf).ok()? else { return None };
    let value = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    if value("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut at = head;
        loop {
            let line_end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size_text = String::from_utf8_lossy(&buf[at..line_end]);
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                let end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
                return Some(end + 2);
            }
            at += size + 2;
            if at > buf.len() {
                return None;
            }
        }
    }
    let len: usize = value("content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    (buf.len() >= head + len).then_some(head + len)
}

/// Send raw bytes; the answer, and whether the proxy closed the connection
/// after it (within 5 s).
async fn raw(addr: SocketAddr, request: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await.is_ok();
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

fn status_of(answer: &str) -> u16 {
    answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// `/admin/` behind `ip_allow` (which refuses loopback), `/` open, both on
/// the same backend: the seeds' `backend:7600` layout.
fn guarded(up: SocketAddr, server: &str) -> String {
    format!(
        "[server]\n{server}\n[upstreams.backend]\nservers = [\"{up}\"]\n\
         [middleware.office]\ntype = \"ip_allow\"\nallow = [\"10.0.0.0/8\"]\n\
         [[routes]]\nhost = \"*\"\npath = \"/admin/\"\nupstream = \"backend\"\nmiddleware = [\"office\"]\n\
         [[routes]]\nhost = \"*\"\npath = \"/\"\nupstream = \"backend\"\n"
    )
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn no_spelling_of_a_guarded_path_reaches_the_backend() {
    let up = RawEcho::start().await;
    let p = Proxy::start(&guarded(up.addr, ""));
    let addr = p.http;
    let spellings = [
        "/admin/x",
        "/admin",
        "/%61dmin/x",
        "/%61%64%6D%69%6E/x",
        "/ADMIN/x",
        "/Admin/x",
        "//admin/x",
        "/./admin/x",
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/public/.%2E/admin/x",
        "/public/%2e%2e%2fadmin/x",
        "/public/..%2Fadmin/x",
        "/public/..%5Cadmin/x",
        "/admin%2fx",
        "/admin;jsessionid=1/x",
        "/admin;/x",
        "/public/..;/admin/x",
        "/admin%00/x",
        "/admin/%2e%2e/admin/x",
        "/%2e/admin/x",
        "/admin%2F",
        "/adm%69n",
    ];
    for path in spellings {
        let (answer, _) = raw(addr, &get(path)).await;
        let status = status_of(&answer);
        assert!(status == 403 || status == 400, "{path} answered {status}: {answer}");
    }
    assert_eq!(up.requests(), Vec::<String>::new(), "a guarded path reached the backend");

    // A backslash: 400 (hyper refuses it in the request line, or the proxy does).
    let (answer, _) = raw(addr, &get("/admin\\x")).await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert_eq!(up.requests().len(), 0);

    // Open paths are forwarded in canonical form, query untouched.
    let (answer, _) = raw(addr, &get("/%70ublic//a/./b/../c%2a%c3%a9?q=%2e%2E&x=..")).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = up.requests();
    assert!(seen[0].starts_with("GET /public/a/c%2A%C3%A9?q=%2e%2E&x=.. HTTP/1.1\r\n"), "{seen:?}");
    // `;` parameters that do not change the route are forwarded as sent.
    let (answer, _) = raw(addr, &get("/shop;jsessionid=1/cart")).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(up.requests()[1].starts_with("GET /shop;jsessionid=1/cart HTTP/1.1\r\n"));
}

#[tokio::test]
async fn encoded_slashes_can_be_kept_for_apps_that_need_them() {
    let up = RawEcho::start().await;
    let p = Proxy::start(&guarded(up.addr, "encoded_slashes = \"keep\""));
    let (answer, _) = raw(p.http, &get("/files/a%2fb%2Fc")).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(up.requests()[0].starts_with("GET /files/a%2fb%2Fc HTTP/1.1\r\n"), "{:?}", up.requests());
    // Still no way around the guard: a path a decoding backend would read
    // as another route's is refused.
    let (answer, _) = raw(p.http, &get("/admin/x")).await;
    assert_eq!(status_of(&answer), 403, "{answer}");
    for path in ["/admin%2Fx", "/x%2F..%2Fadmin%2Fpanel", "/x%5c..%5cadmin%5cpanel", "/a/..%2F..%2Fetc"] {
        let (answer, _) = raw(p.http, &get(path)).await;
        let status = status_of(&answer);
        assert!(status == 400 || status == 403, "{path} answered {status}");
    }
    assert_eq!(up.requests().len(), 1, "a guarded path reached the backend: {:?}", up.requests());
}

/// Requests that say one thing to the proxy and might say another to the
/// backend, or are not requests a reverse proxy forwards.
#[tokio::test]
async fn targets_hosts_and_methods_are_forwarded_only_when_well_formed() {
    let up = RawEcho::start().await;
    let p = Proxy::start(&guarded(up.addr, ""));
    // Absolute form with an empty path is `/` (RFC 9112 3.2.2), never `?x`.
    let (answer, _) =
        raw(p.http, b"GET http://app.test?x=1 HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n").await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(up.requests()[0].starts_with("GET /?x=1 HTTP/1.1\r\n"), "{:?}", up.requests());
    // No tunnels, and CONNECT in origin form is malformed anyway.
    let (answer, _) = raw(p.http, b"CONNECT /x HTTP/1.1\r\nhost: app.test\r\n\r\n").await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    // No port above 65535.
    let (answer, _) = raw(p.http, b"GET /x HTTP/1.1\r\nhost: app.test:99999\r\nconnection: close\r\n\r\n").await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert_eq!(up.requests().len(), 1);
}

/// Behind a trusted proxy the client is who its `X-Forwarded-For` names,
/// for `ip_allow` too (nginx's `set_real_ip_from`); from anyone else the
/// header means nothing.
#[tokio::test]
async fn ip_allow_judges_the_client_a_trusted_proxy_names() {
    let up = RawEcho::start().await;
    let req = |xff: &str| format!("GET /admin/x HTTP/1.1\r\nhost: app.test\r\n{xff}connection: close\r\n\r\n");
    let p = Proxy::start(&guarded(up.addr, "trusted_proxies = [\"127.0.0.0/8\"]"));
    for (xff, want) in [
        ("x-forwarded-for: 10.1.2.3\r\n", 200),
        ("x-forwarded-for: 10.9.9.9, 203.0.113.5\r\n", 403),
        ("x-forwarded-for: 203.0.113.5, 10.1.2.3\r\n", 200),
        ("", 403),
    ] {
        let (answer, _) = raw(p.http, req(xff).as_bytes()).await;
        assert_eq!(status_of(&answer), want, "{xff:?}: {answer}");
    }
    let untrusted = Proxy::start(&guarded(up.addr, ""));
    let (answer, _) = raw(untrusted.http, req("x-forwarded-for: 10.1.2.3\r\n").as_bytes()).await;
    assert_eq!(status_of(&answer), 403, "{answer}");
}

#[tokio::test]
async fn a_bad_encoded_slashes_value_is_a_config_error_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rampart.toml");
    std::fs::write(
        &path,
        "[server]\nencoded_slashes = \"decode\"\ntrusted_proxies = [\"nope\"]\n[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(binary()).arg("check").arg("--config").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(":2:19: error: encoded_slashes must be \"reject\" or \"keep\""), "{err}");
    assert!(err.contains(":3:19: error: trusted_proxies: invalid CIDR \"nope\""), "{err}");
}

#[tokio::test]
async fn connection_cannot_strip_what_the_proxy_owns() {
    let up = RawEcho::start().await;
    let p = Proxy::start(&guarded(up.addr, ""));
    let req = b"GET /x HTTP/1.1\r\nhost: app.test\r\nx-request-id: abc\r\n\
        connection: close, host, x-forwarded-for, x-forwarded-proto, x-forwarded-host, x-real-ip, x-request-id, x-hop\r\n\
        x-hop: 1\r\n\r\n";
    let (answer, _) = raw(p.http, req).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = up.requests()[0].to_ascii_lowercase();
    for line in [
        "\r\nhost: app.test\r\n",
        "\r\nx-forwarded-for: 127.0.0.1\r\n",
        "\r\nx-forwarded-proto: http\r\n",
        "\r\nx-forwarded-host: app.test\r\n",
        "\r\nx-real-ip: 127.0.0.1\r\n",
        "\r\nx-request-id: abc\r\n",
    ] {
        assert!(seen.contains(line), "{line:?} missing from {seen}");
    }
    assert!(!seen.contains("x-hop"), "{seen}");
}

const CLAIMS: &str = "forwarded: for=1.2.3.4;host=evil.test\r\nx-forwarded-for: 1.2.3.4\r\n\
    x-forwarded-host: evil.test\r\nx-forwarded-port: 8443\r\nx-forwarded-prefix: /admin\r\n\
    x-forwarded-proto: https\r\nx-original-url: /admin/x\r\nx-rewrite-url: /admin/x\r\n";

#[tokio::test]
async fn forwarding_claims_are_believed_only_from_trusted_proxies() {
    let up = RawEcho::start().await;
    let p = Proxy::start(&guarded(up.addr, ""));
    let req = format!("GET /x HTTP/1.1\r\nhost: app.test\r\n{CLAIMS}connection: close\r\n\r\n");
    let (answer, _) = raw(p.http, req.as_bytes()).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = up.requests()[0].to_ascii_lowercase();
    for gone in
        ["forwarded:", "x-forwarded-port", "x-forwarded-prefix", "x-original-url", "x-rewrite-url", "evil", "1.2.3.4"]
    {
        assert!(!seen.contains(gone), "{gone} reached the backend: {seen}");
    }
    assert!(seen.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"), "{seen}");
    assert!(seen.contains("\r\nx-forwarded-proto: http\r\n"), "{seen}");

    let trusted = RawEcho::start().await;
    let p = Proxy::start(&guarded(trusted.addr, "trusted_proxies = [\"127.0.0.0/8\"]"));
    let (answer, _) = raw(p.http, req.as_bytes()).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = trusted.requests()[0].to_ascii_lowercase();
    for kept in [
        "\r\nforwarded: for=1.2.3.4;host=evil.test\r\n",
        "\r\nx-forwarded-for: 1.2.3.4, 127.0.0.1\r\n",
        "\r\nx-forwarded-host: evil.test\r\n",
        "\r\nx-forwarded-proto: https\r\n",
        "\r\nx-forwarded-port: 8443\r\n",
        "\r\nx-original-url: /admin/x\r\n",
    ] {
        assert!(seen.contains(kept), "{kept:?} missing from {seen}");
    }
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_closes_the_connection() {
    let up = RawEcho::start().await;
    let p = Proxy::start(&guarded(up.addr, ""));
    let cases: &[(&str, &[u16])] = &[
        ("POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!", &[400]),
        ("POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n", &[501]),
        ("POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked, chunked\r\n\r\n0\r\n\r\n", &[501]),
        ("POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: identity\r\n\r\n", &[400, 501]),
        ("POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: xchunked\r\n\r\n", &[400, 501]),
        (
            "POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            &[400],
        ),
        ("POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding:\r\n chunked\r\n\r\n0\r\n\r\n", &[400]),
        ("GET /x HTTP/1.1\r\nhost: a\r\nx-folded: a\r\n b\r\n\r\n", &[400]),
        ("GET /x HTTP/1.1\r\nhost : a\r\n\r\n", &[400]),
        ("POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", &[400]),
        ("POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", &[400]),
        ("GET /x HTTP/1.1\r\n\r\n", &[400]),
        ("GET /x HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", &[400]),
        ("GET /x HTTP/1.1\r\nhost: a b\r\n\r\n", &[400]),
        ("GET /x HTTP/1.1\r\nhost: a@b\r\n\r\n", &[400]),
        ("POST /x HTTP/1.0\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", &[400]),
    ];
    for (req, wanted) in cases {
        let (answer, closed) = raw(p.http, req.as_bytes()).await;
        let status = status_of(&answer);
        assert!(wanted.contains(&status), "{req:?} answered {status}, wanted {wanted:?}: {answer}");
        assert!(closed, "{req:?}: the connection stayed open after {status}");
    }
    assert_eq!(up.requests(), Vec::<String>::new(), "a refused request reached the backend");
    assert_eq!(up.bytes(), 0, "bytes of a refused request reached the backend");
}

/// Two framings that hyper's parser would settle before the proxy sees the
/// request (it keeps `Transfer-Encoding` and drops `Content-Length`, or
/// keeps one of two equal lengths) are refused below it, by the request
/// framing guard: 400, the connection closed, and nothing of the request,
/// nor of what follows it on the connection, reaches the backend
/// (`framing_guard.rs`: the same behind pipelined requests, over TLS, ...).
#[tokio::test]
async fn framing_hyper_would_settle_is_refused_before_it() {
    let up = RawEcho::start().await;
    let p = Proxy::start(&guarded(up.addr, ""));
    for req in [
        "POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /admin/x HTTP/1.1\r\nhost: a\r\n\r\n",
        "POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\nGET /admin/x HTTP/1.1\r\nhost: a\r\n\r\n",
        "POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello",
        "POST /x HTTP/1.1\r\nhost: a\r\nContent-Length: 5\r\nCONTENT-LENGTH: 5\r\nconnection: close\r\n\r\nhello",
    ] {
        let (answer, closed) = raw(p.http, req.as_bytes()).await;
        assert_eq!(status_of(&answer), 400, "{req:?}: {answer}");
        assert!(closed, "{req:?}: the connection stayed open: {answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    }
    assert_eq!(up.requests(), Vec::<String>::new(), "a refused request reached the backend");
    assert_eq!(up.bytes(), 0, "bytes of a refused request reached the backend");
}

#[tokio::test]
async fn a_body_shorter_than_declared_never_completes_upstream() {
    let up = RawEcho::start().await;
    let p = Proxy::start(&guarded(up.addr, ""));
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nhello").await.unwrap();
    s.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    // Then a good request, so the echo has had time to record anything.
    let (answer, _) = raw(p.http, &get("/after")).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = up.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].starts_with("GET /after "), "{seen:?}");
}

#[tokio::test]
async fn expect_100_continue_is_answered_by_the_proxy() {
    let up = RawEcho::start().await;
    let p = Proxy::start(&guarded(up.addr, ""));
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 100 Continue\r\n"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    s.write_all(b"hello").await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = up.requests()[0].to_ascii_lowercase();
    assert!(!seen.contains("expect"), "{seen}");
    assert!(seen.ends_with("\r\n\r\nhello"), "{seen}");

    let (answer, _) = raw(p.http, b"GET /x HTTP/1.1\r\nhost: a\r\nexpect: teapot\r\nconnection: close\r\n\r\n").await;
    assert_eq!(status_of(&answer), 417, "{answer}");
}

/// An upstream that breaks HTTP/1.1 framing in the ways `mode` says, and
/// otherwise answers `good`.
async fn bad_upstream(mode: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(len) = complete_request(&buf) else {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let req: Vec<u8> = buf.drain(..len).collect();
                    let head = req.starts_with(b"HEAD ");
                    let evil = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nEVIL";
                    let answer: Vec<u8> = match (mode, head) {
                        ("late-after-head", true) => {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n").await;
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            evil.to_vec()
                        }
                        ("body-after-204", _) => [&b"HTTP/1.1 204 No Content\r\n\r\n"[..], evil].concat(),
                        ("past-length", _) => [&b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ngood"[..], evil].concat(),
                        ("not-http", _) => b"THIS IS NOT HTTP\r\n\r\n".to_vec(),
                        ("two-lengths", _) => b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\ngood".to_vec(),
                        ("chunked-1.0", _) => b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n4\r\ngood\r\n0\r\n\r\n".to_vec(),
                        _ => b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ngood".to_vec(),
                    };
                    if s.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_pooled_connection_with_unexpected_bytes_is_never_reused() {
    for mode in ["late-after-head", "body-after-204", "past-length", "chunked-1.0"] {
        let up = bad_upstream(mode).await;
        let p = Proxy::start(&format!(
            "[upstreams.bad]\nservers = [\"{up}\"]\n[[routes]]\nhost = \"*\"\nupstream = \"bad\"\n"
        ));
        let c = client();
        let first = if mode == "late-after-head" { http::Method::HEAD } else { http::Method::GET };
        let req = http::Request::builder().method(first).uri(p.url("/")).header("host", "a").body(full("")).unwrap();
        let _ = send(&c, req).await;
        if mode == "late-after-head" {
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        for _ in 0..5 {
            let a = send(&c, http::Request::get(p.url("/")).header("host", "a").body(full("")).unwrap()).await;
            assert!(!a.text().contains("EVIL"), "{mode}: another client got the bad upstream's extra bytes");
            assert!(a.status == 200 || a.status == 204, "{mode}: {}", a.status);
        }
    }
}

/// An upstream that answers, but not in HTTP/1.1: 502 saying so, not
/// that the connection broke.
#[tokio::test]
async fn an_invalid_upstream_answer_is_a_502_that_says_so() {
    for mode in ["not-http", "two-lengths"] {
        let up = bad_upstream(mode).await;
        let p = Proxy::start(&format!(
            "[upstreams.bad]\nservers = [\"{up}\"]\nretries = 0\n[[routes]]\nhost = \"*\"\nupstream = \"bad\"\n"
        ));
        let a = send(&client(), http::Request::get(p.url("/")).header("host", "a").body(full("")).unwrap()).await;
        assert_eq!(a.status, 502, "{mode}");
        assert!(a.text().contains("upstream sent an invalid response"), "{mode}: {}", a.text());
    }
}

#[tokio::test]
async fn a_reload_reads_the_htpasswd_file_again_even_when_the_config_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let alice = bcrypt::hash("alice-pw", 4).unwrap();
    let bob = bcrypt::hash("bob-pw", 4).unwrap();
    let htpasswd = dir.path().join("users.htpasswd");
    std::fs::write(&htpasswd, format!("alice:{alice}\nbob:{bob}\n")).unwrap();
    let up = Upstream::named("in").await;
    let p = Proxy::start_in(
        dir,
        &format!(
            "[upstreams.app]\nservers = [\"{}\"]\n[middleware.auth]\ntype = \"basic_auth\"\nhtpasswd = \"users.htpasswd\"\n\
             [[routes]]\nhost = \"*\"\nupstream = \"app\"\nmiddleware = [\"auth\"]\n",
            up.addr
        ),
    );
    use base64::Engine;
    let auth = |user: &str, pw: &str| {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
    };
    let c = client();
    let ask = |cred: String| {
        let c = c.clone();
        let url = p.url("/");
        async move { send(&c, http::Request::get(url).header("authorization", cred).body(full("")).unwrap()).await.status }
    };
    assert_eq!(ask(auth("bob", "bob-pw")).await, 200);
    assert_eq!(ask(auth("bob", "bob-pw")).await, 200, "second time from the verified cache");
    assert_eq!(ask(auth("nobody", "x")).await, 401);
    std::fs::write(&htpasswd, format!("alice:{alice}\n")).unwrap();
    assert_eq!(post_reload(&p).await.status, 200);
    assert_eq!(ask(auth("bob", "bob-pw")).await, 401, "bob was removed from the file");
    assert_eq!(ask(auth("alice", "alice-pw")).await, 200);
}

/// Heads hyper refuses itself (malformed, too large, or made to fail by
/// the framing guard) never reach the proxy's service; they are still
/// logged and counted, as nginx logs its 400s, under no route with their
/// method and path unknown.
#[tokio::test]
async fn refused_heads_are_logged_and_counted() {
    let p = Proxy::start(&format!(
        "[server]\nmax_header_bytes = \"16KiB\"\n[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n",
        closed_port()
    ));
    let answers = [
        raw_exchange(p.http, b"GARBAGE\r\n\r\n").await,
        raw_exchange(p.http, format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "a".repeat(40_000)).as_bytes())
            .await,
        raw_exchange(
            p.http,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .await,
    ];
    let statuses: Vec<&str> = answers.iter().map(|a| a.get(9..12).unwrap_or(a)).collect();
    assert_eq!(statuses, ["400", "431", "400"], "{answers:?}");
    let logged = || {
        let refused: Vec<i64> = p
            .access_log()
            .iter()
            .filter(|l| l["method"] == "-" && l["path"] == "-" && l["route"].is_null())
            .filter_map(|l| l["status"].as_i64())
            .collect();
        refused.len() == 3 && refused.iter().filter(|&&s| s == 400).count() == 2
    };
    assert!(eventually(Duration::from_secs(10), logged).await, "{:?}", p.access_log());
    let m = crate::util::get(&p.admin_url("/metrics"), "a").await.text();
    assert!(m.contains("rampart_http_requests_total{route=\"none\",method=\"OTHER\",code=\"400\"} 2"), "{m}");
    assert!(m.contains("rampart_http_requests_total{route=\"none\",method=\"OTHER\",code=\"431\"} 1"), "{m}");
}

/// 300 connections to the admin listener that never send a request (past
/// its 256 slots, within the default 10 s header timeout): the oldest make
/// room, so the health probe and a scrape on a new connection still get
/// their answer.
#[tokio::test]
async fn idle_connections_cannot_shut_out_the_admin_listeners_probes() {
    let up = RawEcho::start().await;
    let p = Proxy::start(&format!("[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n", up.addr));
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(p.admin).await.unwrap());
    }
    for path in ["/healthz", "/metrics"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        let (answer, _) = raw(p.admin, request.as_bytes()).await;
        assert_eq!(status_of(&answer), 200, "{path} on a new connection during the flood: {answer:?}");
    }
    // The oldest of the flood were closed to make room, not left open.
    let mut closed = 0;
    for s in &mut idle {
        let mut one = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(20), s.read(&mut one)).await {
            closed += 1;
        }
    }
    assert!(closed >= 40, "only {closed} of 300 idle connections closed");
}
