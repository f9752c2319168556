//! A chaos upstream for fault injection: a raw TCP server that reads a
//! request head and then misbehaves as the request's path says (`/reset`,
//! `/stall`, `/drip-body`, ...), and what the tests measure the proxy by:
//! its open file descriptors and whether it panicked.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::util::Proxy;

/// How long the chaos server keeps a stalled connection open at most (the
/// proxy must have given up long before).
const STALL: Duration = Duration::from_secs(60);

pub struct ChaosUpstream {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl ChaosUpstream {
    pub async fn start() -> ChaosUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (count, token) = (Arc::clone(&accepted), stop.clone());
        tokio::spawn(async move {
            loop {
                let accept = tokio::select! {
                    a = listener.accept() => a,
                    _ = token.cancelled() => return,
                };
                let Ok((stream, _)) = accept else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let token = token.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(stream) => {}
                        _ = token.cancelled() => {}
                    }
                });
            }
        });
        ChaosUpstream { addr, accepted, stop }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for ChaosUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Read one request head; its path's last segment names the misbehaviour.
async fn serve(mut s: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_string();
    let path = line.split(' ').nth(1).unwrap_or("/");
    let mode = path.rsplit('/').next().unwrap_or("");
    let _ = misbehave(&mut s, mode).await;
}

async fn drip(s: &mut TcpStream, bytes: &[u8], every: Duration) -> std::io::Result<()> {
    for b in bytes {
        s.write_all(&[*b]).await?;
        tokio::time::sleep(every).await;
    }
    Ok(())
}

async fn misbehave(s: &mut TcpStream, mode: &str) -> std::io::Result<()> {
    match mode {
        // A well-behaved answer, for warming up and for checking that the
        // proxy still serves after each case.
        "ok" => s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await?,
        // Python's http.server by default: HTTP/1.0, the body ended by the close.
        "http10" => s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nan old server").await?,
        // A code with no standard reason phrase (Cloudflare's).
        "reason-520" => s.write_all(b"HTTP/1.1 520 Origin Error\r\nContent-Length: 2\r\n\r\nno").await?,
        // An RST instead of an answer (SO_LINGER 0, then close).
        "reset" => {
            let _ = socket2::SockRef::from(&*s).set_linger(Some(Duration::ZERO));
            return Ok(());
        }
        "close-before-answer" => return Ok(()),
        "close-mid-head" => s.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await?,
        "close-mid-body" => s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789").await?,
        "close-mid-chunked" => {
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n").await?
        }
        "reset-mid-body" => {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789").await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = socket2::SockRef::from(&*s).set_linger(Some(Duration::ZERO));
            return Ok(());
        }
        "stall" => tokio::time::sleep(STALL).await,
        "stall-mid-body" => {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789").await?;
            tokio::time::sleep(STALL).await
        }
        "drip-head" => drip(s, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", Duration::from_secs(1)).await?,
        "drip-body" => {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n").await?;
            drip(s, b"drip", Duration::from_secs(1)).await?;
            tokio::time::sleep(STALL).await
        }
        "garbage" => s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\x00\x01\x02\xff\xfe\r\n\r\n").await?,
        "bad-status" => s.write_all(b"HTTP/1.1 999999 Huh\r\nContent-Length: 0\r\n\r\n").await?,
        "huge-head" => {
            s.write_all(b"HTTP/1.1 200 OK\r\n").await?;
            let line = format!("X-Big: {}\r\n", "a".repeat(1000));
            for _ in 0..100 {
                s.write_all(line.as_bytes()).await?;
            }
            s.write_all(b"Content-Length: 0\r\n\r\n").await?;
            tokio::time::sleep(STALL).await
        }
        "many-headers" => {
            s.write_all(b"HTTP/1.1 200 OK\r\n").await?;
            for i in 0..1000 {
                s.write_all(format!("X-H{i}: v\r\n").as_bytes()).await?;
            }
            s.write_all(b"Content-Length: 0\r\n\r\n").await?;
        }
        "longer-than-declared" => {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA BYTES NOBODY ASKED FOR").await?;
            tokio::time::sleep(Duration::from_millis(500)).await
        }
        "bad-chunk" => {
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n\r\n").await?;
            tokio::time::sleep(STALL).await
        }
        "conflicting-length" => {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhello").await?;
            tokio::time::sleep(STALL).await
        }
        "gzip-chunked" => {
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n").await?;
            tokio::time::sleep(STALL).await
        }
        _ => s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await?,
    }
    s.flush().await
}

/// Open file descriptors of the proxy process.
pub fn fd_count(p: &Proxy) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", p.child.id())).map(|d| d.count()).unwrap_or(0)
}

/// The proxy's open descriptors, listed with what they point at, for messages.
pub fn fd_list(p: &Proxy) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", p.child.id())) else { return Vec::new() };
    dir.filter_map(|e| e.ok())
        .map(|e| {
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                std::fs::read_link(e.path()).unwrap_or_default().display()
            )
        })
        .collect()
}

/// Whether the proxy is still running and never logged a panic.
pub fn alive_without_panics(p: &mut Proxy) -> Result<(), String> {
    if let Ok(Some(status)) = p.child.try_wait() {
        return Err(format!("proxy exited: {status}"));
    }
    let stderr = p.stderr.lock().unwrap();
    match stderr.iter().find(|l| l.contains("panicked")) {
        Some(line) => Err(format!("proxy panicked: {line}")),
        None => Ok(()),
    }
}

/// What a raw HTTP/1.1 client got: the bytes, and whether the proxy closed
/// the connection (rather than the read timing out).
pub struct RawAnswer {
    pub bytes: Vec<u8>,
    pub closed: bool,
}

impl RawAnswer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    pub fn status(&self) -> u16 {
        self.text().get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    /// The bytes after the head.
    pub fn body(&self) -> &[u8] {
        match self.bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(at) => &self.bytes[at + 4..],
            None => &[],
        }
    }

    /// The head's Content-Length, if it has one.
    pub fn content_length(&self) -> Option<usize> {
        self.text()
            .lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
            .and_then(|v| v.parse().ok())
    }
}

/// One request on a new connection; reads until the proxy closes or
/// `within` passes.
pub async fn raw_get(addr: SocketAddr, path: &str, within: Duration) -> RawAnswer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: chaos\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    RawAnswer { bytes, closed }
}
