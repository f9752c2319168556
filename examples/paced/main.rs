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
//! `--closed` drops the pacing for a closed loop, as wrk's: each connection
//! sends its next request as soon as its last answer is in. With `--close`
//! this is wrk's `Connection: close` load, but timed from the connect, where
//! wrk times from the write of the request, after the handshake: a server
//! whose connections queue in the handshake looks faster to wrk than one
//! whose connections queue after it.
//!
//! One thread, one JSON object on stdout:
//!
//! `cargo run --release --example paced -- --addr 127.0.0.1:18081 --path /1k.bin --rate 20000 --duration 10s`
//!
//! Modules: `connection` (opening connections, one request and its answer),
//! `ticker` (the pacing timer).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tokio::sync::Notify;

use connection::{Connection, Dialer, ANSWER_TIMEOUT};
use ticker::Ticker;

mod connection;
#[cfg(test)]
mod tests;
mod ticker;
#[path = "../shared/timerfd.rs"]
mod timerfd;

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
    #[arg(long, required_unless_present = "closed", conflicts_with = "closed")]
    rate: Option<f64>,
    /// A closed loop instead of a rate: every connection sends its next
    /// request as soon as its last answer is in, for `--duration` after
    /// `--warmup`.
    #[arg(long)]
    closed: bool,
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
    /// Measured requests the pacer sent more than [`LATE`] ticks after they
    /// fell due, and all measured requests.
    late: Cell<u64>,
    issued: Cell<u64>,
    used: RefCell<Vec<bool>>,
    stopping: Cell<bool>,
    /// Requests due before this are warm-up: answered, not counted.
    measure_from: Cell<Option<Instant>>,
    /// `--closed`: connections start requests of their own until then.
    closed_until: Cell<Option<Instant>>,
    slow: Cell<Option<Duration>>,
}

#[derive(serde::Serialize)]
struct Report {
    /// None with `--closed`.
    offered_rps: Option<f64>,
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

/// A request the pacer sends more than this many ticks after it fell due
/// is timed from when it fell due: the client itself was held up (on this
/// VM, all processes are at once now and then), and the wait is part of
/// what a visitor would see. Up to that, the lag is the tick's grain.
const LATE: u32 = 2;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(rate) = args.rate {
        anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be a positive number");
    }
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.tick >= Duration::from_micros(10), "--tick must be at least 10us");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = tokio::task::LocalSet::new().block_on(&runtime, run(args))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<Report> {
    let dialer = Rc::new(Dialer::new(args.addr, args.tls.then_some(args.host.as_str()))?);
    let shared = Rc::new(Shared::default());
    let slots = open_pool(&args, &dialer, &shared).await?;
    match args.rate {
        Some(rate) => pace(&args, rate, &shared, &slots).await?,
        None => closed_loop(&args, &shared, &slots).await?,
    }
    drain(&shared, args.connections).await;
    shared.stopping.set(true);
    for slot in &slots {
        slot.wake.notify_one();
    }
    Ok(report(&args, &shared, &dialer))
}

/// Start one task per connection, all idle; without `--close`, each with
/// its connection open.
async fn open_pool(args: &Args, dialer: &Rc<Dialer>, shared: &Rc<Shared>) -> anyhow::Result<Vec<Rc<Slot>>> {
    let close = if args.close { "Connection: close\r\n" } else { "" };
    let request: Rc<[u8]> =
        format!("GET {} HTTP/1.1\r\nHost: {}\r\n{close}\r\n", args.path, args.host).into_bytes().into();
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
            dialer: Rc::clone(dialer),
            close: args.close,
            request: Rc::clone(&request),
            shared: Rc::clone(shared),
            slot,
        };
        tokio::task::spawn_local(conn.serve(stream));
    }
    *shared.idle.borrow_mut() = (0..args.connections).rev().collect();
    *shared.used.borrow_mut() = vec![false; args.connections];
    Ok(slots)
}

/// Hand each request to an idle connection, or to the backlog, as it
/// falls due: warm-up first, then the measured part.
async fn pace(args: &Args, rate: f64, shared: &Shared, slots: &[Rc<Slot>]) -> anyhow::Result<()> {
    let ticker = Ticker::new(args.tick).context("cannot start the pacing timer")?;
    let start = Instant::now();
    let measure_from = start.checked_add(args.warmup).context("--warmup is too long")?;
    shared.measure_from.set(Some(measure_from));
    shared.slow.set(args.slow);
    let end = measure_from.checked_add(args.duration).context("--duration is too long")?;
    let late_after = args.tick * LATE;
    let mut issued: u64 = 0;
    loop {
        ticker.wait().await?;
        let now = Instant::now();
        let due_by_now = (now.min(end) - start).as_secs_f64() * rate;
        while (issued as f64) < due_by_now {
            let due = start + Duration::from_secs_f64(issued as f64 / rate);
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
            return Ok(());
        }
    }
}

/// `--closed`: give every connection its first request, and let each start
/// its next one (see [`Shared::next_closed_job`]) until the end.
async fn closed_loop(args: &Args, shared: &Shared, slots: &[Rc<Slot>]) -> anyhow::Result<()> {
    let start = Instant::now();
    let measure_from = start.checked_add(args.warmup).context("--warmup is too long")?;
    let end = measure_from.checked_add(args.duration).context("--duration is too long")?;
    shared.measure_from.set(Some(measure_from));
    shared.slow.set(args.slow);
    shared.closed_until.set(Some(end));
    shared.idle.borrow_mut().clear();
    for slot in slots {
        let Some(job) = shared.next_closed_job() else { break };
        slot.job.set(Some(job));
        slot.wake.notify_one();
    }
    tokio::time::sleep_until(end.into()).await;
    Ok(())
}

impl Shared {
    /// `--closed`: the next request of a connection whose answer is in,
    /// due now, or none once the run is over.
    fn next_closed_job(&self) -> Option<Job> {
        let now = Instant::now();
        if self.closed_until.get().is_none_or(|end| now >= end) {
            return None;
        }
        if self.measure_from.get().is_some_and(|from| now >= from) {
            self.issued.set(self.issued.get() + 1);
        }
        Some(Job { due: now, from_due: false })
    }
}

/// Let what is in flight finish: each answer times out, so this ends. The
/// report's `issued` and `completed` show anything left.
async fn drain(shared: &Shared, connections: usize) {
    let give_up = Instant::now() + ANSWER_TIMEOUT + Duration::from_secs(1);
    while (shared.idle.borrow().len() < connections || !shared.backlog.borrow().is_empty()) && Instant::now() < give_up
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn report(args: &Args, shared: &Shared, dialer: &Dialer) -> Report {
    let mut latencies = std::mem::take(&mut *shared.latencies_us.borrow_mut());
    latencies.sort_unstable();
    let completed = latencies.len();
    let duration_s = args.duration.as_secs_f64();
    let used = shared.used.borrow().iter().filter(|u| **u).count();
    Report {
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
    }
}

/// The value at or above fraction `q` of `sorted` (nearest rank).
fn percentile(sorted: &[u32], q: f64) -> Option<u32> {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}
