//! The admin listener's connection slots. At most a fixed number of admin
//! connections are open at once, so a flood on the port cannot use up the
//! process's file descriptors. When every slot is taken, the oldest
//! connection without a request in flight (one that has sent nothing yet,
//! or a keep-alive connection between requests) is closed to make room for
//! the new one, as nginx reuses its idle and not yet read connections when
//! `worker_connections` runs out. So idle connections, however many, cannot
//! shut out the health probes and Prometheus; only a new connection that
//! finds every open one busy with a request is refused.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// The open admin connections, oldest first.
pub struct Slots {
    max: usize,
    open: Mutex<Open>,
}

struct Open {
    next_id: u64,
    conns: VecDeque<Arc<Conn>>,
}

/// One open connection: its requests in flight, and the token that closes it.
pub struct Conn {
    id: u64,
    in_flight: AtomicUsize,
    close: CancellationToken,
}

/// A connection's slot, given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    conn: Arc<Conn>,
}

/// A request in flight on a connection, from its head until its answer's
/// body has been sent (the guard rides in the body).
pub struct InFlight(Arc<Conn>);

impl Slots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Slots { max, open: Mutex::new(Open { next_id: 0, conns: VecDeque::new() }) })
    }

    /// A slot for a new connection, closing the oldest idle one when all are
    /// taken; `None` when every open connection has a request in flight.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.conns.len() >= self.max {
            let idle = open.conns.iter().position(|c| c.in_flight.load(Ordering::Relaxed) == 0)?;
            if let Some(oldest) = open.conns.remove(idle) {
                oldest.close.cancel();
            }
        }
        let conn = Arc::new(Conn { id: open.next_id, in_flight: AtomicUsize::new(0), close: CancellationToken::new() });
        open.next_id += 1;
        open.conns.push_back(Arc::clone(&conn));
        Some(Slot { slots: Arc::clone(self), conn })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).conns.len()
    }
}

impl Slot {
    /// Resolves when the connection is to close to make room.
    pub fn closed(&self) -> WaitForCancellationFuture<'_> {
        self.conn.close.cancelled()
    }

    /// The connection, for its requests to mark themselves in flight.
    pub fn conn(&self) -> Arc<Conn> {
        Arc::clone(&self.conn)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = open.conns.iter().position(|c| c.id == self.conn.id) {
            open.conns.remove(i);
        }
    }
}

impl Conn {
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(slot: &Slot) -> bool {
        slot.conn.close.is_cancelled()
    }

    #[test]
    fn a_full_listener_closes_its_oldest_idle_connection_for_a_new_one() {
        let slots = Slots::new(3);
        let a = slots.admit().expect("a slot");
        let b = slots.admit().expect("a slot");
        let c = slots.admit().expect("a slot");
        assert!(![&a, &b, &c].iter().any(|s| closed(s)));
        // `a` is busy: `b`, the oldest idle one, makes room.
        let request = a.conn().begin();
        let d = slots.admit().expect("room made");
        assert!(!closed(&a) && closed(&b) && !closed(&c) && !closed(&d));
        assert_eq!(slots.len(), 3);
        drop(b);
        assert_eq!(slots.len(), 3, "the closed connection's slot was given already");
        // Then `c`; once `a`'s request is done, `a` too.
        let e = slots.admit().expect("room made");
        assert!(closed(&c) && !closed(&a));
        drop(request);
        let _f = slots.admit().expect("room made");
        assert!(closed(&a) && !closed(&d) && !closed(&e));
    }

    #[test]
    fn a_new_connection_is_refused_only_when_every_one_is_busy() {
        let slots = Slots::new(2);
        let a = slots.admit().expect("a slot");
        let b = slots.admit().expect("a slot");
        let _ra = a.conn().begin();
        let rb = b.conn().begin();
        assert!(slots.admit().is_none());
        assert!(!closed(&a) && !closed(&b));
        drop(rb);
        assert!(slots.admit().is_some());
        assert!(closed(&b));
        // A dropped slot frees its place without closing anyone.
        let slots = Slots::new(1);
        drop(slots.admit());
        let g = slots.admit().expect("a free slot");
        assert!(!closed(&g));
    }
}
