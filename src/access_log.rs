//! The JSON access log: one line per request on stdout.
//!
//! Request tasks format their line and hand it to a writer thread through a
//! bounded channel, so no request ever waits on a stdout write. If stdout
//! cannot keep up and the channel is full, lines are dropped and counted
//! rather than slowing the proxy down.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::SystemTime;

use serde::Serialize;

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

pub struct AccessLog {
    sender: Option<SyncSender<Vec<u8>>>,
    dropped: AtomicU64,
}

impl AccessLog {
    /// A log writing to stdout from its own thread.
    pub fn stdout() -> Self {
        let (tx, rx) = sync_channel::<Vec<u8>>(16 * 1024);
        let spawned =
            std::thread::Builder::new().name("access-log".into()).spawn(move || write_lines(rx, std::io::stdout()));
        match spawned {
            Ok(_) => AccessLog { sender: Some(tx), dropped: AtomicU64::new(0) },
            Err(e) => {
                tracing::error!(error = %e, "cannot start the access-log thread; access logging is off");
                AccessLog::disabled()
            }
        }
    }

    pub fn disabled() -> Self {
        AccessLog { sender: None, dropped: AtomicU64::new(0) }
    }

    pub fn enabled(&self) -> bool {
        self.sender.is_some()
    }

    pub fn log(&self, record: &AccessRecord<'_>) {
        let Some(tx) = &self.sender else { return };
        let mut line = Vec::with_capacity(256);
        if serde_json::to_writer(&mut line, record).is_err() {
            return;
        }
        line.push(b'\n');
        if let Err(TrySendError::Full(_)) = tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because stdout was too slow.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Write lines as they come, flushing whenever the queue runs dry.
fn write_lines(rx: Receiver<Vec<u8>>, out: impl Write) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        if out.write_all(&line).is_err() {
            return;
        }
        while let Ok(more) = rx.try_recv() {
            if out.write_all(&more).is_err() {
                return;
            }
        }
        if out.flush().is_err() {
            return;
        }
    }
}

/// RFC 3339 UTC time with milliseconds, e.g. `2026-11-22T04:28:31.123Z`.
pub fn rfc3339_now() -> String {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        now.subsec_millis()
    )
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
