//! The memory responses take while they are copied aside to be stored.
//! Each miss copies its body as it streams (up to `max_object_size`), and
//! that copy is not yet in the store, whose `max_size` bounds only what
//! was stored: 200 concurrent misses of 8 MB bodies held 1.3 GB under a
//! 64 MiB `max_size`. [`Fills`] bounds the copies together to `max_size`
//! as well: a response that would pass it is not stored (its client still
//! gets all of it, as one past `max_object_size`).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct Fills {
    held: AtomicU64,
    limit: AtomicU64,
}

impl Fills {
    pub fn new(limit: u64) -> Self {
        Fills { held: AtomicU64::new(0), limit: AtomicU64::new(limit) }
    }

    /// A reload's new `max_size`.
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Take `n` more bytes: false, taking nothing, past the limit.
    pub fn take(&self, n: u64) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(n).filter(|&after| after <= limit)
            })
            .is_ok()
    }

    /// Give back `n` bytes taken before.
    pub fn give_back(&self, n: u64) {
        self.held.fetch_sub(n.min(self.held()), Ordering::Relaxed);
    }

    /// Bytes held by copies in progress.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_together_stay_under_the_limit() {
        let f = Fills::new(100);
        assert!(f.take(60));
        assert!(!f.take(41), "past the limit");
        assert_eq!(f.held(), 60, "a refused take takes nothing");
        assert!(f.take(40));
        f.give_back(60);
        assert!(f.take(50));
        f.set_limit(10);
        assert!(!f.take(1));
        f.give_back(1000);
        assert_eq!(f.held(), 0);
    }
}
