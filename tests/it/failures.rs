//! Upstream failures get clear answers: 502, 503, 504; retries; cancellation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::*;

fn route(servers: &str, extra: &str) -> String {
    format!("[upstreams.app]\nservers = [{servers}]\n{extra}\n[[routes]]\nupstream = \"app\"\n")
}

#[tokio::test]
async fn connection_refused_is_502() {
    let p = Proxy::start(&route(&format!("\"{}\"", closed_port()), ""));
    let a = get(&p.url("/"), "x").await;
    assert_eq!(a.status, 502);
    assert_eq!(a.headers["content-type"], "text/plain; charset=utf-8");
    assert!(a.text().contains("upstream connection failed"));
}

#[tokio::test]
async fn connection_reset_before_an_answer_is_502() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            // Close without answering.
            drop(s);
        }
    });
    let p = Proxy::start(&route(&format!("\"{addr}\""), ""));
    // POST with a body is never replayed, so the broken exchange surfaces.
    let req = http::Request::post(p.url("/")).header("host", "x").body(full("data")).unwrap();
    let a = send(&client(), req).await;
    assert_eq!(a.status, 502);
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let up = Upstream::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Response::new(full("late"))
    })
    .await;
    let p = Proxy::start(&route(&format!("\"{}\"", up.addr), "response_timeout = \"300ms\""));
    let a = get(&p.url("/"), "x").await;
    assert_eq!(a.status, 504);
    assert!(a.text().contains("did not answer in time"));
}

/// Send a request head and then `body` one byte at a time, `every` apart,
/// and read the whole answer (the proxy closes after it or is asked to).
async fn trickled_upload(addr: std::net::SocketAddr, length: usize, body: &[u8], every: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    for b in body {
        tokio::time::sleep(every).await;
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn an_upload_that_keeps_moving_outlasts_response_timeout() {
    // Ten bytes, 400 ms apart: twice the timeout in all, never a gap of it.
    let up = Upstream::echo().await;
    let p = Proxy::start(&route(&format!("\"{}\"", up.addr), "response_timeout = \"2s\""));
    let answer = trickled_upload(p.http, 10, b"0123456789", Duration::from_millis(400)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"body_len\":10"), "{answer}");
}

#[tokio::test]
async fn a_stalled_upload_is_408_and_not_held_against_the_server() {
    // The client promises 100 bytes and sends 3. Its fault, so both
    // servers stay in rotation (max_fails = 1 would eject one otherwise;
    // two, as a pool's only server is never ejected by live traffic).
    let (up, other) = (Upstream::echo().await, Upstream::echo().await);
    let servers = format!("\"{}\", \"{}\"", up.addr, other.addr);
    let p = Proxy::start(&route(&servers, "response_timeout = \"300ms\"\nmax_fails = 1"));
    for _ in 0..2 {
        let answer = trickled_upload(p.http, 100, b"abc", Duration::ZERO).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request body stopped arriving"), "{answer}");
    }
    assert_eq!(get(&p.url("/"), "x").await.status, 200);
    let s = status(&p).await;
    assert_eq!((server_up(&s, "app", up.addr), server_up(&s, "app", other.addr)), (Some(true), Some(true)));
}

/// Live traffic never takes a pool's only server out (nginx ignores
/// `max_fails` for a group of one): one endpoint that times out would
/// otherwise answer every request of the site 503 for the cool-down.
#[tokio::test]
async fn a_pools_only_server_stays_in_rotation_through_failures() {
    let up = Upstream::start(|req: http::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Response::new(full("ok"))
    })
    .await;
    let p = Proxy::start(&route(&format!("\"{}\"", up.addr), "response_timeout = \"200ms\"\nmax_fails = 1"));
    for _ in 0..3 {
        assert_eq!(get(&p.url("/slow"), "x").await.status, 504);
    }
    let a = get(&p.url("/"), "x").await;
    assert_eq!((a.status.as_u16(), a.text().as_str()), (200, "ok"));
    assert_eq!(server_up(&status(&p).await, "app", up.addr), Some(true));
}

/// An answer that is no valid HTTP is the endpoint's 502, not a sign the
/// server is down (nginx's `invalid_header` is not among the failures
/// `max_fails` counts by default): the server stays in rotation.
#[tokio::test]
async fn malformed_answers_do_not_eject_a_server() {
    async fn raw_upstream() -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut head = Vec::new();
                    loop {
                        let Ok(n) = s.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                            let bad = head.starts_with(b"GET /bad ");
                            head.drain(..end + 4);
                            let answer: &[u8] = if bad {
                                b"HTTP/1.1 200 OK\r\nX Bad: 1\r\nContent-Length: 2\r\n\r\nok"
                            } else {
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                            };
                            if s.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }
    let (a, b) = (raw_upstream().await, raw_upstream().await);
    let p = Proxy::start(&route(&format!("\"{a}\", \"{b}\""), "max_fails = 1"));
    for _ in 0..4 {
        assert_eq!(get(&p.url("/bad"), "x").await.status, 502);
    }
    let s = status(&p).await;
    assert_eq!((server_up(&s, "app", a), server_up(&s, "app", b)), (Some(true), Some(true)));
    assert_eq!(get(&p.url("/"), "x").await.status, 200);
}

#[tokio::test]
async fn a_malformed_request_body_is_400_and_a_client_that_leaves_mid_upload_is_499() {
    let up = Upstream::echo().await;
    let p = Proxy::start(&route(&format!("\"{}\"", up.addr), ""));
    for chunks in ["zz\r\nhello\r\n0\r\n\r\n", "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"] {
        let request =
            format!("POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunks}");
        let answer = raw_exchange(p.http, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{chunks:?}: {answer}");
        assert!(answer.contains("invalid request body"), "{answer}");
    }
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"POST /left HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789").await.unwrap();
    // The malformed bodies sent nothing upstream (the head waits for the
    // body's first piece). Let the proxy start this one, then leave.
    assert!(eventually(Duration::from_secs(5), || up.hits() == 1).await);
    drop(s);
    let logged = || p.access_log().iter().any(|l| l["path"] == "/left" && l["status"] == 499);
    assert!(eventually(Duration::from_secs(10), logged).await, "{:?}", p.access_log());
}

#[tokio::test]
async fn a_slow_head_on_the_admin_listener_is_cut_off_too() {
    let up = Upstream::named("x").await;
    let p = Proxy::start(&format!(
        "[server]\nclient_header_timeout = \"500ms\"\n{}",
        route(&format!("\"{}\"", up.addr), "")
    ));
    let mut s = tokio::net::TcpStream::connect(p.admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let (closed, got) = next_read_closes(&mut s, Duration::from_secs(20)).await;
    assert!(closed, "a half-sent head kept its admin connection: {got}");
    assert_eq!(get(&p.admin_url("/healthz"), "x").await.status, 200);
    // A known path with another method: 405 and what it takes.
    let a = get(&p.admin_url("/api/reload"), "x").await;
    assert_eq!((a.status.as_u16(), a.headers["allow"].to_str().unwrap()), (405, "POST"));
    assert_eq!(get(&p.admin_url("/nothing"), "x").await.status, 404);
}

#[tokio::test]
async fn connect_timeout_is_504() {
    let (_hole, addr, _fillers) = black_hole();
    let p = Proxy::start(&route(&format!("\"{addr}\""), "connect_timeout = \"300ms\"\nretries = 0"));
    let a = get(&p.url("/"), "x").await;
    assert_eq!(a.status, 504, "{}", a.text());
}

/// A listener whose accept queue is full: further SYNs are dropped, so
/// connects to it hang until the proxy's timeout (keep all three alive).
fn black_hole() -> (socket2::Socket, std::net::SocketAddr, Vec<std::net::TcpStream>) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let fillers = (0..4).filter_map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok());
    let fillers = fillers.collect();
    (sock, addr, fillers)
}

/// A server that leaves its pool (a stopped container's address, which
/// no longer answers a connect) does not hold the requests connecting to
/// it for the whole `connect_timeout`: they end when it leaves.
#[tokio::test]
async fn connects_to_a_server_that_left_the_pool_end_when_it_leaves() {
    let (_hole, addr, _fillers) = black_hole();
    let good = Upstream::named("good").await;
    let p = Proxy::start(&route(&format!("\"{addr}\""), "connect_timeout = \"60s\"\nretries = 0"));
    let url = p.url("/");
    let stuck = tokio::spawn(async move { get(&url, "x").await.status });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!stuck.is_finished(), "the connect to the black hole should hang");
    let text = std::fs::read_to_string(p.config_path()).unwrap();
    std::fs::write(p.config_path(), text.replace(&addr.to_string(), &good.addr.to_string())).unwrap();
    assert_eq!(post_reload(&p).await.status, 200);
    let status = tokio::time::timeout(Duration::from_secs(20), stuck).await.expect("still connecting").unwrap();
    assert_eq!(status, 502);
    assert_eq!(get(&p.url("/"), "x").await.text(), "good");
}

#[tokio::test]
async fn bodiless_requests_are_retried_on_another_server_after_a_connect_failure() {
    let good = Upstream::named("good").await;
    let p = Proxy::start(&route(&format!("\"{}\", \"{}\"", closed_port(), good.addr), ""));
    for _ in 0..10 {
        let a = get(&p.url("/"), "x").await;
        assert_eq!(a.status, 200);
        assert_eq!(a.text(), "good");
    }
    assert_eq!(good.hits(), 10);
}

#[tokio::test]
async fn requests_with_a_body_are_retried_on_another_server_after_a_connect_failure() {
    // Nothing was sent to a server that refused the connection, and the
    // body was not read yet: it goes to the next server whole (nginx's
    // proxy_next_upstream error, HAProxy's redispatch on connect failure).
    let echo = Upstream::echo().await;
    let p = Proxy::start(&route(&format!("\"{}\", \"{}\"", closed_port(), echo.addr), ""));
    let c = client();
    for i in 0..10 {
        let body = format!("upload number {i}");
        let req = http::Request::post(p.url("/up")).header("host", "x").body(full(body.clone())).unwrap();
        let a = send(&c, req).await;
        assert_eq!(a.status, 200, "request {i}: {}", a.text());
        assert_eq!(a.json()["body_len"], body.len(), "request {i}: {}", a.text());
    }
    assert_eq!(echo.hits(), 10);
}

#[tokio::test]
async fn a_retried_request_names_the_server_it_reached_when_the_route_does_not_keep_host() {
    let echo = Upstream::echo().await;
    let config = format!(
        "[upstreams.app]\nservers = [\"{}\", \"{}\"]\n[[routes]]\nupstream = \"app\"\npreserve_host = false\n",
        closed_port(),
        echo.addr
    );
    let p = Proxy::start(&config);
    // Round robin sends about half of these to the closed port first; the
    // retry must not carry the first server's name.
    for _ in 0..10 {
        let a = get(&p.url("/"), "shop.example.com").await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["headers"]["host"][0], echo.addr.to_string());
    }
    assert_eq!(echo.hits(), 10);
}

/// An upstream whose answers to `/hang` never come, and a flag set once
/// the proxy drops a request to it; `/quick` is answered at once.
async fn hanging_upstream() -> (Upstream, Arc<AtomicBool>) {
    let dropped = Arc::new(AtomicBool::new(false));
    let d2 = Arc::clone(&dropped);
    let up = Upstream::start(move |req| {
        let d = Arc::clone(&d2);
        async move {
            struct SetOnDrop(Arc<AtomicBool>);
            impl Drop for SetOnDrop {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            if req.uri().path() == "/quick" {
                return Response::new(full("quick"));
            }
            let _g = SetOnDrop(d);
            tokio::time::sleep(Duration::from_secs(60)).await;
            Response::new(full("never"))
        }
    })
    .await;
    (up, dropped)
}

#[tokio::test]
async fn a_client_that_leaves_cancels_its_upstream_request() {
    let (up, dropped) = hanging_upstream().await;
    let p = Proxy::start(&route(&format!("\"{}\"", up.addr), ""));
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert!(eventually(Duration::from_secs(10), || up.hits() == 1).await);
    drop(s);
    // The proxy drops its upstream exchange, so the upstream's handler is cancelled.
    assert!(
        eventually(Duration::from_secs(10), || dropped.load(Ordering::SeqCst)).await,
        "upstream request was not cancelled"
    );
}

#[tokio::test]
async fn a_client_that_leaves_after_its_whole_body_cancels_its_upstream_request() {
    // The second request of a keep-alive connection, with a body: the
    // check for a client that left starts after the body's last byte, on
    // a socket that may be in the poller by then or not.
    let (up, dropped) = hanging_upstream().await;
    let p = Proxy::start(&route(&format!("\"{}\"", up.addr), ""));
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET /quick HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    while !String::from_utf8_lossy(&answer).ends_with("quick") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed after {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    s.write_all(b"POST /hang HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").await.unwrap();
    assert!(eventually(Duration::from_secs(10), || up.hits() == 2).await);
    drop(s);
    assert!(
        eventually(Duration::from_secs(10), || dropped.load(Ordering::SeqCst)).await,
        "upstream request was not cancelled"
    );
    // Logged as nginx does: 499, client closed request.
    let logged = || p.access_log().iter().any(|l| l["path"] == "/hang" && l["status"] == 499);
    assert!(eventually(Duration::from_secs(10), logged).await, "{:?}", p.access_log());
}

#[tokio::test]
async fn slowloris_clients_are_cut_off() {
    let up = Upstream::named("x").await;
    let p = Proxy::start(&format!(
        "[server]\nclient_header_timeout = \"500ms\"\n{}",
        route(&format!("\"{}\"", up.addr), "")
    ));
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    // The proxy closes (possibly after a 408) instead of waiting forever.
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true));
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn slowloris_clients_trickling_header_lines_are_cut_off() {
    // Bytes keep arriving, so the connection is never idle; the head never
    // completes, so client_header_timeout must end it.
    let up = Upstream::named("x").await;
    let p = Proxy::start(&format!(
        "[server]\nclient_header_timeout = \"500ms\"\nidle_timeout = \"60s\"\n{}",
        route(&format!("\"{}\"", up.addr), "")
    ));
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Up to 20 s, ten header lines a second.
    let closed = trickle_until_closed(&mut s, Duration::from_millis(100), 200, |_| b"X-Slow: 1\r\n".to_vec()).await;
    assert!(closed, "a head trickling in for 20 s was never cut off");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn clients_that_send_nothing_are_cut_off() {
    let up = Upstream::named("x").await;
    let p = Proxy::start(&format!(
        "[server]\nclient_header_timeout = \"500ms\"\nidle_timeout = \"60s\"\n{}",
        route(&format!("\"{}\"", up.addr), "")
    ));
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    let (closed, got) = next_read_closes(&mut s, Duration::from_secs(20)).await;
    assert!(closed, "silent connection stayed open: {got}");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let up = Upstream::named("x").await;
    let p = Proxy::start(&format!("[server]\nidle_timeout = \"500ms\"\n{}", route(&format!("\"{}\"", up.addr), "")));
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let (closed, got) = next_read_closes(&mut s, Duration::from_secs(20)).await;
    assert!(closed, "idle connection stayed open: {got}");
}

#[tokio::test]
async fn idle_http2_connections_are_closed() {
    let up = Upstream::named("x").await;
    let p = Proxy::start(&format!("[server]\nidle_timeout = \"500ms\"\n{}", route(&format!("\"{}\"", up.addr), "")));
    let stream = tokio::net::TcpStream::connect(p.http).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(p.url("/")).header("host", "x").body(full("")).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
    // The proxy ends the idle connection (GOAWAY, then close); the client's
    // connection future then finishes.
    let ended = tokio::time::timeout(Duration::from_secs(20), conn).await;
    assert!(ended.is_ok(), "idle HTTP/2 connection stayed open");
}

#[tokio::test]
async fn an_idle_http2_connection_is_told_goaway_before_it_closes() {
    // So a client about to send knows which streams were not taken, and
    // retries them elsewhere, instead of seeing the connection vanish.
    let up = Upstream::named("x").await;
    let p = Proxy::start(&format!("[server]\nidle_timeout = \"1s\"\n{}", route(&format!("\"{}\"", up.addr), "")));
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // SETTINGS, empty
    let mut frame_types = Vec::new();
    let mut buf = Vec::new();
    let read_all = async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            while buf.len() >= 9 {
                let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                let (kind, flags) = (buf[3], buf[4]);
                frame_types.push(kind);
                if kind == 4 && flags & 1 == 0 {
                    let _ = s.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await; // SETTINGS ack
                }
                if kind == 6 && flags & 1 == 0 && len == 8 {
                    // PING ack, as clients do: the graceful close waits for it.
                    let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                    ack.extend_from_slice(&buf[9..17]);
                    let _ = s.write_all(&ack).await;
                }
                buf.drain(..9 + len);
            }
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(20), read_all).await.is_ok(),
        "idle HTTP/2 connection stayed open"
    );
    assert!(frame_types.contains(&7), "closed without a GOAWAY; frames: {frame_types:?}");
}

#[tokio::test]
async fn a_half_sent_head_is_closed_by_an_idle_timeout_shorter_than_the_header_timeout() {
    // The idle timeout comes first here; the connection must still close
    // (hyper's graceful shutdown alone would wait for the rest of the head).
    let up = Upstream::named("x").await;
    let p = Proxy::start(&format!(
        "[server]\nclient_header_timeout = \"60s\"\nidle_timeout = \"500ms\"\n{}",
        route(&format!("\"{}\"", up.addr), "")
    ));
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let (closed, got) = next_read_closes(&mut s, Duration::from_secs(20)).await;
    assert!(closed, "half-sent head kept its connection: {got}");
    assert_eq!(up.hits(), 0);
}
