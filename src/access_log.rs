//! The JSON access log: one line per request on stdout.
//!
//! Request tasks format their line into a thread-local scratch buffer and
//! append it to a shared batch under a short lock; a writer thread writes
//! the batch every 50 ms, or as soon as it passes 64 KiB. So a request costs
//! one memcpy, not a system call or a thread wake-up (nginx's
//! `access_log ... buffer=64k flush=1s`, tighter). If stdout cannot keep up
//! and 8 MiB are pending, lines are dropped rather than slowing the proxy
//! down or growing without bound: counted in
//! `rampart_access_log_dropped_total`, and said once on stderr.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

const FLUSH_AT: usize = 64 * 1024;
const MAX_PENDING: usize = 8 * 1024 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// The fields of one line; borrowed so building it copies nothing.
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    pub time: &'a str,
    pub client_ip: std::net::IpAddr,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub duration_ms: f64,
    pub upstream: Option<&'a str>,
    pub request_id: &'a str,
    pub route: Option<&'a str>,
}

struct Shared {
    batch: Mutex<Vec<u8>>,
    wake: Condvar,
    dropped: Counter,
    /// The first drop was logged.
    told: AtomicBool,
}

pub struct AccessLog {
    shared: Option<Arc<Shared>>,
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

impl AccessLog {
    /// A log writing to stdout from its own thread, counting the lines it
    /// drops in `dropped`.
    pub fn stdout(dropped: Counter) -> Self {
        let shared = Arc::new(Shared {
            batch: Mutex::new(Vec::with_capacity(FLUSH_AT * 2)),
            wake: Condvar::new(),
            dropped,
            told: AtomicBool::new(false),
        });
        let for_writer = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_batches(&for_writer, std::io::stdout()));
        match spawned {
            Ok(_) => AccessLog { shared: Some(shared) },
            Err(e) => {
                tracing::error!(error = %e, "cannot start the access-log thread; access logging is off");
                AccessLog::disabled()
            }
        }
    }

    pub fn disabled() -> Self {
        AccessLog { shared: None }
    }

    pub fn enabled(&self) -> bool {
        self.shared.is_some()
    }

    pub fn log(&self, record: &AccessRecord<'_>) {
        let Some(shared) = &self.shared else { return };
        SCRATCH.with(|scratch| {
            let Ok(mut line) = scratch.try_borrow_mut() else { return };
            line.clear();
            if serde_json::to_writer(&mut *line, record).is_err() {
                return;
            }
            line.push(b'\n');
            let Ok(mut batch) = shared.batch.lock() else { return };
            if batch.len() + line.len() > MAX_PENDING {
                drop(batch);
                shared.dropped.inc();
                if !shared.told.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "access log: stdout is not keeping up; lines are dropped (rampart_access_log_dropped_total counts them)"
                    );
                }
                return;
            }
            batch.extend_from_slice(&line);
            if batch.len() >= FLUSH_AT {
                shared.wake.notify_one();
            }
        });
    }

    /// Write out whatever is pending now (at shutdown, and when the log is
    /// dropped: the requests a drain's timeout cuts off are logged as their
    /// tasks are dropped with the runtime, after the drain has flushed).
    pub fn flush(&self) {
        let Some(shared) = &self.shared else { return };
        let pending = match shared.batch.lock() {
            Ok(mut b) => std::mem::take(&mut *b),
            Err(_) => return,
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&pending);
        let _ = out.flush();
    }
}

/// Swap the batch out and write it, every `FLUSH_EVERY` or when woken.
fn write_batches(shared: &Shared, out: impl Write) {
    let mut out = out;
    let mut spare: Vec<u8> = Vec::with_capacity(FLUSH_AT * 2);
    loop {
        {
            let Ok(mut batch) = shared.batch.lock() else { return };
            if batch.len() < FLUSH_AT {
                batch = match shared.wake.wait_timeout(batch, FLUSH_EVERY) {
                    Ok((b, _)) => b,
                    Err(_) => return,
                };
            }
            std::mem::swap(&mut *batch, &mut spare);
        }
        if !spare.is_empty() {
            // A broken stdout (closed pipe) must not take the proxy down: keep draining.
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// RFC 3339 UTC time with milliseconds, e.g. `2026-11-22T04:28:31.123Z`.
/// The date part is formatted once per second per thread.
pub fn rfc3339_now() -> String {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    CACHED.with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else { return format_time(secs, now.subsec_millis()) };
        if c.0 != secs {
            *c = (secs, format_time(secs, 0)[..19].to_string());
        }
        let mut s = String::with_capacity(24);
        s.push_str(&c.1);
        s.push('.');
        let ms = now.subsec_millis();
        s.push(char::from(b'0' + (ms / 100) as u8));
        s.push(char::from(b'0' + (ms / 10 % 10) as u8));
        s.push(char::from(b'0' + (ms % 10) as u8));
        s.push('Z');
        s
    })
}

fn format_time(secs: u64, millis: u32) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past 8 MiB pending (stdout blocked: no writer takes the batch here),
    /// lines are dropped and counted, and what is pending stays bounded.
    #[test]
    fn a_blocked_stdout_drops_lines_and_counts_them() {
        let dropped = Counter::default();
        let shared = Arc::new(Shared {
            batch: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            dropped: dropped.clone(),
            told: AtomicBool::new(false),
        });
        let log = AccessLog { shared: Some(Arc::clone(&shared)) };
        let path = "/".repeat(1000);
        let record = AccessRecord {
            time: "t",
            client_ip: "127.0.0.1".parse().unwrap(),
            method: "GET",
            host: "a",
            path: &path,
            status: 200,
            bytes: 5,
            duration_ms: 1.5,
            upstream: None,
            request_id: "r",
            route: None,
        };
        for _ in 0..10_000 {
            log.log(&record);
        }
        let pending = shared.batch.lock().unwrap().len();
        let line = serde_json::to_vec(&record).unwrap().len() + 1;
        assert_eq!(pending, MAX_PENDING / line * line);
        assert_eq!(dropped.get(), 10_000 - (MAX_PENDING / line) as u64);
    }

    #[test]
    fn cached_time_matches_a_fresh_format() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 24);
        assert!(t.ends_with('Z'));
        assert_eq!(&t[10..11], "T");
        assert_eq!(format_time(0, 7), "1970-01-01T00:00:00.007Z");
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn records_are_one_json_line() {
        let r = AccessRecord {
            time: "t",
            client_ip: "127.0.0.1".parse().unwrap(),
            method: "GET",
            host: "a\"b",
            path: "/x",
            status: 200,
            bytes: 5,
            duration_ms: 1.5,
            upstream: Some("127.0.0.1:1"),
            request_id: "id",
            route: None,
        };
        let s = serde_json::to_string(&r).unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["host"], "a\"b");
        assert_eq!(v["status"], 200);
        assert!(!s.contains('\n'));
    }
}
