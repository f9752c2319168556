//! What reaches the upstream and what comes back: headers, bodies, upgrades.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::*;

fn one_route(up: &Upstream) -> String {
    format!("[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nhost = \"*\"\nupstream = \"app\"\n", up.addr)
}

#[tokio::test]
async fn headers_are_rewritten_like_a_proper_edge_proxy() {
    let up = Upstream::echo().await;
    // The test client is a trusted proxy, so its X-Forwarded-For is kept
    // and appended to (see hardening.rs for an untrusted one).
    let p = Proxy::start(&format!("[server]\ntrusted_proxies = [\"127.0.0.1\"]\n{}", one_route(&up)));
    let req = Request::get(p.url("/h?q=1"))
        .header("host", "shop.example.com")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic eA==")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-custom", "kept")
        .body(full(""))
        .unwrap();
    let a = send(&client(), req).await;
    assert_eq!(a.status, 200);
    let v = a.json();
    let h = &v["headers"];
    for gone in ["x-hop", "keep-alive", "te", "proxy-authorization", "upgrade", "trailer"] {
        assert!(h.get(gone).is_none(), "{gone} was forwarded: {h}");
    }
    assert_eq!(h["x-custom"][0], "kept");
    assert_eq!(h["host"][0], "shop.example.com", "Host is preserved by default");
    assert_eq!(h["x-forwarded-for"][0], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"][0], "http");
    assert_eq!(h["x-forwarded-host"][0], "shop.example.com");
    assert_eq!(h["x-real-ip"][0], "127.0.0.1");
    let id = h["x-request-id"][0].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    // The client gets the same id back, and the upstream's hop-by-hop headers are gone.
    assert_eq!(a.headers["x-request-id"], id.as_str());
    assert!(a.headers.get("x-upstream-private").is_none());
    assert!(a.headers.get("keep-alive").is_none());

    // A request id sent by the client is kept.
    let req = Request::get(p.url("/")).header("host", "a").header("x-request-id", "abc-123").body(full("")).unwrap();
    let a = send(&client(), req).await;
    assert_eq!(a.json()["headers"]["x-request-id"][0], "abc-123");
    assert_eq!(a.headers["x-request-id"], "abc-123");
}

/// An untrusted client's own `X-Forwarded-*` and `X-Real-IP` never reach the
/// upstream beside the proxy's: each arrives once, with the proxy's value.
#[tokio::test]
async fn an_untrusted_clients_forwarding_claims_are_replaced_not_joined() {
    let up = Upstream::echo().await;
    let p = Proxy::start(&one_route(&up));
    let req = Request::get(p.url("/"))
        .header("host", "shop.example.com")
        .header("x-real-ip", "203.0.113.9")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .body(full(""))
        .unwrap();
    let a = send(&client(), req).await;
    let h = &a.json()["headers"];
    for (name, want) in [
        ("x-real-ip", "127.0.0.1"),
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "shop.example.com"),
    ] {
        assert_eq!(h[name], serde_json::json!([want]), "{name}: {h}");
    }
}

/// `X_Forwarded_For` and the like are one variable with the real header in
/// CGI, WSGI, PHP and Rack (`HTTP_X_FORWARDED_FOR`, the client's value
/// first): they never reach the upstream, from anyone, as nginx drops
/// names with underscores.
#[tokio::test]
async fn underscore_spellings_of_forwarding_headers_never_reach_the_upstream() {
    let up = Upstream::echo().await;
    let spellings =
        ["x_real_ip", "x_forwarded_for", "x-forwarded_proto", "x_forwarded-host", "x_original_url", "forwarded"];
    for server in ["", "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n"] {
        let p = Proxy::start(&format!("{server}{}", one_route(&up)));
        let mut req = Request::get(p.url("/")).header("host", "shop.example.com").header("x_app_token", "kept");
        for name in spellings {
            req = req.header(name, "10.0.0.4");
        }
        let a = send(&client(), req.body(full("")).unwrap()).await;
        let h = &a.json()["headers"];
        for name in spellings.iter().filter(|n| n.contains('_')) {
            assert!(h.get(*name).is_none(), "{name} reached the upstream ({server}): {h}");
        }
        assert_eq!(h["x_app_token"], serde_json::json!(["kept"]), "{h}");
        assert_eq!(h["x-real-ip"], serde_json::json!(["127.0.0.1"]), "{h}");
    }
}

/// Behind a `[server] trusted_proxies` peer, the access log names the
/// client that proxy forwards for (as `ip_allow` and `rate_limit` judge
/// it, and as nginx logs `$remote_addr` after `set_real_ip_from`).
#[tokio::test]
async fn the_access_log_names_the_client_a_trusted_proxy_forwards_for() {
    let up = Upstream::echo().await;
    let p = Proxy::start(&format!("[server]\ntrusted_proxies = [\"127.0.0.1\"]\n{}", one_route(&up)));
    let req = Request::get(p.url("/via-lb")).header("host", "a").header("x-forwarded-for", "203.0.113.9");
    send(&client(), req.body(full("")).unwrap()).await;
    assert!(eventually(Duration::from_secs(5), || !p.access_log().is_empty()).await);
    let log = p.access_log();
    let l = log.iter().find(|l| l["path"] == "/via-lb").expect("line for the request");
    assert_eq!(l["client_ip"], "203.0.113.9");
}

#[tokio::test]
async fn access_log_has_one_json_line_per_request() {
    let up = Upstream::echo().await;
    let p = Proxy::start(&one_route(&up));
    get(&p.url("/logged?x=1"), "Log.Example").await;
    get(&p.url("/../nope"), "log.example").await;
    // The host logged is the one routed by: HTTP/2's :authority (no Host
    // header), an absolute-form target's over the Host header.
    h2c_get(p.http, "http://h2.example/logged-h2").await;
    raw_exchange(p.http, b"GET http://absolute.example/logged-abs HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    assert!(eventually(Duration::from_secs(5), || p.access_log().len() >= 4).await);
    let host_of = |path: &str| p.access_log().into_iter().find(|l| l["path"] == path).map(|l| l["host"].clone());
    assert_eq!(host_of("/logged-h2"), Some("h2.example".into()));
    assert_eq!(host_of("/logged-abs"), Some("absolute.example".into()));
    let log = p.access_log();
    let l = log.iter().find(|l| l["path"] == "/logged?x=1").expect("line for the request");
    assert_eq!(l["method"], "GET");
    assert_eq!(l["host"], "Log.Example");
    assert_eq!(l["status"], 200);
    assert_eq!(l["client_ip"], "127.0.0.1");
    assert_eq!(l["upstream"], up.addr.to_string());
    assert_eq!(l["route"], "*/");
    assert!(l["bytes"].as_u64().unwrap() > 10);
    assert!(l["duration_ms"].as_f64().is_some());
    assert_eq!(l["request_id"].as_str().unwrap().len(), 32);
    assert!(l["time"].as_str().unwrap().ends_with('Z'));
    assert!(log.iter().any(|l| l["status"] == 400));
}

/// Streams `total` bytes of zeros in 64 KiB frames without holding them.
fn zeros(total: u64) -> BoxBody {
    let chunk = Bytes::from(vec![0u8; 64 * 1024]);
    let n = total / chunk.len() as u64;
    let s = futures_util::stream::iter(
        (0..n).map(move |_| Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(chunk.clone()))),
    );
    BodyExt::boxed(StreamBody::new(s))
}

#[tokio::test]
async fn a_gibibyte_streams_both_ways_in_flat_memory() {
    const GIB: u64 = 1 << 30;
    // Upstream: counts an upload; serves a 1 GiB download.
    let up = Upstream::start(|req: Request<Incoming>| async move {
        if req.method() == http::Method::POST {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(Ok(f)) = body.frame().await {
                n += f.data_ref().map_or(0, |d| d.len() as u64);
            }
            Response::new(full(n.to_string()))
        } else {
            Response::new(zeros(GIB))
        }
    })
    .await;
    let p = Proxy::start(&one_route(&up));
    let before = p.rss_kib();

    // Upload
    let req = Request::post(p.url("/upload")).header("host", "a").body(zeros(GIB)).unwrap();
    let resp = client().request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, GIB.to_string());
    let after_upload = p.rss_kib();

    // Download, counted as it arrives
    let resp =
        client().request(Request::get(p.url("/download")).header("host", "a").body(full("")).unwrap()).await.unwrap();
    let mut body = resp.into_body();
    let mut n = 0u64;
    let mut peak = 0;
    while let Some(f) = body.frame().await {
        n += f.unwrap().data_ref().map_or(0, |d| d.len() as u64);
        if n % (128 << 20) < 65536 {
            peak = peak.max(p.rss_kib());
        }
    }
    assert_eq!(n, GIB);
    let peak = peak.max(after_upload);
    eprintln!(
        "proxy RSS: before {before} KiB, after 1 GiB upload {after_upload} KiB, peak during 1 GiB download {peak} KiB"
    );
    // Flat: the proxy never holds more than a small window of the body.
    assert!(peak < before + 64 * 1024, "proxy memory grew from {before} KiB to {peak} KiB");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_the_idle_timeout() {
    // 256 MiB to a client that reads 64 KiB and then nothing: the proxy's
    // write stays blocked, and after idle_timeout it closes the connection
    // (it was held, with its upstream connection, for ever).
    const BODY: u64 = 256 << 20;
    let up = Upstream::start(|_req| async { Response::new(zeros(BODY)) }).await;
    let p = Proxy::start(&format!("[server]\nidle_timeout = \"1s\"\n{}", one_route(&up)));
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    s.read_exact(&mut buf).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Now read what is left: the connection must end well short of the body.
    let mut total = buf.len() as u64;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n as u64,
            }
        }
    })
    .await;
    assert!(ended.is_ok() && total < BODY, "read {total} of {BODY} bytes; ended: {}", ended.is_ok());
}

#[tokio::test]
async fn websocket_messages_pass_through() {
    let ws_addr = ws_echo_upstream().await;
    let p = Proxy::start(&format!(
        "[upstreams.ws]\nservers = [\"{ws_addr}\"]\n[[routes]]\nhost = \"*\"\npath = \"/ws\"\nupstream = \"ws\"\n"
    ));
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", p.http)).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        ws.send(tokio_tungstenite::tungstenite::Message::text(format!("hello {i}"))).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(m.into_text().unwrap().as_str(), format!("hello {i}"));
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn a_websocket_tunnel_keeps_its_connection_counted_and_the_drain_ends_it() {
    let ws_addr = ws_echo_upstream().await;
    let mut p = Proxy::start(&format!(
        "[server]\nshutdown_timeout = \"20s\"\n[upstreams.ws]\nservers = [\"{ws_addr}\"]\n[[routes]]\nupstream = \"ws\"\n"
    ));
    let active = |text: String| -> Option<f64> {
        let series = r#"rampart_connections_active{listener="http"} "#;
        text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/chat", p.http)).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("ping")).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(m.into_text().unwrap().as_str(), "ping");
    // The tunnel is a client connection like any other.
    assert_eq!(active(get(&p.admin_url("/metrics"), "admin").await.text()), Some(1.0));
    // SIGTERM: the drain closes the tunnel rather than wait for it.
    p.signal("TERM");
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the tunnel outlived the drain");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
}

/// A tunnel that moves nothing either way for `idle_timeout` is closed (as
/// nginx's `proxy_read_timeout` closes one): idle tunnels would otherwise
/// hold `max_connections` places for ever. One that talks stays open.
#[tokio::test]
async fn an_idle_websocket_is_closed_after_idle_timeout_and_a_talking_one_is_not() {
    use tokio_tungstenite::tungstenite::Message;
    let ws_addr = ws_echo_upstream().await;
    let p = Proxy::start(&format!(
        "[server]\nidle_timeout = \"1s\"\n[upstreams.ws]\nservers = [\"{ws_addr}\"]\n[[routes]]\nupstream = \"ws\"\n"
    ));
    let (mut idle, _) = tokio_tungstenite::connect_async(format!("ws://{}/idle", p.http)).await.unwrap();
    let (mut talking, _) = tokio_tungstenite::connect_async(format!("ws://{}/talk", p.http)).await.unwrap();
    // The talking one sends every 300 ms for 3 s: three idle timeouts.
    for i in 0..10 {
        talking.send(Message::text(format!("m{i}"))).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), talking.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(m.into_text().unwrap().as_str(), format!("m{i}"), "the talking tunnel was closed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match idle.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle tunnel outlived idle_timeout by 5 s");
}

#[tokio::test]
async fn only_websocket_upgrades_are_tunnelled() {
    // An h2c upgrade goes out as a plain request: no Upgrade, no tunnel.
    let up = Upstream::echo().await;
    let p = Proxy::start(&one_route(&up));
    let answer = raw_exchange(
        p.http,
        b"GET /h2c HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
          HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("upgrade"), "{answer}");
}

#[tokio::test]
async fn malformed_requests_get_a_clear_4xx() {
    let up = Upstream::echo().await;
    let p = Proxy::start(&one_route(&up));
    for (raw, want) in [
        ("GET / HTTP/1.1\r\n\r\n", "400"),                   // no Host
        ("GET /../../x HTTP/1.1\r\nHost: a\r\n\r\n", "400"), // climbs above the root
        ("BLAH\r\n\r\n", "400"),                             // not HTTP
        ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", "400"), // smuggling attempt
    ] {
        let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with(&format!("HTTP/1.1 {want}")), "{raw:?} got {head:?}");
    }
    assert_eq!(up.hits(), 0, "nothing malformed reached the upstream");
}

/// The protocol is told from the first bytes without consuming them; when
/// they arrive in pieces that leave it open, detection still gets it right.
#[tokio::test]
async fn protocol_detection_copes_with_split_first_bytes() {
    let up = Upstream::named("x").await;
    let p = Proxy::start(&one_route(&up));
    // "P" could be the HTTP/2 preface or a POST.
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"OST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));

    // The HTTP/2 preface in two pieces, then an empty SETTINGS frame: the
    // answer is the server's SETTINGS frame (type 4), not an HTTP/1 error.
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(head[3], 4, "not an HTTP/2 SETTINGS frame: {head:?}");

    // And in one piece, h2c by prior knowledge.
    let a = h2c_get(p.http, &format!("http://x:{}/", p.http.port())).await;
    assert_eq!(a.status, 200);
}

/// HTTP/2 clients split `Cookie` into one field per pair; an HTTP/1.1
/// upstream must get one line (RFC 9113 8.2.3), or frameworks that read
/// the first line lose the rest. A `:path` that does not start with `/`
/// is malformed and goes nowhere.
#[tokio::test]
async fn http2_cookies_are_joined_and_a_path_without_slash_is_refused() {
    use crate::h2_raw::*;
    let up = Upstream::echo().await;
    let p = Proxy::start(&one_route(&up));
    let req = Request::get(format!("http://{}/", p.http))
        .header("host", "shop.example.com")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(full(""))
        .unwrap();
    let a = send(&h2c_client(), req).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["headers"]["cookie"], serde_json::json!(["a=1; b=2"]), "{}", a.json());
    let hits = up.hits();
    let c = RawH2::connect(p.http, &[], true).await;
    c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, &get_block("?q=1")));
    assert!(
        eventually(Duration::from_secs(5), || !c.frames_of(HEADERS).is_empty() || !c.frames_of(RST_STREAM).is_empty())
            .await
    );
    assert_eq!(up.hits(), hits, "`:path: ?q=1` reached the upstream");
}
