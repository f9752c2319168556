//! The circuit breaker in front of Redis: closed while Redis answers, open
//! after any failed call. While open, calls fail at once, without touching
//! the network, so a dead or frozen Redis costs requests no latency after
//! the first failure. Only the heartbeat closes it again (its probe, once a
//! second, is the half-open state), so no request ever pays for the probe.

use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::metrics::gauge::Gauge;

#[derive(Debug)]
pub(super) struct Breaker {
    closed: AtomicBool,
    /// `rampart_cluster_up`, kept equal to `closed`.
    gauge: Gauge,
}

impl Breaker {
    /// Starts open: nothing is known to answer until the first heartbeat.
    pub(super) fn new(gauge: Gauge) -> Self {
        gauge.set(0);
        Breaker { closed: AtomicBool::new(false), gauge }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Open it; true if it was closed (log the change once).
    pub(super) fn trip(&self) -> bool {
        let was = self.closed.swap(false, Ordering::Relaxed);
        self.gauge.set(0);
        was
    }

    /// Close it; true if it was open.
    pub(super) fn close(&self) -> bool {
        let was = self.closed.swap(true, Ordering::Relaxed);
        self.gauge.set(1);
        !was
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_on_failure_and_closes_on_a_probe() {
        let b = Breaker::new(Gauge::default());
        assert!(!b.is_closed());
        assert!(b.close());
        assert!(!b.close());
        assert_eq!(b.gauge.get(), 1);
        assert!(b.trip());
        assert!(!b.trip());
        assert!(!b.is_closed());
        assert_eq!(b.gauge.get(), 0);
    }
}
