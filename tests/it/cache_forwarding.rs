//! The cache and the forwarding headers: a fresh hit is looked up before
//! `X-Forwarded-*` and `X-Real-IP` are added, so a response that varies on
//! one of them must still be chosen by the values the upstream would get,
//! never by what an untrusted client claimed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::*;

/// One GET over a connection from `source` (a loopback address).
async fn get_from(source: &str, proxy: std::net::SocketAddr, extra: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(proxy).await.unwrap();
    let req = format!("GET /who HTTP/1.1\r\nHost: site.test\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn cache_variants_by_forwarded_for_follow_the_real_client_not_its_claim() {
    let n = Arc::new(AtomicUsize::new(0));
    let up = Upstream::start(move |req: Request<Incoming>| {
        let n = n.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let xff = req.headers().get("x-forwarded-for").map(|v| v.to_str().unwrap().to_string());
            let mut r = Response::new(full(format!("n={n} xff={xff:?}")));
            r.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
            r.headers_mut().insert("vary", "X-Forwarded-For".parse().unwrap());
            r
        }
    })
    .await;
    let p = Proxy::start(&format!(
        "[upstreams.app]\nservers = [\"{}\"]\n\n[middleware.edge]\ntype = \"cache\"\n\n\
         [[routes]]\nname = \"site\"\nhost = \"*\"\npath = \"/\"\nupstream = \"app\"\nmiddleware = [\"edge\"]\n",
        up.addr
    ));
    let first = get_from("127.0.0.1", p.http, "").await;
    assert!(first.ends_with("n=1 xff=Some(\"127.0.0.1\")"), "{first}");
    let again = get_from("127.0.0.1", p.http, "").await;
    assert!(again.ends_with("n=1 xff=Some(\"127.0.0.1\")") && again.contains("Rampart; hit"), "{again}");
    // Another client claiming to be the first one: an untrusted claim is
    // dropped, so its variant is its own address, a miss.
    let other = get_from("127.0.0.2", p.http, "X-Forwarded-For: 127.0.0.1\r\n").await;
    assert!(other.ends_with("n=2 xff=Some(\"127.0.0.2\")"), "{other}");
    assert!(other.contains("fwd=vary-miss"), "{other}");
    assert_eq!(up.hits(), 2);
}
