//! Static file bodies sent by `sendfile(2)` on plain HTTP/1.1 connections
//! (`src/server/sendfile.rs`), through the real binary with real files of
//! random bytes: byte-exact answers one at a time, on a keep-alive
//! connection, pipelined, to a client with a small receive buffer; and
//! the answers that must keep the bytes in memory (a range, TLS, HTTP/2,
//! gzip, the cache) byte-exact too. `rampart_static_sendfile_bytes_total`
//! tells which answers were sent by `sendfile`.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tls_util::{client_config, write_cert};
use crate::util::*;

/// Pseudo-random bytes (xorshift from `seed`): a shifted, repeated or
/// zeroed range shows.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Letters only, so `compress` takes it (text/plain).
fn text(len: usize) -> Vec<u8> {
    noise(len, 7).into_iter().map(|b| b"abcdefghijklmnopqrstuvwxyz \n"[b as usize % 28]).collect()
}

struct Site {
    p: Proxy,
    /// 3 MiB and a bit: streamed from disk (past the open-file cache).
    big: Vec<u8>,
    /// 100 KiB: from the open-file cache, its descriptor kept open.
    mid: Vec<u8>,
    /// 2 MiB of text, compressible.
    txt: Vec<u8>,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("site");
    std::fs::create_dir_all(&root).unwrap();
    let (big, mid, txt) = (noise(3 * 1024 * 1024 + 12_345, 1), noise(100 * 1024, 2), text(2 * 1024 * 1024));
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::fs::write(root.join("mid.bin"), &mid).unwrap();
    std::fs::write(root.join("big.txt"), &txt).unwrap();
    write_cert(&dir.path().join("certs"), "site", &["plain.test", "gz.test", "cached.test"], false);
    let p = Proxy::start_in(
        dir,
        "[listen]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         [tls]\ncerts_dir = \"certs\"\nredirect_http = false\n\
         [upstreams.site]\nstatic = \"site\"\ncache_control = [{ path = \"/\", value = \"public, max-age=600\" }]\n\
         [middleware.gz]\ntype = \"compress\"\n\
         [middleware.edge]\ntype = \"cache\"\nmax_size = \"64MiB\"\nmax_object_size = \"16MiB\"\n\
         [[routes]]\nhost = \"plain.test\"\nupstream = \"site\"\n\
         [[routes]]\nhost = \"gz.test\"\nupstream = \"site\"\nmiddleware = [\"gz\"]\n\
         [[routes]]\nhost = \"cached.test\"\nupstream = \"site\"\nmiddleware = [\"edge\"]\n",
    );
    Site { p, big, mid, txt }
}

/// `rampart_static_sendfile_bytes_total` now.
async fn sent_by_sendfile(p: &Proxy) -> u64 {
    let m = get(&p.admin_url("/metrics"), "admin").await.text();
    m.lines()
        .find_map(|l| l.strip_prefix("rampart_static_sendfile_bytes_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .expect("rampart_static_sendfile_bytes_total in /metrics")
}

/// `rampart_static_sendfile_bytes_total` once it reads `want`, or what it
/// reads after 10 s. The proxy adds to it when `sendfile(2)` returns, and
/// a client that already has the bytes can ask `/metrics` (answered on
/// another worker thread) before it does: a single read may come early.
/// A count that overshoots `want` is returned as it is, so an answer sent
/// by `sendfile` that should not have been still shows.
async fn sent_by_sendfile_reaching(p: &Proxy, want: u64) -> u64 {
    eventually_async(Duration::from_secs(10), || async { sent_by_sendfile(p).await >= want }).await;
    sent_by_sendfile(p).await
}

fn request(host: &str, path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n")
}

/// One answer off `s`: status, head, body (by `Content-Length`). `pending`
/// holds bytes read past the previous answer.
async fn answer<S: AsyncRead + Unpin>(s: &mut S, pending: &mut Vec<u8>) -> (u16, String, Vec<u8>) {
    let mut buf = vec![0; 64 * 1024];
    let head_end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await.expect("a head").unwrap();
        assert!(n > 0, "closed before a head");
        pending.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    pending.drain(..head_end);
    if status == 304 {
        return (status, head, Vec::new());
    }
    let len = head.lines().find_map(|l| {
        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
    });
    let Some(len) = len else {
        assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "no length: {head}");
        return (status, head, chunked(s, pending).await);
    };
    fill(s, pending, len).await;
    let body = pending.drain(..len).collect();
    (status, head, body)
}

/// Read from `s` until `pending` holds at least `len` bytes.
async fn fill<S: AsyncRead + Unpin>(s: &mut S, pending: &mut Vec<u8>, len: usize) {
    let mut buf = vec![0; 64 * 1024];
    while pending.len() < len {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await.expect("the body").unwrap();
        assert!(n > 0, "closed after {} of {len} bytes", pending.len());
        pending.extend_from_slice(&buf[..n]);
    }
}

/// A chunked body (no trailers, no extensions).
async fn chunked<S: AsyncRead + Unpin>(s: &mut S, pending: &mut Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = pending.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            let want = pending.len() + 1;
            fill(s, pending, want).await;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&pending[..line_end]).unwrap().trim(), 16).unwrap();
        pending.drain(..line_end + 2);
        fill(s, pending, size + 2).await;
        body.extend(pending.drain(..size));
        assert_eq!(pending.drain(..2).collect::<Vec<u8>>(), b"\r\n");
        if size == 0 {
            return body;
        }
    }
}

/// Send `requests` at once, read as many answers.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, requests: &[String]) -> Vec<(u16, String, Vec<u8>)> {
    s.write_all(requests.concat().as_bytes()).await.unwrap();
    let mut pending = Vec::new();
    let mut out = Vec::new();
    for _ in requests {
        out.push(answer(s, &mut pending).await);
    }
    assert!(pending.is_empty(), "bytes past the last answer");
    out
}

fn assert_exact(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {i}");
    }
}

#[tokio::test]
async fn plain_http1_answers_are_sent_by_sendfile_byte_exact() {
    let s = site();
    let before = sent_by_sendfile(&s.p).await;
    // Keep-alive: several answers in a row on one connection, each asked
    // after the last.
    let mut c = TcpStream::connect(s.p.http).await.unwrap();
    for (path, want) in [("/big.bin", &s.big), ("/mid.bin", &s.mid), ("/big.bin", &s.big), ("/mid.bin", &s.mid)] {
        let got = exchange(&mut c, &[request("plain.test", path, "")]).await;
        assert_eq!(got[0].0, 200, "{path}");
        assert_exact(path, &got[0].2, want);
    }
    let after = sent_by_sendfile_reaching(&s.p, before + 2 * (s.big.len() + s.mid.len()) as u64).await;
    assert_eq!(after - before, 2 * (s.big.len() + s.mid.len()) as u64, "every body by sendfile");
    // Pipelined: five requests in one write, a range and a HEAD among them.
    let reqs = [
        request("plain.test", "/mid.bin", ""),
        request("plain.test", "/big.bin", ""),
        request("plain.test", "/big.bin", "Range: bytes=1000-2000999\r\n"),
        request("plain.test", "/mid.bin", ""),
        request("plain.test", "/big.bin", ""),
    ];
    let got = exchange(&mut c, &reqs).await;
    let statuses: Vec<u16> = got.iter().map(|a| a.0).collect();
    assert_eq!(statuses, vec![200, 200, 206, 200, 200]);
    assert_exact("pipelined mid 1", &got[0].2, &s.mid);
    assert_exact("pipelined big 1", &got[1].2, &s.big);
    assert_exact("pipelined range", &got[2].2, &s.big[1000..2_001_000]);
    assert!(got[2].1.to_ascii_lowercase().contains(&format!("content-range: bytes 1000-2000999/{}", s.big.len())));
    assert_exact("pipelined mid 2", &got[3].2, &s.mid);
    assert_exact("pipelined big 2", &got[4].2, &s.big);
    // The range kept the bytes in memory.
    let pipelined = sent_by_sendfile_reaching(&s.p, after + 2 * (s.big.len() + s.mid.len()) as u64).await - after;
    assert_eq!(pipelined, 2 * (s.big.len() + s.mid.len()) as u64, "the 206 is not sent by sendfile");
}

#[tokio::test]
async fn a_client_with_a_small_receive_buffer_reading_slowly_gets_exact_bytes() {
    let s = site();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&s.p.http.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut c = TcpStream::from_std(socket.into()).unwrap();
    c.write_all(request("plain.test", "/big.bin", "").as_bytes()).await.unwrap();
    c.write_all(request("plain.test", "/mid.bin", "Connection: close\r\n").as_bytes()).await.unwrap();
    // Small reads with a pause now and then: the proxy's sends keep
    // finding the socket full. Read until the proxy closes.
    let mut got = Vec::new();
    let mut buf = [0; 1000];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = tokio::time::timeout_at(deadline, c.read(&mut buf)).await.expect("the answers within 60 s").unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() % (256 * 1024) < 1000 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let mut pending = got;
    let mut cursor = std::io::Cursor::new(Vec::new());
    let (status, _, body) = answer(&mut cursor, &mut pending).await;
    assert_eq!(status, 200);
    assert_exact("slow big", &body, &s.big);
    let (status, _, body) = answer(&mut cursor, &mut pending).await;
    assert_eq!(status, 200);
    assert_exact("slow mid", &body, &s.mid);
}

/// GET `path` on `host` over TLS, HTTP/1.1 or (with `h2`) HTTP/2.
async fn over_tls(https: SocketAddr, host: &str, path: &str, h2: bool) -> Vec<u8> {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let connector = tokio_rustls::TlsConnector::from(client_config(None, alpn));
    let tcp = TcpStream::connect(https).await.unwrap();
    let mut tls = connector.connect(ServerName::try_from(host.to_string()).unwrap(), tcp).await.unwrap();
    if !h2 {
        let mut got = exchange(&mut tls, &[request(host, path, ""), request(host, path, "")]).await;
        assert_eq!((got[0].0, got[1].0), (200, 200));
        assert_eq!(got[0].2, got[1].2);
        return got.remove(0).2;
    }
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let uri = format!("https://{host}{path}");
    let resp = sender.send_request(Request::get(uri).body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes().to_vec()
}

#[tokio::test]
async fn tls_http2_gzip_and_cached_answers_keep_their_bytes_exact() {
    let s = site();
    let https = s.p.https.expect("https listener");
    let before = sent_by_sendfile(&s.p).await;
    assert_exact("TLS h1 big", &over_tls(https, "plain.test", "/big.bin", false).await, &s.big);
    assert_exact("TLS h1 mid", &over_tls(https, "plain.test", "/mid.bin", false).await, &s.mid);
    assert_exact("TLS h2 big", &over_tls(https, "plain.test", "/big.bin", true).await, &s.big);
    let h2c = h2c_get(s.p.http, "http://plain.test/big.bin").await;
    assert_exact("h2c big", &h2c.body, &s.big);
    let h2c = h2c_get(s.p.http, "http://plain.test/mid.bin").await;
    assert_exact("h2c mid", &h2c.body, &s.mid);
    // gzip: compressed on the way, so read from memory.
    let mut c = TcpStream::connect(s.p.http).await.unwrap();
    let got = exchange(&mut c, &[request("gz.test", "/big.txt", "Accept-Encoding: gzip\r\n")]).await;
    assert!(got[0].1.to_ascii_lowercase().contains("content-encoding: gzip"), "{}", got[0].1);
    assert_exact("gzip big.txt", &gunzip(&got[0].2), &s.txt);
    // The cache: a miss stored while it streams, then a hit.
    for round in ["miss", "hit"] {
        let got = exchange(&mut c, &[request("cached.test", "/big.bin", "")]).await;
        assert_eq!(got[0].0, 200);
        assert_exact(&format!("cache {round}"), &got[0].2, &s.big);
    }
    assert_eq!(sent_by_sendfile(&s.p).await, before, "none of these may be sent by sendfile");
    // The same compressing route without Accept-Encoding sends the file as it is.
    let got = exchange(&mut c, &[request("gz.test", "/big.txt", "")]).await;
    assert_exact("identity big.txt", &got[0].2, &s.txt);
    assert_eq!(sent_by_sendfile_reaching(&s.p, before + s.txt.len() as u64).await - before, s.txt.len() as u64);
}

#[tokio::test]
async fn head_and_304_answers_send_no_file() {
    let s = site();
    let before = sent_by_sendfile(&s.p).await;
    let mut c = TcpStream::connect(s.p.http).await.unwrap();
    let got = exchange(&mut c, &[request("plain.test", "/mid.bin", "")]).await;
    let etag = got[0].1.lines().find_map(|l| l.strip_prefix("etag: ")).expect("an etag").trim().to_string();
    let sent = sent_by_sendfile_reaching(&s.p, before + s.mid.len() as u64).await;
    assert_eq!(sent - before, s.mid.len() as u64);
    // A HEAD: the head only (its Content-Length announces the file), then
    // a GET on the same connection answers in full.
    c.write_all(b"HEAD /big.bin HTTP/1.1\r\nHost: plain.test\r\n\r\n").await.unwrap();
    let mut pending = Vec::new();
    let mut buf = vec![0; 4096];
    while !pending.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), c.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0);
        pending.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&pending).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "bytes after a HEAD answer: {head}");
    let got = exchange(&mut c, &[request("plain.test", "/mid.bin", &format!("If-None-Match: {etag}\r\n"))]).await;
    assert_eq!(got[0].0, 304);
    assert_eq!(sent_by_sendfile(&s.p).await, sent, "HEAD and 304 send no file");
    let got = exchange(&mut c, &[request("plain.test", "/big.bin", "")]).await;
    assert_exact("after HEAD and 304", &got[0].2, &s.big);
    // Exactly the GET's bytes more: a late count from the HEAD or the 304
    // would show here.
    let total = sent_by_sendfile_reaching(&s.p, sent + s.big.len() as u64).await;
    assert_eq!(total - sent, s.big.len() as u64, "only the GET after them");
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    out.stdout
}
