//! One upstream server: its address, weight, and the live state the
//! balancers and health checks share across threads and reloads.
//!
//! A server is in rotation when its active probes say it is healthy *and*
//! it is not serving a passive ejection (too many consecutive failures seen
//! by live traffic). Either a passing probe or a successful request ends an
//! ejection early.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::HeaderValue;

use super::conn::Conn;
use super::idle::IdleConns;
use crate::config::{PassiveHealth, UpstreamAddr};
use crate::metrics::ServerMetrics;

/// The longest passive ejection, however often a server fails.
const MAX_EJECTION_DOUBLINGS: u32 = 5;

#[derive(Debug)]
pub struct Server {
    pub addr: UpstreamAddr,
    /// The address as a `Host` header value, for requests that reach the
    /// upstream without one (`preserve_host = false`); made once, not per
    /// request. `None` only if the address is no valid header value.
    pub host_header: Option<HeaderValue>,
    pub weight: u32,
    /// The address as a metrics label.
    pub label: Arc<str>,
    /// Counter handles for this server's exchanges.
    pub metrics: ServerMetrics,
    /// Requests sent and whose response body has not ended yet.
    in_flight: AtomicUsize,
    /// Verdict of the active probes.
    probe_healthy: AtomicBool,
    /// Consecutive failures seen by live traffic.
    failures: AtomicU32,
    /// Ejections in a row without a success in between (grows the cool-down).
    ejections: AtomicU32,
    /// Out of rotation until this many ms after the process clock's epoch.
    ejected_until_ms: AtomicU64,
    /// Keep-alive connections waiting for the next request.
    pub idle: IdleConns,
    /// Its address left the pool (a container stopped, a name moved):
    /// never picked again, and connects still under way give up at once
    /// ([`Server::retire`]).
    retired: AtomicBool,
    left: tokio_util::sync::CancellationToken,
}

fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // +1 so that 0 always means "never ejected".
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// A rotation change worth logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Ejected { for_duration: Duration },
    Restored,
}

impl Server {
    pub fn new(pool: &Arc<str>, addr: UpstreamAddr, weight: u32) -> Result<Self, http::uri::InvalidUri> {
        let authority = Authority::try_from(addr.0.as_str())?;
        let host_header = HeaderValue::from_str(authority.as_str()).ok();
        let label: Arc<str> = Arc::from(addr.0.as_str());
        Ok(Server {
            addr,
            host_header,
            weight,
            metrics: ServerMetrics::new(Arc::clone(pool), Arc::clone(&label)),
            label,
            in_flight: AtomicUsize::new(0),
            probe_healthy: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            idle: IdleConns::default(),
            retired: AtomicBool::new(false),
            left: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// The address left its pool: requests still connecting to it (to a
    /// stopped container's address, a connect waits out `connect_timeout`)
    /// fail now and go to another server; it is never picked again.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.left.cancel();
    }

    /// Resolves once [`Server::retire`] was called.
    pub fn retired(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.left.cancelled()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// In rotation: probes pass and no passive ejection is running.
    pub fn is_up(&self) -> bool {
        if !self.probe_healthy.load(Ordering::Relaxed) || self.retired.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until == 0 || now_ms() >= until
    }

    /// Taken out of rotation by live traffic, whether or not its cool-down
    /// has passed (a request or a probe restores it).
    pub fn passively_ejected(&self) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) != 0
    }

    pub fn probe_healthy(&self) -> bool {
        self.probe_healthy.load(Ordering::Relaxed)
    }

    /// Record the active probes' verdict; returns the previous one. A
    /// healthy verdict also ends any passive ejection.
    pub fn set_probe_healthy(&self, healthy: bool) -> bool {
        if healthy {
            self.clear_ejection();
        }
        self.probe_healthy.swap(healthy, Ordering::Relaxed)
    }

    /// Live traffic reached the server and got an answer.
    pub fn record_success(&self) -> Option<Transition> {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejected_until_ms.load(Ordering::Relaxed) != 0 {
            self.clear_ejection();
            return Some(Transition::Restored);
        }
        None
    }

    /// Live traffic failed to reach the server (connect error, reset,
    /// timeout). Ejects it after `max_fails` in a row.
    pub fn record_failure(&self, passive: &PassiveHealth) -> Option<Transition> {
        if passive.max_fails == 0 {
            return None;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < passive.max_fails {
            return None;
        }
        self.failures.store(0, Ordering::Relaxed);
        let doublings = self.ejections.fetch_add(1, Ordering::Relaxed).min(MAX_EJECTION_DOUBLINGS);
        let cool_down = passive.fail_timeout * (1u32 << doublings);
        self.ejected_until_ms.store(now_ms() + cool_down.as_millis() as u64, Ordering::Relaxed);
        Some(Transition::Ejected { for_duration: cool_down })
    }

    fn clear_ejection(&self) {
        self.ejected_until_ms.store(0, Ordering::Relaxed);
        self.ejections.store(0, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
    }

    /// Count a request as in flight until the guard is dropped (which the
    /// proxy arranges to happen when the response body ends or is dropped).
    pub fn start_request(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard { server: Arc::clone(self) }
    }
}

/// One exchange with a server: its in-flight slot, freed on drop;
/// [`release`] also hands the exchange's cleanly finished connection back
/// for reuse.
///
/// [`release`]: InFlightGuard::release
#[derive(Debug)]
pub struct InFlightGuard {
    server: Arc<Server>,
}

impl InFlightGuard {
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// The exchange ended cleanly: park its connection for the next one.
    pub fn release(self, conn: Conn) {
        self.server.idle.push(&self.server, conn);
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.server.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Server {
        Server::new(&Arc::from("test"), UpstreamAddr("127.0.0.1:1".into()), 1).unwrap()
    }

    #[test]
    fn passive_ejection_after_max_fails_and_growing_cool_down() {
        let s = server();
        let p = PassiveHealth { max_fails: 2, fail_timeout: Duration::from_secs(10) };
        assert_eq!(s.record_failure(&p), None);
        assert!(s.is_up());
        assert_eq!(s.record_failure(&p), Some(Transition::Ejected { for_duration: Duration::from_secs(10) }));
        assert!(!s.is_up());
        s.record_failure(&p);
        assert_eq!(s.record_failure(&p), Some(Transition::Ejected { for_duration: Duration::from_secs(20) }));
        // A success restores it and resets the cool-down.
        assert_eq!(s.record_success(), Some(Transition::Restored));
        assert!(s.is_up());
        s.record_failure(&p);
        assert_eq!(s.record_failure(&p), Some(Transition::Ejected { for_duration: Duration::from_secs(10) }));
        // A passing probe restores it too.
        s.set_probe_healthy(true);
        assert!(s.is_up());
    }

    #[test]
    fn probes_take_a_server_out() {
        let s = server();
        s.set_probe_healthy(false);
        assert!(!s.is_up());
        assert!(!s.set_probe_healthy(true));
        assert!(s.is_up());
    }

    #[test]
    fn zero_max_fails_disables_passive_checks() {
        let s = server();
        let p = PassiveHealth { max_fails: 0, fail_timeout: Duration::from_secs(10) };
        for _ in 0..10 {
            assert_eq!(s.record_failure(&p), None);
        }
        assert!(s.is_up());
    }
}
