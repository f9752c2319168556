//! The request framing guard on every HTTP/1 path a connection can take:
//! TLS (with ALPN `http/1.1`, and without ALPN, told by its first bytes),
//! a first read that could still have been the HTTP/2 preface (hyper-util's
//! auto builder), and a keep-alive connection that rested between requests
//! (hyper's state dropped and made again), and behind pipelined requests.
//! Each refused request gets 400,
//! the connection closes, and the upstream never sees it.
//! (`hardening.rs` has the cases themselves, on a first request.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tls_util::{client_config, write_cert};
use crate::util::*;

const REFUSED: &[u8] =
    b"POST /x HTTP/1.1\r\nhost: app.example.test\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n";

/// Everything to `up`; with `tls`, an HTTPS listener too.
fn config(up: &Upstream, tls: bool) -> String {
    let (https, certs) = if tls { ("https = \"127.0.0.1:0\"\n", "[tls]\ncerts_dir = \"certs\"\n") } else { ("", "") };
    format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\n{https}admin = \"127.0.0.1:0\"\n{certs}\
         [upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nhost = \"*\"\nupstream = \"app\"\n",
        up.addr
    )
}

/// The refused request's answer: a 400, and the connection closed.
fn assert_refused(what: &str, answer: &str, closed: bool) {
    assert!(answer.starts_with("HTTP/1.1 400 "), "{what}: {answer}");
    assert!(closed, "{what}: {answer}");
}

/// An upstream answering `ok`, and the paths it was asked for.
async fn path_recording_upstream() -> (Upstream, Arc<Mutex<Vec<String>>>) {
    let paths = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&paths);
    let up = Upstream::start(move |req: hyper::Request<hyper::body::Incoming>| {
        seen.lock().unwrap().push(req.uri().path().to_string());
        async { hyper::Response::new(full("ok")) }
    })
    .await;
    (up, paths)
}

/// Write `parts` with a pause between them, then read until the proxy
/// closes (at most 10 s): the answer, and whether it closed.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, parts: &[&[u8]]) -> (String, bool) {
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // Long enough for a resting connection to be parked.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        s.write_all(part).await.unwrap();
        s.flush().await.unwrap();
    }
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await.is_ok();
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

#[tokio::test]
async fn refused_over_tls_with_and_without_alpn() {
    let up = Upstream::named("app").await;
    let dir = tempfile::tempdir().unwrap();
    write_cert(&dir.path().join("certs"), "app", &["app.example.test"], false);
    let p = Proxy::start_in(dir, &config(&up, true));
    let https = p.https.expect("https listener");
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let connector = tokio_rustls::TlsConnector::from(client_config(None, alpn));
        let tcp = TcpStream::connect(https).await.unwrap();
        let name = ServerName::try_from("app.example.test").unwrap();
        let mut s = connector.connect(name, tcp).await.unwrap();
        let (answer, closed) = exchange(&mut s, &[REFUSED]).await;
        assert_refused(&format!("alpn {alpn:?}"), &answer, closed);
    }
    assert_eq!(up.hits(), 0, "a refused request reached the upstream");
}

#[tokio::test]
async fn refused_after_a_first_read_that_could_have_been_http2() {
    let up = Upstream::named("app").await;
    let p = Proxy::start(&config(&up, false));
    let mut s = TcpStream::connect(p.http).await.unwrap();
    let (answer, closed) = exchange(&mut s, &[b"P", &REFUSED[1..]]).await;
    assert_refused("a first byte alone", &answer, closed);
    assert_eq!(up.hits(), 0, "a refused request reached the upstream");
}

#[tokio::test]
async fn refused_on_a_connection_that_rested_between_requests() {
    let up = Upstream::named("app").await;
    let p = Proxy::start(&config(&up, false));
    let good = b"GET /a HTTP/1.1\r\nhost: app.example.test\r\n\r\n";
    let body = b"POST /b HTTP/1.1\r\nhost: app.example.test\r\ncontent-length: 5\r\n\r\nhello";
    let twice = b"POST /c HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello";
    let mut s = TcpStream::connect(p.http).await.unwrap();
    // Requests split across rests, the second refused.
    let (answer, closed) = exchange(&mut s, &[good, &body[..30], &body[30..], &twice[..40], &twice[40..]]).await;
    assert!(closed, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200 ").count(), 2, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 3, "{answer}");
    assert!(answer.contains("HTTP/1.1 400 "), "{answer}");
    assert_eq!(up.hits(), 2, "only the two good requests reach the upstream");
}

#[tokio::test]
async fn refused_behind_a_pipelined_request_in_the_same_read() {
    let (up, paths) = path_recording_upstream().await;
    let p = Proxy::start(&config(&up, false));
    let mut s = TcpStream::connect(p.http).await.unwrap();
    let pipelined =
        [&b"GET /first HTTP/1.1\r\nhost: a\r\n\r\n"[..], REFUSED, b"GET /admin/x HTTP/1.1\r\nhost: a\r\n\r\n"];
    let (answer, closed) = exchange(&mut s, &[&pipelined.concat()]).await;
    assert!(closed, "{answer}");
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.contains("HTTP/1.1 400 "), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 2, "{answer}");
    assert_eq!(*paths.lock().unwrap(), ["/first"]);
}

/// A bare LF after the last chunk (or in a trailer line) made hyper read
/// the next request as this one's trailers, where nginx serves it: the
/// body is refused instead, with 400, and nothing behind it is read.
#[tokio::test]
async fn a_bare_lf_in_a_chunked_trailer_section_is_refused() {
    // This upstream reads the whole body before it answers, so the answer
    // is the proxy's to the broken body, not an early one of its own.
    let paths = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&paths);
    let up = Upstream::start(move |req: hyper::Request<hyper::body::Incoming>| {
        seen.lock().unwrap().push(req.uri().path().to_string());
        async move {
            let _ = http_body_util::BodyExt::collect(req.into_body()).await;
            hyper::Response::new(full("ok"))
        }
    })
    .await;
    let p = Proxy::start(&config(&up, false));
    for trailer in ["\n", "x-t: 1\n\r\n"] {
        let mut s = TcpStream::connect(p.http).await.unwrap();
        let req = format!(
            "POST /c HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n{trailer}\
             GET /swallowed HTTP/1.1\r\nhost: a\r\n\r\nGET /after HTTP/1.1\r\nhost: a\r\n\r\n"
        );
        let (answer, closed) = exchange(&mut s, &[req.as_bytes()]).await;
        assert_refused(&format!("{trailer:?}"), &answer, closed);
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    }
    let seen = paths.lock().unwrap().clone();
    assert!(seen.iter().all(|p| p == "/c"), "{seen:?}");
}

/// The guard stops judging after a head asking for an upgrade (what
/// follows may be a tunnel's bytes). When the answer is not a 101, the
/// connection closes after it, so nothing the guard did not judge, here
/// a request with both framings, is ever read.
#[tokio::test]
async fn an_upgrade_that_did_not_happen_closes_the_connection() {
    let (up, paths) = path_recording_upstream().await;
    let p = Proxy::start(&config(&up, false));
    for upgrade in ["h2c", "websocket", "TLS/1.2"] {
        let mut s = TcpStream::connect(p.http).await.unwrap();
        let asks =
            format!("GET /asks HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: {upgrade}\r\n\r\n").into_bytes();
        let (answer, closed) = exchange(&mut s, &[&asks, REFUSED]).await;
        assert!(closed, "{upgrade}: {answer}");
        assert!(!answer.starts_with("HTTP/1.1 101 "), "{upgrade}: {answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{upgrade}: {answer}");
    }
    assert!(paths.lock().unwrap().iter().all(|p| p == "/asks"), "{:?}", paths.lock().unwrap());
}
