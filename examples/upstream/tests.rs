//! `cargo test --all-targets` runs these: the server on loopback, a raw
//! client in the same runtime, each mode's answers read back byte by byte.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::LocalSet;

use super::{accept, listen, Args, Site};

/// 20,000 bytes: more than two 8 KiB chunks.
fn file() -> Vec<u8> {
    (0..20_000u32).map(|i| (i % 251) as u8).collect()
}

/// The server with these extra flags, on an ephemeral port, serving
/// `a.bin` (see [`file`]); the directory lives as long as the runtime.
fn start(flags: &[&str]) -> SocketAddr {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.bin"), file()).unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    let mut argv = vec!["upstream", "--listen", "127.0.0.1:0", "--root", &root];
    argv.extend_from_slice(flags);
    let args = Args::parse_from(argv);
    let site = Site::new(&args).unwrap();
    let listener = listen(args.listen).unwrap();
    let addr = listener.local_addr().unwrap();
    std::mem::forget(dir); // files are read at start; the directory may stay behind in /tmp
    tokio::task::spawn_local(accept(listener, site, args.split));
    addr
}

/// Sends one request, reads one answer: (status line, lower-cased head, decoded body).
async fn get(stream: &mut TcpStream, path: &str) -> (String, String, Vec<u8>) {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(stream, &mut buf).await;
    };
    let head = String::from_utf8(buf[..end].to_vec()).unwrap().to_ascii_lowercase();
    let status = head.lines().next().unwrap().to_string();
    let mut rest = buf[end..].to_vec();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(stream, &mut rest).await
    } else {
        let length: usize =
            head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().trim().parse().unwrap();
        while rest.len() < length {
            read_more(stream, &mut rest).await;
        }
        assert_eq!(rest.len(), length, "bytes past the answer");
        rest
    };
    (status, head, body)
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await.unwrap().unwrap();
    assert!(n > 0, "connection closed mid-answer");
    buf.extend_from_slice(&chunk[..n]);
}

/// Decodes a chunked body, reading more as needed; `buf` holds what was read past the head.
async fn dechunk(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = loop {
            if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                break at + i;
            }
            read_more(stream, buf).await;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&buf[at..line_end]).unwrap(), 16).unwrap();
        let data = line_end + 2;
        while buf.len() < data + size + 2 {
            read_more(stream, buf).await;
        }
        assert_eq!(&buf[data + size..data + size + 2], b"\r\n");
        body.extend_from_slice(&buf[data..data + size]);
        at = data + size + 2;
        if size == 0 {
            assert_eq!(at, buf.len(), "bytes past the last chunk");
            return body;
        }
        assert!(size <= 8192, "a chunk of {size} bytes");
    }
}

/// Runs `test` inside a `LocalSet`, as the server's `main` does.
fn local(test: impl std::future::Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    LocalSet::new().block_on(&runtime, test);
}

#[test]
fn plain_answers_on_one_connection_and_404s_unknown_paths() {
    local(async {
        let addr = start(&[]);
        let mut c = TcpStream::connect(addr).await.unwrap();
        for _ in 0..3 {
            let (status, head, body) = get(&mut c, "/a.bin").await;
            assert_eq!(status, "http/1.1 200 ok");
            assert!(head.contains("content-length: 20000"), "{head}");
            assert_eq!(body, file());
        }
        let (status, _, body) = get(&mut c, "/missing").await;
        assert_eq!(status, "http/1.1 404 not found");
        assert!(body.is_empty());
    });
}

#[test]
fn chunked_answers_decode_to_the_file() {
    local(async {
        let addr = start(&["--chunked"]);
        let mut c = TcpStream::connect(addr).await.unwrap();
        for _ in 0..2 {
            let (status, head, body) = get(&mut c, "/a.bin?x=1").await;
            assert_eq!(status, "http/1.1 200 ok");
            assert!(!head.contains("content-length"), "{head}");
            assert_eq!(body, file());
        }
    });
}

#[test]
fn split_answers_arrive_whole_after_the_gap() {
    local(async {
        let addr = start(&["--split", "--split-gap", "200ms"]);
        let mut c = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let (status, _, body) = get(&mut c, "/a.bin").await;
        assert_eq!(status, "http/1.1 200 ok");
        assert_eq!(body, file());
        // The body cannot leave before the gap has passed (a lower bound only).
        assert!(started.elapsed() >= Duration::from_millis(200));
    });
}

#[test]
fn delayed_answers_wait_at_least_the_delay() {
    local(async {
        let addr = start(&["--delay", "150ms"]);
        let mut c = TcpStream::connect(addr).await.unwrap();
        for _ in 0..2 {
            let started = Instant::now();
            let (status, _, body) = get(&mut c, "/a.bin").await;
            assert_eq!(status, "http/1.1 200 ok");
            assert_eq!(body, file());
            assert!(started.elapsed() >= Duration::from_millis(150));
        }
    });
}

#[test]
fn connection_close_and_request_bodies_end_the_connection() {
    local(async {
        let addr = start(&[]);
        for request in [
            "GET /a.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "POST /a.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        ] {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(request.as_bytes()).await.unwrap();
            let mut all = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut all)).await.unwrap().unwrap();
            let text = String::from_utf8_lossy(&all);
            match request.starts_with("GET") {
                true => assert!(text.starts_with("HTTP/1.1 200 OK") && all.ends_with(&file())),
                false => assert!(all.is_empty(), "{text}"),
            }
        }
    });
}
