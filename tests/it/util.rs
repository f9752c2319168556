//! Shared test helpers: real upstream servers on loopback ephemeral ports,
//! the real `rampart` binary started on a generated config, and small
//! clients. Nothing here is a mock.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// A test upstream: a hyper server on 127.0.0.1:0 running `handler`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    /// Cancels open connections too, so `stop` is like killing the process.
    kill: tokio_util::sync::CancellationToken,
}

impl Upstream {
    pub async fn start<F, Fut>(handler: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<BoxBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve_on(listener, handler)
    }

    pub fn serve_on<F, Fut>(listener: TcpListener, handler: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<BoxBody>> + Send + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h2 = Arc::clone(&hits);
        let kill = tokio_util::sync::CancellationToken::new();
        let k2 = kill.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let hits = Arc::clone(&h2);
                let kill = k2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let f = handler(req);
                        async move { Ok::<_, Infallible>(f.await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = kill.cancelled() => {}
                    }
                });
            }
        });
        Upstream { addr, hits, task, kill }
    }

    /// Answers every request with its name.
    pub async fn named(name: &'static str) -> Upstream {
        Upstream::start(move |_req| async move { Response::new(full(name)) }).await
    }

    /// Answers with JSON describing the request it received.
    pub async fn echo() -> Upstream {
        Upstream::start(|req: Request<Incoming>| async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let headers: HashMap<String, Vec<String>> = parts
                .headers
                .keys()
                .map(|k| {
                    (
                        k.to_string(),
                        parts
                            .headers
                            .get_all(k)
                            .iter()
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                            .collect(),
                    )
                })
                .collect();
            let v = serde_json::json!({
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "version": format!("{:?}", parts.version),
                "headers": headers,
                "body_len": body.len(),
            });
            let mut r = Response::new(full(v.to_string()));
            r.headers_mut().insert("connection", "keep-alive, x-upstream-private".parse().unwrap());
            r.headers_mut().insert("x-upstream-private", "secret".parse().unwrap());
            r.headers_mut().insert("keep-alive", "timeout=5".parse().unwrap());
            r
        })
        .await
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stop listening and cut every open connection, like a killed process.
    pub fn stop(&self) {
        self.task.abort();
        self.kill.cancel();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Bind `addr` again (after the upstream that had it was stopped).
pub async fn rebind(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot rebind {addr}");
}

/// `/api/status` of a running proxy.
pub async fn status(p: &Proxy) -> serde_json::Value {
    get(&p.admin_url("/api/status"), "admin").await.json()
}

/// `server` of `pool` on the status page.
fn server_status<'a>(status: &'a serde_json::Value, pool: &str, server: SocketAddr) -> Option<&'a serde_json::Value> {
    status["upstreams"].as_array()?.iter().find(|u| u["name"] == pool)?["servers"]
        .as_array()?
        .iter()
        .find(|s| s["addr"] == server.to_string())
}

/// Whether the status page says `server` of `pool` is in rotation.
pub fn server_up(status: &serde_json::Value, pool: &str, server: SocketAddr) -> Option<bool> {
    server_status(status, pool, server)?["up"].as_bool()
}

/// The idle connections the status page shows for `server` of `pool`.
pub fn server_idle(status: &serde_json::Value, pool: &str, server: SocketAddr) -> Option<u64> {
    server_status(status, pool, server)?["idle"].as_u64()
}

/// Poll an async condition until it holds or `within` passes.
pub async fn eventually_async<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free port with nothing listening on it, for a listener a test starts
/// later (Pebble's, an ACME proxy's) or for a refused connection.
///
/// Picked below Linux's ephemeral range (32768 and up): a port taken there
/// (bind to :0, release) can go to an outgoing connection of a test running
/// alongside before it is bound again (seen in CI: "Address already in
/// use"). Below it only explicit binds take ports, and this process hands
/// each port out once.
pub fn closed_port() -> SocketAddr {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // Runs of the suite started close together begin at different places.
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = u16::try_from(FIRST + (start + n) % SPAN).unwrap();
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().unwrap();
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

/// The real binary, started on a config file written to a temp dir.
pub struct Proxy {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rampart"))
}

/// A file of the repository, by its path from the root.
pub fn repo_file(rel: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Default listen section: every listener on an ephemeral port.
pub const LISTEN: &str = "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n";

impl Proxy {
    /// Start with `config` (TOML). Unless it has a `[listen]` table, the
    /// listeners go on ephemeral ports.
    pub fn start(config: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config)
    }

    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Proxy {
        Self::start_in_env(dir, config, &[])
    }

    /// Start with extra environment variables (`DOCKER_HOST`, ...).
    pub fn start_in_env(dir: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Proxy {
        Self::launch(Command::new(binary()), dir, config, env)
    }

    /// Start through `wrapper`, a command prefix that execs the binary in
    /// place (`ip netns exec NAME`), so the child is still the proxy.
    pub fn start_wrapped(wrapper: &[String], config: &str) -> Proxy {
        let (program, args) = wrapper.split_first().expect("a wrapper command");
        let mut cmd = Command::new(program);
        cmd.args(args).arg(binary());
        Self::launch(cmd, tempfile::tempdir().unwrap(), config, &[])
    }

    fn launch(mut cmd: Command, dir: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Proxy {
        let text = if config.contains("[listen]") { config.to_string() } else { format!("{LISTEN}\n{config}") };
        let path = dir.path().join("rampart.toml");
        std::fs::write(&path, text).unwrap();
        let mut child = cmd
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = collect_lines(child.stdout.take().unwrap());
        let stderr = collect_lines(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut addrs: HashMap<String, SocketAddr> = HashMap::new();
        while !(addrs.contains_key("http") && addrs.contains_key("admin")) {
            if Instant::now() > deadline {
                panic!("proxy did not start; stderr:\n{}", stderr.lock().unwrap().join("\n"));
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("proxy exited with {status}; stderr:\n{}", stderr.lock().unwrap().join("\n"));
            }
            for line in stderr.lock().unwrap().iter() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    if v["fields"]["message"] == "listening" {
                        let name = v["fields"]["listener"].as_str().unwrap_or("").to_string();
                        if let Some(a) = v["fields"]["addr"].as_str().and_then(|a| a.parse().ok()) {
                            addrs.insert(name, a);
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Proxy {
            child,
            http: addrs["http"],
            https: addrs.get("https").copied(),
            admin: addrs["admin"],
            dir,
            stdout,
            stderr,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("rampart.toml")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
    }

    /// Wait for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Access-log lines parsed as JSON.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.stdout.lock().unwrap().iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Log lines (stderr) that contain every one of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        self.stderr.lock().unwrap().iter().filter(|l| needles.iter().all(|n| l.contains(n))).cloned().collect()
    }

    /// Resident memory of the proxy process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect_lines(r: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l2 = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            l2.lock().unwrap().push(line);
        }
    });
    lines
}

/// Poll `f` until it returns true or `within` passes.
pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// An HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, BoxBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2c_client() -> Client<HttpConnector, BoxBody> {
    Client::builder(TokioExecutor::new()).http2_only(true).build(HttpConnector::new())
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// GET `url` with a `Host` header.
pub async fn get(url: &str, host: &str) -> Answer {
    send(&client(), Request::get(url).header("host", host).body(full("")).unwrap()).await
}

/// `POST /api/reload` on the proxy's admin listener.
pub async fn post_reload(p: &Proxy) -> Answer {
    send(&client(), Request::post(p.admin_url("/api/reload")).body(full("")).unwrap()).await
}

pub async fn send(c: &Client<HttpConnector, BoxBody>, req: Request<BoxBody>) -> Answer {
    let resp = tokio::time::timeout(Duration::from_secs(30), c.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Answer { status: parts.status, headers: parts.headers, body }
}

/// One HTTP/2 (prior knowledge) GET over a fresh connection to `addr`; the
/// URI's authority becomes `:authority`.
pub async fn h2c_get(addr: SocketAddr, uri: &str) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(Request::get(uri).body(full("")).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Answer { status: parts.status, headers: parts.headers, body }
}

const CHROMIUM: &str = "/usr/bin/chromium";

/// Run headless Chromium on `url` with `extra` flags (`--dump-dom`,
/// `--screenshot=...`), with the flags this closed network needs, a fresh
/// profile, and 5 s of virtual time for the page's scripts. Blocking.
pub fn chromium(url: &str, extra: &[&str]) -> std::process::Output {
    if !std::path::Path::new(CHROMIUM).exists() {
        panic!("{CHROMIUM} is needed for this test; install it with `apt-get install chromium` (scripts/test does)");
    }
    let profile = tempfile::tempdir().unwrap();
    Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap()
}

/// A WebSocket echo upstream (tokio-tungstenite) on an ephemeral port.
pub async fn ws_echo_upstream() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else { return };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() || m.is_binary() {
                        let _ = ws.send(m).await;
                    }
                }
            });
        }
    });
    addr
}

/// Send `piece(i)` for i = 0, 1, … with `every` between them, at most
/// `times` times, until the peer closes. Returns whether it did (answers it
/// sends meanwhile, such as a TLS alert, are read and ignored).
pub async fn trickle_until_closed(
    s: &mut tokio::net::TcpStream,
    every: Duration,
    times: usize,
    piece: impl Fn(usize) -> Vec<u8>,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 256];
    for i in 0..times {
        if s.write_all(&piece(i)).await.is_err() {
            return true;
        }
        match tokio::time::timeout(every, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    false
}

/// Whether the next read on `s` within `within` finds the connection
/// closed (end of stream or an error), and what it found, for messages.
pub async fn next_read_closes<S: tokio::io::AsyncRead + Unpin>(s: &mut S, within: Duration) -> (bool, String) {
    let mut buf = [0u8; 256];
    let got = tokio::time::timeout(within, tokio::io::AsyncReadExt::read(s, &mut buf)).await;
    (matches!(got, Ok(Ok(0)) | Ok(Err(_))), format!("{got:?}"))
}

/// Send `request` as raw bytes on a new connection to `addr` and read the
/// answer until the server closes (at most 10 s); the answer as text.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}
