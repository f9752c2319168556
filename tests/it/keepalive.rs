//! Client keep-alive: a connection that rests between requests is parked
//! (hyper's state dropped, only the socket kept) and brought back by its
//! next bytes. Nothing a client can observe may change because of it.

use std::time::Duration;

use bytes::Bytes;
use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::*;

/// Longer than the proxy waits before parking a resting connection.
const REST: Duration = Duration::from_millis(300);

fn config(upstream: std::net::SocketAddr, server: &str) -> String {
    format!("[server]\n{server}\n[upstreams.app]\nservers = [\"{upstream}\"]\n[[routes]]\nupstream = \"app\"\n")
}

/// Read one response with a Content-Length body; returns (status line, body).
async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S, pending: &mut Vec<u8>) -> (String, Vec<u8>) {
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            while pending.len() < end + 4 + len {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed mid-body");
                pending.extend_from_slice(&buf[..n]);
            }
            let body = pending[end + 4..end + 4 + len].to_vec();
            pending.drain(..end + 4 + len);
            return (head.lines().next().unwrap_or_default().to_string(), body);
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("no answer").unwrap();
        assert!(n > 0, "connection closed; got {:?}", String::from_utf8_lossy(pending));
        pending.extend_from_slice(&buf[..n]);
    }
}

/// A streamed body: `first`, a pause, then `second`.
fn paused_body(first: &'static [u8], pause: Duration, second: &'static [u8]) -> BoxBody {
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(2);
    tokio::spawn(async move {
        let _ = tx.send(Ok(http_body::Frame::data(Bytes::from_static(first)))).await;
        tokio::time::sleep(pause).await;
        let _ = tx.send(Ok(http_body::Frame::data(Bytes::from_static(second)))).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) });
    http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(stream))
}

/// An upstream answering with the method, path and body length it got.
async fn echo() -> Upstream {
    Upstream::start(|req: http::Request<hyper::body::Incoming>| async move {
        let line = format!("{} {}", req.method(), req.uri().path());
        let n = http_body_util::BodyExt::collect(req.into_body()).await.map(|b| b.to_bytes().len()).unwrap_or(0);
        Response::new(full(format!("{line} {n}")))
    })
    .await
}

#[tokio::test]
async fn a_connection_serves_requests_after_resting_and_pipelining_survives_it() {
    let up = echo().await;
    let p = Proxy::start(&config(up.addr, ""));
    let mut s = TcpStream::connect(p.http).await.unwrap();
    let mut pending = Vec::new();
    for round in 0..3 {
        s.write_all(format!("GET /r{round} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let (status, body) = read_response(&mut s, &mut pending).await;
        assert_eq!((status.as_str(), &body[..]), ("HTTP/1.1 200 OK", format!("GET /r{round} 0").as_bytes()));
        tokio::time::sleep(REST).await;
        // A body after a rest, and two pipelined requests in one write.
        s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").await.unwrap();
        let (_, body) = read_response(&mut s, &mut pending).await;
        assert_eq!(&body[..], b"POST /up 5");
        tokio::time::sleep(REST).await;
        s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert_eq!(read_response(&mut s, &mut pending).await.1, b"GET /a 0");
        assert_eq!(read_response(&mut s, &mut pending).await.1, b"GET /b 0");
        tokio::time::sleep(REST).await;
    }
    // A request head split by a rest arrives whole.
    s.write_all(b"GET /split HTTP/1.1\r\nHo").await.unwrap();
    tokio::time::sleep(REST).await;
    s.write_all(b"st: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut s, &mut pending).await.1, b"GET /split 0");
}

#[tokio::test]
async fn answers_that_pause_or_a_client_that_reads_slowly_are_never_cut() {
    // Upstream: a head at once, then the body in two halves with a pause
    // longer than the parking delay; and a large body for a slow reader.
    let up = Upstream::start(|req: http::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/big" {
            return Response::new(full(vec![b'z'; 8 << 20]));
        }
        Response::new(paused_body(b"first half, ", Duration::from_millis(400), b"second half"))
    })
    .await;
    let p = Proxy::start(&config(up.addr, ""));
    let a = get(&p.url("/pause"), "x").await;
    assert_eq!((a.status.as_u16(), a.text().as_str()), (200, "first half, second half"));

    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let mut head_seen = false;
    while got < 8 << 20 {
        // Read a little, then rest: the proxy's writes block meanwhile.
        tokio::time::sleep(Duration::from_millis(120)).await;
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("stalled").unwrap();
        assert!(n > 0, "closed after {got} body bytes");
        let mut chunk = &buf[..n];
        if !head_seen {
            let end = chunk.windows(4).position(|w| w == b"\r\n\r\n").expect("head in the first read") + 4;
            chunk = &chunk[end..];
            head_seen = true;
        }
        assert!(chunk.iter().all(|&b| b == b'z'));
        got += chunk.len();
    }
    assert_eq!(got, 8 << 20);
}

#[tokio::test]
async fn a_request_waiting_when_its_connection_comes_to_rest_is_read_without_parking() {
    let up = echo().await;
    let p = Proxy::start_in_env(
        tempfile::tempdir().unwrap(),
        &config(up.addr, ""),
        &[("RUST_LOG", "info,rampart::server::lot=trace")],
    );
    let pid = p.child.id() as libc::pid_t;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    read_response(&mut s, &mut pending).await;
    // Stopped right after the answer, long before the connection could
    // rest, the proxy gets the next request while it cannot read it; when
    // it goes on, the connection's rest is due and its request waits, as
    // for a busy proxy whose connection tasks wait their turn.
    // SAFETY: signals to the proxy's own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    s.write_all(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    tokio::time::sleep(REST).await;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    assert_eq!(read_response(&mut s, &mut pending).await.1, b"GET /2 0");
    // Closed at once, before it could rest after this answer.
    drop(s);
    tokio::time::sleep(REST).await;
    let parked = p.stderr.lock().unwrap().iter().filter(|l| l.contains("\"parked\"")).count();
    assert_eq!(parked, 0, "a connection with its next request waiting went to the parking lot");
}

#[tokio::test]
async fn a_resting_connection_lives_for_the_idle_timeout_not_the_header_timeout() {
    let up = echo().await;
    let p = Proxy::start(&config(up.addr, "client_header_timeout = \"300ms\"\nidle_timeout = \"1500ms\""));
    let mut s = TcpStream::connect(p.http).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    read_response(&mut s, &mut pending).await;
    // Well past the header timeout, within the idle timeout.
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.write_all(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut s, &mut pending).await.1, b"GET /2 0");
    // Then the idle timeout closes it.
    let (closed, got) = next_read_closes(&mut s, Duration::from_secs(20)).await;
    assert!(closed, "idle connection stayed open: {got}");
}

/// A proxy with an HTTPS listener (a self-signed `localhost` certificate,
/// `server` settings) in front of `up`, and a TLS client connected to it
/// that offers HTTP/1.1 only.
async fn tls_proxy_and_client(up: &Upstream, server: &str) -> (Proxy, tokio_rustls::client::TlsStream<TcpStream>) {
    tls_proxy_and_client_offering(up, server, &[b"http/1.1"]).await
}

/// The same with a client offering `alpn` (none at all, like wrk).
async fn tls_proxy_and_client_offering(
    up: &Upstream,
    server: &str,
    alpn: &[&[u8]],
) -> (Proxy, tokio_rustls::client::TlsStream<TcpStream>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    crate::tls_util::write_cert(&dir.path().join("certs"), "localhost", &["localhost"], false);
    let p = Proxy::start_in(
        dir,
        &format!(
            "{LISTEN}https = \"127.0.0.1:0\"\n[server]\n{server}\n[tls]\ncerts_dir = \"certs\"\nredirect_http = false\n[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n",
            up.addr
        ),
    );
    let https = p.https.expect("https listener");
    let connector = tokio_rustls::TlsConnector::from(crate::tls_util::client_config(None, alpn));
    let tcp = TcpStream::connect(https).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let s = connector.connect(name, tcp).await.unwrap();
    (p, s)
}

#[tokio::test]
async fn a_tls_connection_is_parked_and_resumed_the_same_way() {
    let up = echo().await;
    let (p, mut s) = tls_proxy_and_client(&up, "client_header_timeout = \"300ms\"").await;
    // Resting longer than both the parking delay and client_header_timeout.
    requests_each_then_parked(&p, &mut s, 3, Duration::from_millis(600)).await;
}

/// Send `rounds` requests on a TLS connection, each answered, each followed
/// by `rest`, after which the connection must be parked in the lot with its
/// session (the lot's epoll instance then watches it alone).
async fn requests_each_then_parked(
    p: &Proxy,
    s: &mut tokio_rustls::client::TlsStream<TcpStream>,
    rounds: usize,
    rest: Duration,
) {
    let mut pending = Vec::new();
    for round in 0..rounds {
        s.write_all(format!("GET /t{round} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
        let (status, body) = read_response(s, &mut pending).await;
        assert_eq!((status.as_str(), &body[..]), ("HTTP/1.1 200 OK", format!("GET /t{round} 0").as_bytes()));
        tokio::time::sleep(rest).await;
        let counts = epoll_watch_counts(p.child.id());
        assert!(counts.contains(&1), "not parked after round {round}: epoll instances watch {counts:?} descriptors");
    }
}

#[tokio::test]
async fn a_tls_connection_parks_before_its_first_request() {
    // Its TLS 1.3 session ticket waits for the first answer, and goes
    // before the connection parks instead: parked, it is served later.
    let up = echo().await;
    let (p, mut s) = tls_proxy_and_client(&up, "").await;
    assert_eq!(s.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    tokio::time::sleep(REST).await;
    let counts = epoll_watch_counts(p.child.id());
    assert!(counts.contains(&1), "not parked: epoll instances watch {counts:?} descriptors");
    s.write_all(b"GET /late HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut pending = Vec::new();
    let (status, body) = read_response(&mut s, &mut pending).await;
    assert_eq!((status.as_str(), &body[..]), ("HTTP/1.1 200 OK", &b"GET /late 0"[..]));
}

#[tokio::test]
async fn a_tls_client_offering_no_alpn_protocol_is_served_and_parked_as_http1() {
    // Told apart by its first bytes, as on plain TCP; before, such clients
    // went to hyper-util's auto builder and never parked.
    let up = echo().await;
    let (p, mut s) = tls_proxy_and_client_offering(&up, "", &[]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), None);
    requests_each_then_parked(&p, &mut s, 2, REST).await;
}

#[tokio::test]
async fn a_tls_client_offering_no_alpn_protocol_may_speak_http2_by_prior_knowledge() {
    let up = echo().await;
    let (_p, mut s) = tls_proxy_and_client_offering(&up, "", &[]).await;
    // The preface, then an empty SETTINGS frame.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    let mut frame_header = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut frame_header)).await.expect("no answer").unwrap();
    assert_eq!(frame_header[3], 0x04, "the server's first frame is SETTINGS: {frame_header:?}");
}

#[tokio::test]
async fn a_tls_client_trickling_a_record_does_not_outlive_the_idle_timeout() {
    // Bytes that never complete a TLS record wake a parked connection but
    // bring no request: they must not restart its idle clock.
    let up = echo().await;
    let (_p, mut s) = tls_proxy_and_client(&up, "idle_timeout = \"1500ms\"").await;
    let mut pending = Vec::new();
    s.write_all(b"GET /once HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut s, &mut pending).await.1, b"GET /once 0");
    // Under the session: an application-data record header announcing 16 KiB,
    // then its payload one byte every 300 ms, for up to six idle timeouts.
    let header = [0x17u8, 0x03, 0x03, 0x40, 0x00];
    let piece = |i: usize| vec![header.get(i).copied().unwrap_or(0x42)];
    let closed = trickle_until_closed(s.get_mut().0, Duration::from_millis(300), 30, piece).await;
    assert!(closed, "a connection kept alive by a trickled record outlived six idle timeouts");
}

#[tokio::test]
async fn a_tls_client_that_never_sends_a_request_gets_the_header_timeout_not_the_idle_one() {
    // Plain connections get this from the first read; a TLS connection goes
    // to the parking lot right after its handshake and must too.
    let up = echo().await;
    let (_p, mut s) = tls_proxy_and_client(&up, "client_header_timeout = \"1s\"\nidle_timeout = \"60s\"").await;
    let (closed, got) = next_read_closes(&mut s, Duration::from_secs(20)).await;
    assert!(closed, "a silent TLS connection stayed open: {got}");
}

/// `rampart_connections_active{listener="http"}` from the admin endpoint.
async fn active_http_connections(p: &Proxy) -> Option<f64> {
    let text = get(&p.admin_url("/metrics"), "admin").await.text();
    let series = r#"rampart_connections_active{listener="http"} "#;
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// How many descriptors each epoll instance of process `pid` watches
/// (Linux `/proc/PID/fdinfo`): tokio's own, and the parking lot's.
fn epoll_watch_counts(pid: u32) -> Vec<usize> {
    let mut counts = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let is_epoll = std::fs::read_link(entry.path()).is_ok_and(|t| t.to_string_lossy().contains("eventpoll"));
        if is_epoll {
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy()))
                .unwrap_or_default();
            counts.push(info.lines().filter(|l| l.starts_with("tfd:")).count());
        }
    }
    counts
}

#[tokio::test]
async fn many_resting_connections_are_served_counted_and_closed_on_drain() {
    // Resting plain connections leave their tasks for the parking lot; they
    // must still count as open, come back for their next request (and for
    // their client closing), and be closed by a drain.
    const N: usize = 200;
    let up = echo().await;
    let mut p = Proxy::start(&config(up.addr, ""));
    let mut conns = Vec::new();
    for i in 0..N {
        let mut s = TcpStream::connect(p.http).await.unwrap();
        let mut pending = Vec::new();
        s.write_all(format!("GET /a{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut s, &mut pending).await.1, format!("GET /a{i} 0").as_bytes());
        conns.push((s, pending));
    }
    tokio::time::sleep(REST).await;
    assert_eq!(active_http_connections(&p).await, Some(N as f64));
    // Parked outside tokio: one epoll instance watches exactly them.
    let counts = epoll_watch_counts(p.child.id());
    assert!(counts.contains(&N), "epoll instances watch {counts:?} descriptors");
    // Every one answers its own next request, sent all at once.
    for (i, (s, _)) in conns.iter_mut().enumerate() {
        s.write_all(format!("GET /b{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    }
    for (i, (s, pending)) in conns.iter_mut().enumerate() {
        assert_eq!(read_response(s, pending).await.1, format!("GET /b{i} 0").as_bytes());
    }
    tokio::time::sleep(REST).await;
    // And back in the lot after resting again.
    let counts = epoll_watch_counts(p.child.id());
    assert!(counts.contains(&N), "after a second rest, epoll instances watch {counts:?}");
    // Clients that leave while parked are noticed.
    conns.truncate(N / 2);
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            active_http_connections(&p).await == Some((N / 2) as f64)
        })
        .await,
        "gauge: {:?}",
        active_http_connections(&p).await
    );
    // A drain closes the parked ones and does not wait for them.
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
    for (s, _) in conns.iter_mut() {
        let (closed, got) = next_read_closes(s, Duration::from_secs(5)).await;
        assert!(closed, "a parked connection stayed open: {got}");
    }
}

/// Everything a connection sends until it closes.
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all))
        .await
        .expect("connection not closed")
        .unwrap();
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test]
async fn last_requests_get_their_whole_answer_then_the_close() {
    // The last answer on a connection is corked so the FIN leaves with it;
    // whole in-memory answers and streamed ones alike must arrive complete.
    let up = Upstream::start(|req: http::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/stream" {
            return Response::new(paused_body(b"first, ", Duration::from_millis(100), b"then the rest"));
        }
        Response::new(full(format!("{} {:?}", req.uri().path(), req.version())))
    })
    .await;
    let p = Proxy::start(&config(up.addr, ""));

    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let got = read_to_close(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 200") && got.to_ascii_lowercase().contains("connection: close"), "{got}");
    assert!(got.ends_with("/a HTTP/1.1"), "{got}");

    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET /b HTTP/1.0\r\nHost: x\r\n\r\n").await.unwrap();
    let got = read_to_close(&mut s).await;
    assert!(got.starts_with("HTTP/1.0 200") && got.ends_with("/b HTTP/1.1"), "{got}");

    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let got = read_to_close(&mut s).await;
    assert!(got.contains("first, ") && got.contains("then the rest"), "{got}");

    // HTTP/1.0 asking for keep-alive keeps its connection.
    let mut s = TcpStream::connect(p.http).await.unwrap();
    let mut pending = Vec::new();
    for path in ["/c", "/d"] {
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (status, body) = read_response(&mut s, &mut pending).await;
        assert_eq!((status.as_str(), &body[..]), ("HTTP/1.0 200 OK", format!("{path} HTTP/1.1").as_bytes()));
    }

    // ... unless the answer's end can only be told by the close: then it
    // must not promise keep-alive (HTTP/1.0 has no chunked coding).
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET /stream HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
    let got = read_to_close(&mut s).await;
    let head = got.split("\r\n\r\n").next().unwrap_or_default().to_ascii_lowercase();
    assert!(head.starts_with("http/1.0 200") && !head.contains("keep-alive"), "{got}");
    assert!(got.ends_with("first, then the rest"), "{got}");
}

/// Read whatever the server sends until it closes; whether it closed
/// within `within`.
async fn closes_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn a_tls_client_that_chose_http2_and_sends_nothing_gets_the_header_timeout() {
    // hyper waits for the HTTP/2 preface for ever, a graceful shutdown
    // included: the connection held its place under max_connections, and
    // a drain, until the process ended.
    let up = echo().await;
    let server = "client_header_timeout = \"1s\"\nidle_timeout = \"60s\"";
    for sent in [&b""[..], b"PRI * HTT"] {
        let (_p, mut s) = tls_proxy_and_client_offering(&up, server, &[b"h2"]).await;
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        s.write_all(sent).await.unwrap();
        assert!(closes_within(&mut s, Duration::from_secs(20)).await, "still open after sending {sent:?}");
    }
}

#[tokio::test]
async fn an_http2_client_that_never_acknowledges_the_goaway_ping_is_closed_soon_after() {
    // hyper's graceful shutdown waits for the acknowledgement of the PING
    // it sends with its GOAWAY; without one the connection stayed for the
    // 50 s of the keep-alive PING, whatever idle_timeout said.
    let up = echo().await;
    let p = Proxy::start(&config(up.addr, "idle_timeout = \"1s\""));
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    assert!(
        closes_within(&mut s, Duration::from_secs(20)).await,
        "an idle HTTP/2 connection outlived 20 idle timeouts"
    );
}

#[tokio::test]
async fn max_connections_counts_connections_not_listeners_waiting_in_accept() {
    // Each accept loop took its place under the limit before accept() and
    // held it while waiting: with http and https, one connection fewer
    // than max_connections was served.
    let up = echo().await;
    let (p, _tls) = tls_proxy_and_client(&up, "max_connections = 3").await;
    // Kept open: each still counts.
    let mut open = Vec::new();
    for name in ["a", "b"] {
        let mut s = TcpStream::connect(p.http).await.unwrap();
        s.write_all(format!("GET /{name} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), read_response(&mut s, &mut Vec::new())).await;
        let (status, _) = answer.unwrap_or_else(|_| panic!("connection {name} was not served within the limit of 3"));
        assert_eq!(status, "HTTP/1.1 200 OK");
        open.push(s);
    }
}

/// Once the connections holding every place have rested long enough to be
/// parked (25 ms), a new client on `addr` is answered within 5 s.
async fn assert_a_new_client_is_served_once_they_rest(addr: std::net::SocketAddr) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /new HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut s, &mut Vec::new())).await;
    let (status, _) = answer.expect("a new client waited behind idle connections");
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn at_max_connections_idle_keep_alive_connections_make_room_for_new_clients() {
    // Idle keep-alive connections held their places until idle_timeout:
    // clients that made one request each and went quiet kept every new
    // client waiting in the backlog for a minute. nginx closes idle
    // keep-alive connections when worker_connections runs out.
    let up = echo().await;
    let p = Proxy::start(&config(up.addr, "max_connections = 2\nidle_timeout = \"60s\""));
    let mut idle = Vec::new();
    for name in ["a", "b"] {
        let mut s = TcpStream::connect(p.http).await.unwrap();
        s.write_all(format!("GET /{name} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut s, &mut Vec::new()).await.0, "HTTP/1.1 200 OK");
        idle.push(s);
    }
    assert_a_new_client_is_served_once_they_rest(p.http).await;
    // The idle ones made the room: both closed (one batch closes up to 32).
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(closes_within(s, Duration::from_secs(5)).await, "idle connection {i} still open");
    }
}

#[tokio::test]
async fn at_max_connections_an_idle_tls_session_makes_room_too() {
    // A parked TLS connection rests with its session in the lot: closing it
    // for room drops the session with the socket.
    let up = echo().await;
    let (p, mut tls) = tls_proxy_and_client(&up, "max_connections = 1\nidle_timeout = \"60s\"").await;
    tls.write_all(b"GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut tls, &mut Vec::new()).await.0, "HTTP/1.1 200 OK");
    assert_a_new_client_is_served_once_they_rest(p.http).await;
    assert!(closes_within(&mut tls, Duration::from_secs(5)).await, "the idle TLS connection is still open");
}

#[tokio::test]
async fn max_header_bytes_holds_for_every_request_on_a_connection() {
    // hyper refuses a head only when its buffer fills without one, and its
    // reads grow: on a connection's later requests, heads up to about
    // twice max_header_bytes were forwarded.
    let up = echo().await;
    let p = Proxy::start(&config(up.addr, "max_header_bytes = \"64KiB\""));
    let request = |pad: usize| format!("GET /x HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}\r\n\r\n", "p".repeat(pad));
    // Under the limit, on later requests too.
    let mut s = TcpStream::connect(p.http).await.unwrap();
    let mut pending = Vec::new();
    for pad in [10, 60_000, 10, 65_000] {
        s.write_all(request(pad).as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut s, &mut pending).await.0, "HTTP/1.1 200 OK", "a {pad}-byte header");
    }
    // Over it, as the second request.
    let mut s = TcpStream::connect(p.http).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(request(10).as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s, &mut pending).await.0, "HTTP/1.1 200 OK");
    s.write_all(request(100_000).as_bytes()).await.unwrap();
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut s, &mut pending))
        .await
        .expect("no answer to a 100 KB head");
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
}
