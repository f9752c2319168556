//! The `rampart` command line: parse flags, set up logging and the runtime,
//! and hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rampart::busy_poll::BusyPoll;
use rampart::config::{Config, ConfigErrors};

#[derive(Parser)]
#[command(name = "rampart", version, about = "Edge reverse proxy: TLS, routing, balancing, health checks, metrics")]
struct Cli {
    /// Config file (for `run`, the default command).
    #[arg(long, global = true, env = "RAMPART_CONFIG", default_value = "config/rampart.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Run,
    /// Validate the config: print a summary, or every problem as PATH:LINE:COL.
    Check,
    /// Start demo upstreams and the proxy on 127.0.0.1:8080 / :8443 / :9901.
    Demo {
        /// Plain-HTTP listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: std::net::SocketAddr,
        /// HTTPS listener (self-signed certificate).
        #[arg(long, default_value = "127.0.0.1:8443")]
        https: std::net::SocketAddr,
        /// Admin listener.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
    },
    /// Exit 0 if the admin /healthz answers 200 (for container health checks).
    Healthcheck {
        /// Default: /healthz on the config's admin listener (loopback if it
        /// listens on all addresses), or http://127.0.0.1:9901/healthz when
        /// the config cannot be read.
        #[arg(long)]
        url: Option<String>,
    },
}

/// `/healthz` on the admin listener `config` names: what the running proxy
/// listens on, in the same container. An unspecified address (`0.0.0.0`,
/// `[::]`) is asked on loopback.
fn healthz_url(config: &std::path::Path) -> String {
    let admin = Config::load(config).ok().and_then(|c| c.listen.admin);
    let mut addr = admin.unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 9901)));
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}/healthz")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => match rampart::state::load_config(&cli.config) {
            Ok(c) => match rampart::state::Snapshot::check(c.clone()).and_then(|_| rampart::tls::check(&c)) {
                Ok(_) => {
                    println!("{}", c.summary());
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    ExitCode::FAILURE
                }
            },
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Healthcheck { url } => {
            match rampart::demo::healthcheck(&url.unwrap_or_else(|| healthz_url(&cli.config))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run => report(run(cli.config)),
        Command::Demo { http, https, admin } => report(demo(http, https, admin)),
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        // Config problems already read `PATH:LINE:COL: error: ...`.
        Err(e) if e.is::<ConfigErrors>() => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let directives = log_directives(std::env::var("RUST_LOG").ok().as_deref());
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_directives(None)));
    // Logs go to stderr; stdout carries the JSON access log alone.
    tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// The log filter: `RUST_LOG`, or `info`. rustls warns about what clients
/// get wrong (an IP address sent as the server name, as wrk and some health
/// checkers do on every handshake): nothing an operator can act on, and a
/// line per connection, so it logs errors only unless `RUST_LOG` names it.
fn log_directives(rust_log: Option<&str>) -> String {
    let base = rust_log.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("info");
    let names_rustls = base.split(',').any(|directive| {
        let target = directive.split('=').next().unwrap_or_default().trim();
        target == "rustls" || target.starts_with("rustls::")
    });
    if names_rustls || base == "off" {
        base.to_string()
    } else {
        format!("{base},rustls=error")
    }
}

/// The async runtime: `workers` threads, or one per core. One worker runs
/// tokio's current-thread scheduler on the main thread: no work-stealing
/// queues, no cross-thread wake-ups, and no idle main thread beside it
/// (figures in benches/README.md).
///
/// With `busy_poll`, every wake-up of a worker restarts the busy poller
/// (see `rampart::busy_poll`), which `block_on` starts.
fn runtime(workers: Option<usize>, busy_poll: Option<&Arc<BusyPoll>>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.on_thread_park(thread_cache::on_park);
    if let Some(poll) = busy_poll {
        let poll = Arc::clone(poll);
        b.on_thread_unpark(move || poll.on_unpark());
    }
    b.enable_all().build().context("cannot start the async runtime")
}

/// Run `main` on a new runtime (see [`runtime`]), beside what every
/// runtime runs: the thread-cache clock, and the busy poller when there is
/// one.
fn block_on<F: std::future::Future>(
    workers: Option<usize>,
    busy_poll: Option<Arc<BusyPoll>>,
    main: F,
) -> anyhow::Result<F::Output> {
    let runtime = runtime(workers, busy_poll.as_ref())?;
    Ok(runtime.block_on(async move {
        tokio::spawn(thread_cache::tick());
        if let Some(poll) = busy_poll {
            tokio::spawn(poll.run());
        }
        main.await
    }))
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    init_tracing();
    let config = rampart::state::load_config(&path)?;
    let workers = config.server.workers;
    let busy_poll = BusyPoll::new(config.server.busy_poll);
    block_on(workers, busy_poll, async move {
        let running = match rampart::start(config, Some(path)).await {
            Ok(running) => running,
            Err(rampart::StartError::Config(errors)) => return Err(errors.into()),
            Err(e) => return Err(anyhow::anyhow!("{e}")),
        };
        running.run_until_signal().await.context("cannot install signal handlers")?;
        Ok(())
    })?
}

fn demo(http: std::net::SocketAddr, https: std::net::SocketAddr, admin: std::net::SocketAddr) -> anyhow::Result<()> {
    init_tracing();
    block_on(None, None, async move {
        let running = rampart::demo::start(rampart::demo::DemoListen { http, https, admin })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        running.run_until_signal().await.context("cannot install signal handlers")?;
        Ok(())
    })?
}

/// jemalloc, with a background thread returning freed pages within about a
/// second (options in `.cargo/config.toml`). Against glibc's malloc, same
/// CPU per request, and memory per idle connection 2.6 KiB -> 0.4 KiB:
/// glibc keeps the pages a burst of busy connections used. mimalloc was
/// slower (+15% CPU per request) and kept more (4.0 KiB). Figures in
/// benches/README.md.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's per-thread caches of freed blocks, sized for bursts and
/// emptied four times a second.
///
/// Each new connection allocates and frees a handful of blocks of 4-14 KiB
/// (hyper's 8 KiB read and write buffers among them). jemalloc's default
/// cache keeps 20 of each size and trims what went unused every 64 KiB
/// allocated, so with many connections opening and closing the cache kept
/// emptying into its slabs and refilling from them: a slab allocation and
/// release per block, 3.2k of the 46.5k instructions per connection in the
/// `h1-close` benchmark (callgrind). `.cargo/config.toml` keeps 64 of each
/// size and trims every 16 MiB instead. A cache that large would hold on to
/// memory after a burst, since jemalloc only trims a cache when its thread
/// allocates; so every worker empties its cache when it goes to sleep, at
/// most once per [`TICK`](thread_cache::TICK), and the tick itself wakes a
/// worker that has gone quiet to do so. With one worker (`workers = 1`)
/// that is the whole story. With several, the tick wakes one of them: a
/// worker that fell asleep right after its flush keeps what it freed since
/// (at most one tick's worth) until it next wakes.
mod thread_cache {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// How often a worker empties its cache: often enough that a quiet
    /// single-worker process has handed a burst's blocks back within a
    /// second (the background thread then returns the pages), rarely enough
    /// that refilling the cache costs nothing measurable under load.
    const TICK: Duration = Duration::from_millis(250);

    /// Advanced every [`TICK`] by [`tick`].
    static EPOCH: AtomicU64 = AtomicU64::new(0);

    thread_local! {
        /// The epoch this thread last emptied its cache in.
        static FLUSHED_IN: Cell<u64> = const { Cell::new(0) };
    }

    /// Tokio calls this before a worker sleeps.
    pub fn on_park() {
        let epoch = EPOCH.load(Ordering::Relaxed);
        if FLUSHED_IN.get() != epoch {
            FLUSHED_IN.set(epoch);
            flush();
        }
    }

    pub async fn tick() {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            EPOCH.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Empty this thread's cache. False when jemalloc refused, which on a
    /// thread without a cache is harmless.
    pub(super) fn flush() -> bool {
        // SAFETY: "thread.tcache.flush" is a void control: no old or new
        // value, so every pointer is null and the length zero.
        #[allow(unsafe_code)]
        let status = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"thread.tcache.flush".as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        status == 0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rustls_logs_errors_only_unless_named() {
        assert_eq!(super::log_directives(None), "info,rustls=error");
        assert_eq!(super::log_directives(Some(" ")), "info,rustls=error");
        assert_eq!(super::log_directives(Some("debug")), "debug,rustls=error");
        assert_eq!(super::log_directives(Some("info,rustls=debug")), "info,rustls=debug");
        assert_eq!(super::log_directives(Some("rustls::server=warn")), "rustls::server=warn");
        // Other crates' names only contain it.
        assert_eq!(super::log_directives(Some("tokio_rustls=debug")), "tokio_rustls=debug,rustls=error");
        assert_eq!(super::log_directives(Some("off")), "off");
    }

    #[test]
    fn jemalloc_takes_the_flush_and_the_compiled_in_options() {
        // A misspelt control name would make every flush a silent no-op.
        drop(vec![0u8; 8192]);
        assert!(super::thread_cache::flush());
        // The options in .cargo/config.toml reached jemalloc's build.
        assert_eq!(read_option::<std::ffi::c_uint>(c"opt.tcache_nslots_small_min"), 64);
        assert_eq!(read_option::<isize>(c"opt.dirty_decay_ms"), 250);
    }

    /// A jemalloc option's value. `T` must be the option's C type
    /// (`unsigned` for counts, `ssize_t` for decay times).
    fn read_option<T: Copy + Default>(name: &std::ffi::CStr) -> T {
        let mut value = T::default();
        let mut len = std::mem::size_of::<T>();
        // SAFETY: `value` and `len` describe a buffer of exactly the size
        // of `T`, which the caller matches to the option's type.
        #[allow(unsafe_code)]
        let status = unsafe {
            tikv_jemalloc_sys::mallctl(name.as_ptr(), (&mut value as *mut T).cast(), &mut len, std::ptr::null_mut(), 0)
        };
        assert_eq!(status, 0, "{name:?}");
        value
    }
}
