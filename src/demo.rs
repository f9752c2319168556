//! `rampart demo`: three small upstream apps on loopback standing in for the
//! reference stack (customer frontend, admin frontend, API), the proxy in
//! front of them on unprivileged ports, and curl commands to try.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::body::ResponseBody;
use crate::config::Config;
use crate::{Running, StartError};

/// The demo's routing: the two-host layout from the design notes.
const DEMO_CONFIG: &str = r#"
[listen]
http = "{HTTP}"
https = "{HTTPS}"
admin = "{ADMIN_LISTEN}"

# No certificates on disk: HTTPS uses a self-signed certificate for
# localhost and the demo hosts. Plain HTTP keeps serving routes.
[tls]
certs_dir = "{CERTS}"
redirect_http = false

[upstreams.api]
balance = "least_conn"
servers = ["{API}"]
[upstreams.api.health]
path = "/api/health"
interval = "10s"

[upstreams.frontend]
servers = ["{FRONTEND}"]

[upstreams.admin-frontend]
servers = ["{ADMIN}"]

[[routes]]
host = "logen.localhost"
path = "/api/"
strip_prefix = true
upstream = "api"

[[routes]]
host = "logen.localhost"
path = "/customer/"
upstream = "api"

[[routes]]
host = "logen.localhost"
path = "/"
upstream = "frontend"

[[routes]]
host = "admin.logen.localhost"
path = "/api/"
strip_prefix = true
upstream = "api"

[[routes]]
host = "admin.logen.localhost"
path = "/admin/"
upstream = "api"

[[routes]]
host = "admin.logen.localhost"
path = "/"
upstream = "admin-frontend"
"#;

/// Where the demo listens (the contract's ports by default).
#[derive(Debug, Clone, Copy)]
pub struct DemoListen {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
}

/// Start the demo upstreams and the proxy; prints what to try.
pub async fn start(listen: DemoListen) -> Result<Running, StartError> {
    let mut addrs = Vec::new();
    for name in ["api", "frontend", "admin-frontend"] {
        addrs.push(spawn_app(name).await.map_err(|source| crate::server::ServerError::Bind {
            listener: "demo upstream",
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })?);
    }
    let text = DEMO_CONFIG
        .replace("{API}", &addrs[0].to_string())
        .replace("{FRONTEND}", &addrs[1].to_string())
        .replace("{ADMIN}", &addrs[2].to_string())
        .replace("{HTTP}", &listen.http.to_string())
        .replace("{HTTPS}", &listen.https.to_string())
        .replace("{ADMIN_LISTEN}", &listen.admin.to_string())
        .replace("{CERTS}", &std::env::temp_dir().join("rampart-demo-certs").display().to_string());
    let config = Config::parse(Path::new("<demo>"), &text)?;
    let running = crate::start(config, None).await?;
    let http = running.http_addr.map(|a| a.to_string()).unwrap_or_default();
    let https = running.https_addr.map(|a| a.port()).unwrap_or_default();
    let admin = running.admin_addr.map(|a| a.to_string()).unwrap_or_default();
    println!(
        "\nRampart demo is running. Upstreams: api={} frontend={} admin-frontend={}\nTry:\n\
         \x20 curl -H 'Host: logen.localhost' http://{http}/                 # customer frontend\n\
         \x20 curl -H 'Host: logen.localhost' 'http://{http}/api/users?page=2' # API, /api prefix stripped\n\
         \x20 curl -H 'Host: logen.localhost' http://{http}/customer/42       # API, path kept\n\
         \x20 curl -H 'Host: admin.logen.localhost' http://{http}/            # admin frontend\n\
         \x20 curl -H 'Host: admin.logen.localhost' http://{http}/admin/users # API, admin area\n\
         \x20 curl -i -H 'Host: unknown.example' http://{http}/              # no route: 404\n\
         \x20 curl -k https://localhost:{https}/ -H 'Host: logen.localhost'  # HTTPS, self-signed cert\n\
         \x20 curl -k --http2 --resolve logen.localhost:{https}:127.0.0.1 https://logen.localhost:{https}/api/users # HTTP/2 over TLS\n\
         \x20 curl http://{admin}/metrics                                    # Prometheus metrics\n\
         \x20 curl http://{admin}/api/status                                 # live status (JSON); the page is http://{admin}/\n\
         Press Ctrl-C to stop.\n",
        addrs[0], addrs[1], addrs[2]
    );
    Ok(running)
}

/// A tiny app that answers every request with JSON describing what it got.
pub async fn spawn_app(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(name, req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn answer(name: &'static str, req: Request<Incoming>) -> Result<Response<ResponseBody>, Infallible> {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned())))
        .collect();
    let body = serde_json::json!({
        "app": name,
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "headers": headers,
    });
    let mut r = Response::new(ResponseBody::full(format!("{body:#}\n")));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

/// `rampart healthcheck`: a blocking GET of the admin `/healthz`, written
/// with std so the image needs no curl.
pub fn healthcheck(url: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;

    let rest = url.strip_prefix("http://").ok_or("only http:// URLs are supported")?;
    let (authority, path) =
        rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/healthz".into()));
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {authority}"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).map_err(|e| match e.kind() {
        // A read timeout shows as EAGAIN ("Resource temporarily unavailable").
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!("{url} did not answer within 3s"),
        _ => format!("{url}: {e}"),
    })?;
    let head = String::from_utf8_lossy(&buf[..n]);
    if head.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("{url} answered: {}", head.lines().next().unwrap_or("nothing")))
    }
}
