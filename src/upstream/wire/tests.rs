use super::*;
use crate::config::UpstreamAddr;
use crate::upstream::conn::MAX_IDLE_BUFFER;
use crate::upstream::{ClientSettings, RequestHead, Server, UpstreamClient};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upstream answering the GETs on its one connection with bodies of
/// `lens` bytes, in turn.
async fn upstream(lens: Vec<usize>) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        for len in lens {
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed early");
                head.extend_from_slice(&buf[..n]);
            }
            let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
            answer.resize(answer.len() + len, b'x');
            s.write_all(&answer).await.unwrap();
        }
        let _ = s.read(&mut buf).await;
    });
    addr
}

/// An upstream on loopback sends a large body in a few 64 KiB segments.
/// On a keep-alive connection of requests and answers Linux delays its
/// ACKs (40 ms or more), and a sender waiting for send-buffer room
/// waits for them: a 40 ms stall in the middle of the body. Waiting for
/// more of a body acknowledges what came at once.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[tokio::test]
async fn waiting_mid_body_acknowledges_at_once() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (rest_tx, rest_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 4096];
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early");
            head.extend_from_slice(&buf[..n]);
        }
        // The head and the first part of the body in one segment.
        let mut first = b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n".to_vec();
        first.extend_from_slice(&[b'x'; 1000]);
        s.write_all(&first).await.unwrap();
        let _ = rest_rx.await;
        s.write_all(&[b'y'; 1000]).await.unwrap();
        let _ = s.read(&mut buf).await;
    });
    let server = Arc::new(Server::new(&Arc::from("p"), UpstreamAddr(addr.to_string()), 1).unwrap());
    let client = UpstreamClient::new(ClientSettings {
        connect_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(30),
        max_idle_per_server: 4,
    });
    let (get, empty) = http::Request::get("/").header("host", "h").body(RequestBody::empty()).unwrap().into_parts();
    let mut body = client.request(&server, RequestHead::of(&get), empty).await.unwrap().into_body();
    let stream = &body.wire.as_ref().unwrap().conn.stream;
    // What the kernel does on such a connection: acknowledge at the
    // delayed-ACK timer.
    socket2::SockRef::from(stream).set_quickack(false).unwrap();
    let frame = http_body_util::BodyExt::frame(&mut body).await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap().len(), 1000);
    let waiting = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx).is_pending())).await;
    assert!(waiting, "the rest of the body has not been sent");
    // Acknowledging at once leaves the delayed-ACK mode. (A timer that
    // fired first would leave it too, so this cannot fail wrongly.)
    let stream = &body.wire.as_ref().unwrap().conn.stream;
    assert!(socket2::SockRef::from(stream).quickack().unwrap(), "the ACK waits for the timer");
    rest_tx.send(()).unwrap();
    assert_eq!(http_body_util::BodyExt::collect(body).await.unwrap().to_bytes().len(), 1000);
}

#[tokio::test]
async fn a_parked_connection_keeps_small_buffers_and_sheds_large_ones() {
    const BIG: usize = 100 * 1024;
    let server =
        Arc::new(Server::new(&Arc::from("p"), UpstreamAddr(upstream(vec![5, BIG, 5]).await.to_string()), 1).unwrap());
    let client = UpstreamClient::new(ClientSettings {
        connect_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_secs(30),
        max_idle_per_server: 4,
    });
    // (response body, request header bytes, whether the buffers are kept)
    for (body_len, header_len, kept) in [(5, 10, true), (BIG, 20 * 1024, false), (5, 10, true)] {
        let (head, empty) = http::Request::get("/")
            .header("host", "h")
            .header("x-pad", "p".repeat(header_len))
            .body(RequestBody::empty())
            .unwrap()
            .into_parts();
        let mut body = client.request(&server, RequestHead::of(&head), empty).await.unwrap().into_body();
        body.attach(server.start_request());
        // Collected and dropped: no body frame shares the read buffer.
        let got = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
        assert_eq!(got.len(), body_len);
        drop(got);
        let mut conn = server.idle.checkout().expect("parked");
        let what = format!("after a {body_len}-byte body and a {header_len}-byte header");
        // `try_reclaim` is true when the buffer still owns that much room.
        assert_eq!(conn.read_buf.try_reclaim(READ_CHUNK), kept, "read buffer kept {what}");
        assert!(!conn.read_buf.try_reclaim(MAX_IDLE_BUFFER + 1), "read buffer over the cap {what}");
        assert_eq!(conn.head_buf.capacity() > 0, kept, "head buffer kept {what}");
        assert!(conn.head_buf.capacity() <= MAX_IDLE_BUFFER, "head buffer over the cap {what}");
        server.idle.push(&server, conn);
    }
}
