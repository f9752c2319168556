//! `upstream`: the origin server of `benches/compare`'s upstream modes that
//! nginx cannot play: one that answers after a delay, one that writes the
//! head and the body in two writes with a gap between them, and one that
//! answers with `Transfer-Encoding: chunked`.
//!
//! It serves every file directly under `--root` at `/NAME`, read into memory
//! at start, with a head like nginx's (Server, Date, Content-Type,
//! Content-Length, Last-Modified, Connection, Accept-Ranges). Each answer is
//! rendered once at start, so the cost per request is a parse of the
//! request head and one write (two with `--split`), which keeps this server
//! from being the bottleneck on the core it shares with the load generator.
//! One thread, one task per connection; GET and HEAD only (a request with a
//! body closes the connection), keep-alive unless the request says
//! `Connection: close`.
//!
//! - `--delay 1ms`: the answer leaves that long after its request was read,
//!   timed by a `timerfd` (`pause`), since tokio's 1 ms timer grain would
//!   make a 1 ms delay 1-2 ms.
//! - `--split`: the head in one write, then after `--split-gap` (100 µs)
//!   the body in another, so the proxy reads them as two segments, as from
//!   servers that flush the head before the body is ready.
//! - `--chunked`: `Transfer-Encoding: chunked`, `--chunk-size` bytes per
//!   chunk (8 KiB), the whole framed body still in one write.
//!
//! `cargo run --release --example upstream -- --listen 127.0.0.1:18080 --root DIR --delay 1ms`
//!
//! Modules: `pause` (the fine-grained delay queue), `tests`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;

use pause::Pauses;

mod pause;
#[cfg(test)]
mod tests;
#[path = "../shared/timerfd.rs"]
mod timerfd;

#[derive(Parser)]
#[command(about = "A benchmark origin: fixed files, with a delay, split writes or chunked bodies")]
struct Args {
    #[arg(long)]
    listen: SocketAddr,
    /// Every file directly in this directory is served at `/NAME`.
    #[arg(long)]
    root: PathBuf,
    /// Answer this long after the request was read (0: at once).
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    delay: Duration,
    /// Write the head, then the body in a second write after `--split-gap`.
    #[arg(long)]
    split: bool,
    #[arg(long, default_value = "100us", value_parser = humantime::parse_duration)]
    split_gap: Duration,
    /// Answer with `Transfer-Encoding: chunked` instead of `Content-Length`.
    #[arg(long)]
    chunked: bool,
    #[arg(long, default_value_t = 8192)]
    chunk_size: usize,
}

/// One file's answer, rendered at start.
struct Answer {
    head: Vec<u8>,
    body: Vec<u8>,
    /// `head` then `body`, for the single write.
    whole: Vec<u8>,
}

/// What every connection shares.
struct Site {
    answers: HashMap<String, Answer>,
    not_found: Answer,
    delay: Option<Rc<Pauses>>,
    gap: Option<Rc<Pauses>>,
}

/// Request heads larger than this close the connection.
const MAX_HEAD: usize = 64 * 1024;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.chunk_size > 0, "--chunk-size must be at least 1");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    tokio::task::LocalSet::new().block_on(&runtime, run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let site = Site::new(&args)?;
    let listener = listen(args.listen)?;
    accept(listener, site, args.split).await
}

impl Site {
    /// The answers, and the pause queues (on the current `LocalSet`).
    fn new(args: &Args) -> anyhow::Result<Rc<Site>> {
        let answers = load(args)?;
        let not_found = render(b"", "text/plain", "404 Not Found", args);
        let delay = match args.delay.is_zero() {
            true => None,
            false => Some(Pauses::start(args.delay)?),
        };
        let gap = match args.split {
            true => Some(Pauses::start(args.split_gap)?),
            false => None,
        };
        Ok(Rc::new(Site { answers, not_found, delay, gap }))
    }
}

fn listen(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr).with_context(|| format!("binding {addr}"))?;
    Ok(socket.listen(4096)?)
}

async fn accept(listener: TcpListener, site: Rc<Site>, split: bool) -> anyhow::Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let site = site.clone();
                tokio::task::spawn_local(async move {
                    // A client that goes away mid-answer is not an error here.
                    let _ = serve(stream, site, split).await;
                });
            }
            // Out of descriptors, or a connection reset before accept: go on.
            Err(e) => {
                eprintln!("upstream: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Every regular file directly under `--root`, rendered.
fn load(args: &Args) -> anyhow::Result<HashMap<String, Answer>> {
    let mut answers = HashMap::new();
    let dir = std::fs::read_dir(&args.root).with_context(|| format!("reading {}", args.root.display()))?;
    for entry in dir {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let body = std::fs::read(entry.path()).with_context(|| format!("reading {name}"))?;
        let kind = match name.rsplit_once('.').map(|(_, ext)| ext) {
            Some("txt") => "text/plain",
            Some("html") => "text/html",
            _ => "application/octet-stream",
        };
        answers.insert(format!("/{name}"), render(&body, kind, "200 OK", args));
    }
    Ok(answers)
}

fn render(body: &[u8], kind: &str, status: &str, args: &Args) -> Answer {
    let now = httpdate::fmt_http_date(SystemTime::now());
    let length = match args.chunked {
        true => "Transfer-Encoding: chunked".to_string(),
        false => format!("Content-Length: {}", body.len()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nServer: upstream\r\nDate: {now}\r\nContent-Type: {kind}\r\n{length}\r\n\
         Last-Modified: {now}\r\nConnection: keep-alive\r\nAccept-Ranges: bytes\r\n\r\n"
    )
    .into_bytes();
    let body = match args.chunked {
        true => chunked(body, args.chunk_size),
        false => body.to_vec(),
    };
    let whole = [head.as_slice(), body.as_slice()].concat();
    Answer { head, body, whole }
}

/// `body` framed as chunks of at most `size` bytes, and the last chunk.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / size * 12 + 16);
    for chunk in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// One connection: requests in turn, each answered before the next is read.
async fn serve(mut stream: TcpStream, site: Rc<Site>, split: bool) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let me = Rc::new(Notify::new());
    let mut buf = Vec::with_capacity(4096);
    loop {
        while let Some(end) = find_head_end(&buf) {
            let request =
                parse(&buf[..end]).map(|r| (site.answers.get(r.path).unwrap_or(&site.not_found), r.head_only, r.close));
            buf.drain(..end);
            let Some((answer, head_only, close)) = request else {
                return Ok(()); // a body, or not HTTP/1.x: not ours to serve
            };
            if let Some(delay) = &site.delay {
                delay.wait(&me).await;
            }
            match (head_only, split, &site.gap) {
                (true, _, _) => stream.write_all(&answer.head).await?,
                (false, true, Some(gap)) => {
                    stream.write_all(&answer.head).await?;
                    gap.wait(&me).await;
                    stream.write_all(&answer.body).await?;
                }
                _ => stream.write_all(&answer.whole).await?,
            }
            if close {
                return Ok(());
            }
        }
        if buf.len() > MAX_HEAD {
            return Ok(());
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

struct Request<'a> {
    path: &'a str,
    head_only: bool,
    close: bool,
}

/// Just past the first `\r\n\r\n`.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The request line's path, and the two headers that matter here; `None`
/// for what this server does not serve (a body, another method or version).
fn parse(head: &[u8]) -> Option<Request<'_>> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut line = lines.next()?.split(' ');
    let head_only = match line.next()? {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    let target = line.next()?;
    if !line.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    let mut close = false;
    for header in lines {
        let Some((name, value)) = header.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && value != "0")
        {
            return None;
        }
    }
    Some(Request { path, head_only, close })
}
