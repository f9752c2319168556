//! `paced`: an open-loop HTTP/1.1 load generator for `benches/compare`'s
//! fixed-rate row (`rate-50pct`).
//!
//! wrk is closed-loop: each connection sends its next request when the last
//! answer arrives, so a slow proxy lowers the load it is measured under, and
//! on this machine wrk's Lua pacing could not even reach the offered rate
//! (wrk2, which paces, is not packaged in Debian). Here request k is due at
//! `start + k / rate` whatever the answers do. Requests go out over a pool of
//! keep-alive connections opened before the clock starts; the most recently
//! idle connection takes the next request, as a proxy's own pool would.
//!
//! The pacer wakes every `--tick` (1 ms by default, wrk2's grain) and sends
//! what has fallen due since, so requests leave in small bursts: 28 at a time
//! at 28k req/s. A finer tick spreads them out but costs the client more CPU
//! per request (it sleeps and wakes more), and on this machine the client
//! shares its core with the upstream.
//!
//! Latency is timed from just before the write, so the tick's own grain is
//! not charged to the server. Two kinds of request are timed from when they
//! fell due instead, so that a stall cannot hide by delaying the requests
//! behind it (coordinated omission): one that found every connection busy
//! and waited in a backlog, and one the pacer sent more than two ticks late
//! because the client itself was held up.
//!
//! With `--close` every request gets a new connection (and `--tls` a new TLS
//! session, resumed when the server sent a ticket, as wrk does), and its
//! latency starts before the connect: what a visitor waits for.
//!
//! One thread, one JSON object on stdout:
//!
//! `cargo run --release --example paced -- --addr 127.0.0.1:18081 --path /1k.bin --rate 20000 --duration 10s`

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rustls::pki_types::ServerName;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::TlsConnector;

// The integration tests' verifier: takes any certificate, checks signatures.
#[path = "../tests/it/any_certificate.rs"]
mod any_certificate;
use any_certificate::AnyCertificate;

#[derive(Parser)]
#[command(about = "Open-loop HTTP/1.1 load at a fixed rate; prints one JSON object")]
struct Args {
    /// Where to send the requests.
    #[arg(long)]
    addr: SocketAddr,
    /// The Host header, and the TLS server name.
    #[arg(long, default_value = "localhost")]
    host: String,
    /// Speak TLS (ALPN http/1.1). The certificate is not checked: this is
    /// a benchmark client on loopback.
    #[arg(long)]
    tls: bool,
    /// A new connection for every request, sent with `Connection: close`.
    #[arg(long)]
    close: bool,
    #[arg(long, default_value = "/")]
    path: String,
    /// Requests per second offered.
    #[arg(long)]
    rate: f64,
    /// Keep-alive connections opened before the clock starts.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How long the measured part runs.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Load at the same rate on the same connections before the measured
    /// part, left out of the figures: the first requests on new connections
    /// wait for the server to accept them and to grow its upstream pool.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// How often the pacer wakes to send what has fallen due.
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
    tick: Duration,
    /// Print each answer slower than this to stderr, with when it fell due
    /// (ms into the measured part): to see whether stalls come in a pattern.
    #[arg(long, value_parser = humantime::parse_duration)]
    slow: Option<Duration>,
}

/// One request handed to a connection.
#[derive(Clone, Copy)]
struct Job {
    due: Instant,
    /// Its latency counts from `due`, not from the write: it waited for a
    /// free connection, or the pacer itself was held up (see `LATE`).
    from_due: bool,
}

/// Where the pacer leaves a job for one connection.
#[derive(Default)]
struct Slot {
    job: Cell<Option<Job>>,
    wake: Notify,
}

/// What the pacer and the connections share; everything runs on one thread.
#[derive(Default)]
struct Shared {
    /// Idle connections, most recently freed last.
    idle: RefCell<Vec<usize>>,
    backlog: RefCell<VecDeque<Instant>>,
    latencies_us: RefCell<Vec<u32>>,
    errors: Cell<u64>,
    backlogged: Cell<u64>,
    /// Measured requests the pacer sent more than `LATE` ticks after they
    /// fell due, and all measured requests.
    late: Cell<u64>,
    issued: Cell<u64>,
    used: RefCell<Vec<bool>>,
    stopping: Cell<bool>,
    /// Requests due before this are warm-up: answered, not counted.
    measure_from: Cell<Option<Instant>>,
    slow: Cell<Option<Duration>>,
}

#[derive(serde::Serialize)]
struct Report {
    offered_rps: f64,
    duration_s: f64,
    connections: usize,
    connections_used: usize,
    completed: usize,
    rps: f64,
    /// Measured requests that fell due; `completed` of them got a 200.
    issued: u64,
    errors: u64,
    backlogged: u64,
    late: u64,
    /// Over the whole run, warm-up included.
    tls_handshakes: u64,
    tls_resumed: u64,
    p50_us: Option<u32>,
    p90_us: Option<u32>,
    p99_us: Option<u32>,
    p999_us: Option<u32>,
    max_us: Option<u32>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rate > 0.0 && args.rate.is_finite(), "--rate must be a positive number");
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.tick >= Duration::from_micros(10), "--tick must be at least 10us");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = tokio::task::LocalSet::new().block_on(&runtime, run(args))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<Report> {
    let close = if args.close { "Connection: close\r\n" } else { "" };
    let request: Rc<[u8]> =
        format!("GET {} HTTP/1.1\r\nHost: {}\r\n{close}\r\n", args.path, args.host).into_bytes().into();
    let dialer = Rc::new(Dialer::new(args.addr, args.tls.then_some(args.host.as_str()))?);
    let shared = Rc::new(Shared::default());
    let mut slots = Vec::with_capacity(args.connections);
    for id in 0..args.connections {
        // With --close each request opens its own, inside its timing.
        let stream = match args.close {
            true => None,
            false => Some(
                tokio::time::timeout(ANSWER_TIMEOUT, dialer.open())
                    .await
                    .unwrap_or_else(|_elapsed| Err(io::ErrorKind::TimedOut.into()))
                    .with_context(|| format!("cannot connect to {}", args.addr))?,
            ),
        };
        let slot = Rc::new(Slot::default());
        slots.push(Rc::clone(&slot));
        let conn = Connection {
            id,
            dialer: Rc::clone(&dialer),
            close: args.close,
            request: Rc::clone(&request),
            shared: Rc::clone(&shared),
            slot,
        };
        tokio::task::spawn_local(conn.serve(stream));
    }
    *shared.idle.borrow_mut() = (0..args.connections).rev().collect();
    *shared.used.borrow_mut() = vec![false; args.connections];

    // SAFETY: an OwnedFd keeps its descriptor open, and the same, until dropped.
    let ticker = unsafe { AsyncFd::register_with_interest(timerfd(args.tick)?, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot register the pacing timer: {e}"))?;
    let start = Instant::now();
    let measure_from = start.checked_add(args.warmup).context("--warmup is too long")?;
    shared.measure_from.set(Some(measure_from));
    shared.slow.set(args.slow);
    let end = measure_from.checked_add(args.duration).context("--duration is too long")?;
    let late_after = args.tick * LATE;
    let mut issued: u64 = 0;
    loop {
        wait_tick(&ticker).await?;
        let now = Instant::now();
        let due_by_now = (now.min(end) - start).as_secs_f64() * args.rate;
        while (issued as f64) < due_by_now {
            let due = start + Duration::from_secs_f64(issued as f64 / args.rate);
            issued += 1;
            let measured = due >= measure_from;
            let late = now.saturating_duration_since(due) > late_after;
            if measured {
                shared.issued.set(shared.issued.get() + 1);
                shared.late.set(shared.late.get() + u64::from(late));
            }
            let free = shared.idle.borrow_mut().pop();
            match free {
                Some(id) => {
                    slots[id].job.set(Some(Job { due, from_due: late }));
                    slots[id].wake.notify_one();
                }
                None => {
                    shared.backlog.borrow_mut().push_back(due);
                    if measured {
                        shared.backlogged.set(shared.backlogged.get() + 1);
                    }
                }
            }
        }
        if now >= end {
            break;
        }
    }

    // Let what is in flight finish (each answer times out), then stop every
    // connection; the report's `issued` and `completed` show what is left.
    let give_up = Instant::now() + ANSWER_TIMEOUT + Duration::from_secs(1);
    while (shared.idle.borrow().len() < args.connections || !shared.backlog.borrow().is_empty())
        && Instant::now() < give_up
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    shared.stopping.set(true);
    for slot in &slots {
        slot.wake.notify_one();
    }

    let mut latencies = std::mem::take(&mut *shared.latencies_us.borrow_mut());
    latencies.sort_unstable();
    let completed = latencies.len();
    let duration_s = args.duration.as_secs_f64();
    let used = shared.used.borrow().iter().filter(|u| **u).count();
    Ok(Report {
        offered_rps: args.rate,
        duration_s,
        connections: args.connections,
        connections_used: used,
        completed,
        rps: completed as f64 / duration_s,
        issued: shared.issued.get(),
        errors: shared.errors.get(),
        backlogged: shared.backlogged.get(),
        late: shared.late.get(),
        tls_handshakes: dialer.handshakes.get(),
        tls_resumed: dialer.resumed.get(),
        p50_us: percentile(&latencies, 0.50),
        p90_us: percentile(&latencies, 0.90),
        p99_us: percentile(&latencies, 0.99),
        p999_us: percentile(&latencies, 0.999),
        max_us: latencies.last().copied(),
    })
}

/// The value at or above fraction `q` of `sorted` (nearest rank).
fn percentile(sorted: &[u32], q: f64) -> Option<u32> {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// Opens connections to the server.
struct Dialer {
    addr: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// TLS handshakes done, and how many of them resumed a session.
    handshakes: Cell<u64>,
    resumed: Cell<u64>,
}

impl Dialer {
    /// `server_name` set: speak TLS. One connector for every connection, so
    /// they share its session cache and resume.
    fn new(addr: SocketAddr, server_name: Option<&str>) -> anyhow::Result<Dialer> {
        let tls = match server_name {
            None => None,
            Some(name) => {
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                    .with_safe_default_protocol_versions()?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                    .with_no_client_auth();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = ServerName::try_from(name.to_string()).context("--host is not a TLS server name")?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
        };
        Ok(Dialer { addr, tls, handshakes: Cell::new(0), resumed: Cell::new(0) })
    }

    async fn open(&self) -> io::Result<Box<dyn Io>> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::new(stream)),
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), stream).await?;
                self.handshakes.set(self.handshakes.get() + 1);
                if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                    self.resumed.set(self.resumed.get() + 1);
                }
                Ok(Box::new(tls))
            }
        }
    }
}

struct Connection {
    id: usize,
    dialer: Rc<Dialer>,
    /// A new connection per request.
    close: bool,
    request: Rc<[u8]>,
    shared: Rc<Shared>,
    slot: Rc<Slot>,
}

impl Connection {
    /// Take jobs until told to stop: each one, then whatever backlog there
    /// is, then back to the idle list.
    async fn serve(self, mut stream: Option<Box<dyn Io>>) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            self.slot.wake.notified().await;
            if self.shared.stopping.get() {
                return;
            }
            let Some(mut job) = self.slot.job.take() else { continue };
            self.shared.used.borrow_mut()[self.id] = true;
            loop {
                if !self.exchange(&mut stream, job, &mut buf).await {
                    self.shared.errors.set(self.shared.errors.get() + 1);
                    stream = None; // The next request reconnects.
                }
                let next = self.shared.backlog.borrow_mut().pop_front();
                match next {
                    Some(due) => job = Job { due, from_due: true },
                    None => break,
                }
            }
            self.shared.idle.borrow_mut().push(self.id);
        }
    }

    /// One request and its whole answer, on `stream` or on a new connection
    /// when there is none or `close` is set; records the latency of a 200.
    async fn exchange(&self, stream: &mut Option<Box<dyn Io>>, job: Job, buf: &mut [u8]) -> bool {
        let since = if job.from_due { job.due } else { Instant::now() };
        let answer = async {
            let io = match stream {
                Some(io) if !self.close => io,
                _ => stream.insert(self.dialer.open().await?),
            };
            let answer = round_trip(io, &self.request, buf).await?;
            let took = since.elapsed();
            if self.close || !answer.keep_alive {
                let _ = io.shutdown().await;
                *stream = None;
            }
            io::Result::Ok((answer.status, took))
        };
        match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
            Ok(Ok((200, took))) => {
                if self.shared.measure_from.get().is_some_and(|from| job.due < from) {
                    return true;
                }
                if let (Some(slow), Some(start)) = (self.shared.slow.get(), self.shared.measure_from.get()) {
                    if took > slow {
                        let at = job.due.duration_since(start).as_secs_f64() * 1e3;
                        eprintln!("slow: due {at:.3} ms, took {} us, conn {}", took.as_micros(), self.id);
                    }
                }
                let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
                self.shared.latencies_us.borrow_mut().push(us);
                true
            }
            Ok(_) | Err(_) => false,
        }
    }
}

/// Longer than any answer in the harness takes; a connection that waits
/// this long counts an error and reconnects.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A request the pacer sends more than this many ticks after it fell due
/// is timed from when it fell due: the client itself was held up (on this
/// VM, all processes are at once now and then), and the wait is part of
/// what a visitor would see. Up to that, the lag is the tick's grain.
const LATE: u32 = 2;

/// What [`round_trip`] read.
struct Answer {
    status: u16,
    /// The server did not say `Connection: close`.
    keep_alive: bool,
}

/// Write `request`, read one answer with a Content-Length body, and return
/// its status. Anything else (chunked, garbage) is an error: the harness
/// only sends this at fixed-size files.
async fn round_trip(stream: &mut Box<dyn Io>, request: &[u8], buf: &mut [u8]) -> io::Result<Answer> {
    stream.write_all(request).await?;
    let mut filled = 0;
    let (answer, head_len, body_len) = loop {
        if filled == buf.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "response head too long"));
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(head_len)) => {
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Content-Length"))?;
                let closes = response.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("connection")
                        && h.value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                });
                let answer = Answer { status: response.code.unwrap_or(0), keep_alive: !closes };
                break (answer, head_len, length);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    };
    let mut have = filled - head_len;
    while have < body_len {
        let n = stream.read(buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
    }
    if have > body_len {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bytes after the answer"));
    }
    Ok(answer)
}

/// A non-blocking timer that fires every `tick`: tokio's own timers have a
/// 1 ms grain, which would send a millisecond's requests in one burst.
fn timerfd(tick: Duration) -> io::Result<OwnedFd> {
    // SAFETY: creates a new descriptor; no pointers are passed.
    let raw = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just created and nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let every = libc::timespec { tv_sec: tick.as_secs() as libc::time_t, tv_nsec: tick.subsec_nanos() as libc::c_long };
    let spec = libc::itimerspec { it_interval: every, it_value: every };
    // SAFETY: `spec` lives across the call; the old value is not asked for.
    if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Wait for the timer to fire at least once since the last call.
async fn wait_tick(ticker: &AsyncFd<OwnedFd>) -> io::Result<()> {
    loop {
        let mut ready = ticker.readable().await?;
        let fired = ready.try_io(|fd| {
            let mut expirations = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a buffer of 8.
            let n = unsafe { libc::read(fd.as_raw_fd(), expirations.as_mut_ptr().cast(), expirations.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
        match fired {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    //! `cargo test --all-targets` runs these: the client against a server on
    //! loopback, in the same runtime.

    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers every request with `200 ok`, after `delay`.
    async fn server(delay: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut filled = 0;
                    loop {
                        let Ok(n) = stream.read(&mut buf[filled..]).await else { return };
                        if n == 0 {
                            return;
                        }
                        filled += n;
                        // One request at a time: the client does not pipeline.
                        if buf[..filled].windows(4).any(|w| w == b"\r\n\r\n") {
                            filled = 0;
                            tokio::time::sleep(delay).await;
                            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if stream.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    fn run_against(addr: SocketAddr, args: &[&str]) -> Report {
        let addr = addr.to_string();
        let mut argv = vec!["paced", "--addr", &addr];
        argv.extend_from_slice(args);
        let args = Args::parse_from(argv);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        tokio::task::LocalSet::new().block_on(&runtime, run(args)).unwrap()
    }

    fn with_server(delay: Duration, args: &[&str]) -> Report {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let addr = runtime.block_on(server(delay));
        run_against(addr, args)
    }

    #[test]
    fn it_sends_the_offered_rate_and_counts_every_answer() {
        let report = with_server(
            Duration::ZERO,
            &["--rate", "400", "--warmup", "250ms", "--duration", "1s", "--connections", "8"],
        );
        // 400 requests fall due in the measured second, whatever the answers do.
        assert!((399..=401).contains(&report.issued), "issued {}", report.issued);
        assert_eq!(report.completed as u64, report.issued);
        assert_eq!(report.errors, 0);
        assert!(report.p50_us.is_some() && report.p99_us >= report.p50_us);
    }

    #[test]
    fn a_stalled_server_is_charged_from_when_requests_fell_due() {
        // Two connections at 100 ms per answer carry 20 requests a second;
        // 100 fall due. The rest wait in the backlog, and the wait counts:
        // timed from the write instead, every answer would take ~100 ms.
        let report = with_server(
            Duration::from_millis(100),
            &["--rate", "100", "--warmup", "0s", "--duration", "1s", "--connections", "2"],
        );
        assert!(report.backlogged > 50, "backlogged {}", report.backlogged);
        assert!(report.p99_us.is_some_and(|p99| p99 >= 1_000_000), "p99 {:?}", report.p99_us);
        assert_eq!(report.completed as u64, report.issued, "the drain waits for the backlog");
    }
}
