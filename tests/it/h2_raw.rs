//! A raw HTTP/2 client for abuse tests: frames written byte by byte (what
//! no well-behaved client library would send), and a reader that records
//! what the server answered, acknowledging SETTINGS and PING as a live
//! client does (or not, when a test wants a client that never reads).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in values {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &p)
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// An HPACK integer with an `n`-bit prefix, the prefix's other bits `flags`.
fn hpack_int(out: &mut Vec<u8>, n: u8, flags: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// A literal header field without indexing, name and value as plain text.
pub fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0u8];
    hpack_int(&mut out, 7, 0, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(&mut out, 7, 0, value.len());
    out.extend_from_slice(value.as_bytes());
    out
}

/// The header block of `GET path` for host `x`.
pub fn get_block(path: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", path)] {
        b.extend(literal(n, v));
    }
    b
}

/// A frame the server sent.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A GOAWAY's or RST_STREAM's error code.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        self.payload.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// A connection under a test's control.
pub struct RawH2 {
    writes: mpsc::UnboundedSender<Vec<u8>>,
    /// Frames received, when reading.
    pub frames: Arc<Mutex<Vec<Frame>>>,
    /// Set when the server closed the connection (or reset it).
    pub closed: Arc<tokio::sync::Notify>,
    pub closed_flag: Arc<std::sync::atomic::AtomicBool>,
    /// Bytes the writer got out before the server stopped taking them.
    pub written: Arc<std::sync::atomic::AtomicUsize>,
}

impl RawH2 {
    /// Connect, send the preface and `initial` SETTINGS. With `read`, a
    /// task reads every frame and acknowledges SETTINGS and PING; without,
    /// nothing is ever read from the server.
    pub async fn connect(addr: SocketAddr, initial: &[(u16, u32)], read: bool) -> RawH2 {
        let s = TcpStream::connect(addr).await.unwrap();
        let (mut r, w) = s.into_split();
        let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let closed = Arc::new(tokio::sync::Notify::new());
        let closed_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(writer(w, rx, Arc::clone(&written), Arc::clone(&closed), Arc::clone(&closed_flag)));
        let _ = tx.send([PREFACE, &settings(initial)].concat());
        let frames = Arc::new(Mutex::new(Vec::new()));
        if read {
            let (frames, tx, closed, flag) =
                (Arc::clone(&frames), tx.clone(), Arc::clone(&closed), Arc::clone(&closed_flag));
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 65536];
                loop {
                    let n = r.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        flag.store(true, std::sync::atomic::Ordering::SeqCst);
                        closed.notify_waiters();
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while buf.len() >= 9 {
                        let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
                        if buf.len() < 9 + len {
                            break;
                        }
                        let f = Frame {
                            kind: buf[3],
                            flags: buf[4],
                            stream: u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff,
                            payload: buf[9..9 + len].to_vec(),
                        };
                        if f.kind == SETTINGS && f.flags & ACK == 0 {
                            let _ = tx.send(frame(SETTINGS, ACK, 0, &[]));
                        }
                        if f.kind == PING && f.flags & ACK == 0 {
                            let _ = tx.send(frame(PING, ACK, 0, &f.payload));
                        }
                        frames.lock().unwrap().push(f);
                        buf.drain(..9 + len);
                    }
                }
            });
        } else {
            // Keep the read half open, never reading from it.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(120)).await;
                drop(r);
            });
        }
        RawH2 { writes: tx, frames, closed, closed_flag, written }
    }

    pub fn send(&self, bytes: Vec<u8>) {
        let _ = self.writes.send(bytes);
    }

    pub fn is_closed(&self) -> bool {
        self.closed_flag.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Wait until the server closes the connection, at most `within`.
    pub async fn wait_closed(&self, within: Duration) -> bool {
        let notified = self.closed.notified();
        if self.is_closed() {
            return true;
        }
        tokio::time::timeout(within, notified).await.is_ok() || self.is_closed()
    }

    pub fn frames_of(&self, kind: u8) -> Vec<Frame> {
        self.frames.lock().unwrap().iter().filter(|f| f.kind == kind).cloned().collect()
    }

    pub fn written(&self) -> usize {
        self.written.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn writer(
    mut w: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    written: Arc<std::sync::atomic::AtomicUsize>,
    closed: Arc<tokio::sync::Notify>,
    flag: Arc<std::sync::atomic::AtomicBool>,
) {
    while let Some(bytes) = rx.recv().await {
        if w.write_all(&bytes).await.is_err() {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            closed.notify_waiters();
            return;
        }
        written.fetch_add(bytes.len(), std::sync::atomic::Ordering::SeqCst);
    }
}
