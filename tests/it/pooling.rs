//! Upstream keep-alive: connections are reused whatever the body framing,
//! and one the upstream closed while idle is replaced without an error.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::*;

fn route(addr: std::net::SocketAddr) -> String {
    format!("[upstreams.app]\nservers = [\"{addr}\"]\n[[routes]]\nupstream = \"app\"\n")
}

/// Read one bodiless request head; returns its request line.
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    text.lines().next().map(str::to_string)
}

fn answer(request_line: &str) -> &'static [u8] {
    let head = request_line.starts_with("HEAD ");
    match request_line.split(' ').nth(1).unwrap_or("/") {
        "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "/none" => b"HTTP/1.1 204 No Content\r\n\r\n",
        _ if head => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    }
}

/// A raw upstream counting its connections; each serves at most
/// `per_conn` requests, then is closed without notice.
async fn upstream(per_conn: usize) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                for _ in 0..per_conn {
                    let Some(line) = read_head(&mut s).await else { return };
                    if s.write_all(answer(&line)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn one_upstream_connection_serves_every_kind_of_body() {
    let (addr, accepted) = upstream(usize::MAX).await;
    let p = Proxy::start(&route(addr));
    let c = client();
    for _ in 0..3 {
        for (method, path, status, body) in [
            ("GET", "/len", 200, "hello"),
            ("GET", "/chunked", 200, "hello"),
            ("GET", "/none", 204, ""),
            ("HEAD", "/len", 200, ""),
        ] {
            let req =
                http::Request::builder().method(method).uri(p.url(path)).header("host", "x").body(full("")).unwrap();
            let a = send(&c, req).await;
            assert_eq!((a.status.as_u16(), a.text().as_str()), (status, body), "{method} {path}");
        }
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connections_the_upstream_closed_while_idle_are_replaced() {
    let (addr, accepted) = upstream(1).await;
    let p = Proxy::start(&route(addr));
    let c = client();
    for i in 0..6 {
        // Back to back (the close may not have been seen yet) and spaced.
        if i % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let a = send(&c, http::Request::get(p.url("/len")).header("host", "x").body(full("")).unwrap()).await;
        assert_eq!((a.status.as_u16(), a.text().as_str()), (200, "hello"), "request {i}");
        // A body is safe to resend too when nothing was written.
        let req = http::Request::post(p.url("/len")).header("host", "x").body(full("")).unwrap();
        assert_eq!(send(&c, req).await.status, 200, "post {i}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 12);
}

/// A burst of 300 concurrent requests (one HTTP/2 client connection, as a
/// browser or an h2 load generator sends them) needs 300 upstream
/// connections at once; all of them stay idle for the next burst, which
/// opens none. With an idle cap below the burst (256 was the old default)
/// each burst closed the surplus and the next one reconnected it.
#[tokio::test]
async fn a_burst_above_256_concurrent_requests_keeps_every_connection_for_the_next() {
    const BURST: usize = 300;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    // Each connection holds its answer until the whole burst has arrived,
    // so the proxy cannot serve two requests of a burst on one connection.
    let all_arrived = Arc::new(tokio::sync::Barrier::new(BURST));
    let (count, barrier) = (Arc::clone(&accepted), Arc::clone(&all_arrived));
    tokio::spawn(async move {
        loop {
            // An accept error (EMFILE on a host with a low fd limit) must
            // not end the loop: the burst would wait on the barrier forever.
            let Ok((mut s, _)) = l.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                while let Some(line) = read_head(&mut s).await {
                    barrier.wait().await;
                    if s.write_all(answer(&line)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let p = Proxy::start(&format!("[server]\nh2_max_concurrent_streams = 512\n{}", route(addr)));
    let c = h2c_client();
    for burst in 0..2 {
        let requests = (0..BURST).map(|_| {
            let req = http::Request::get(p.url("/len")).header("host", "x").body(full("")).unwrap();
            send(&c, req)
        });
        let answers = tokio::time::timeout(Duration::from_secs(60), futures_util::future::join_all(requests)).await;
        let Ok(answers) = answers else {
            panic!(
                "burst {burst} did not complete: upstream accepted {}, idle {:?}",
                accepted.load(Ordering::SeqCst),
                server_idle(&status(&p).await, "app", addr)
            );
        };
        for a in answers {
            assert_eq!((a.status.as_u16(), a.text().as_str()), (200, "hello"), "burst {burst}");
        }
        let parked = eventually_async(Duration::from_secs(10), || async {
            server_idle(&status(&p).await, "app", addr) == Some(BURST as u64)
        })
        .await;
        assert!(parked, "burst {burst}: idle {:?}", server_idle(&status(&p).await, "app", addr));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), BURST, "the second burst opened new connections");
}

/// A small answer whose head comes alone is passed on with its body's
/// first bytes, in one write to the client, as nginx does: handed on
/// alone, the head went out by itself and the body in a second write.
#[tokio::test]
async fn a_small_answer_whose_head_comes_alone_reaches_the_client_in_one_write() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                while let Some(line) = read_head(&mut s).await {
                    if line.contains("/empty") {
                        // Nothing to wait for: not held.
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
                        continue;
                    }
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n").await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = s.write_all(b"hello-body").await;
                }
            });
        }
    });
    let p = Proxy::start(&route(addr));
    let proxy: std::net::SocketAddr = p.url("").trim_start_matches("http://").trim_end_matches('/').parse().unwrap();
    let mut c = TcpStream::connect(proxy).await.unwrap();
    let mut buf = vec![0u8; 4096];
    for (path, body) in [("/split", "hello-body"), ("/empty", ""), ("/split", "hello-body")] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        c.write_all(req.as_bytes()).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await.unwrap().unwrap();
        let first = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        assert!(first.ends_with(&format!("\r\n\r\n{body}")), "{path}: the first read was {first:?}");
    }
}
