//! The timer wheel under [`Deadlines`](super::Deadlines): each deadline is
//! filed in the slot of the clock tick it falls in, so setting one, and
//! cancelling it, costs a push and a lookup by key, whatever the number of
//! connections: with 1,000 connections (callgrind, `h1-1k`) the ordered
//! map it replaces cost about 1,600 instructions per request in setting
//! and cancelling, the wheel about 300 (`benches/README.md`). A tick of
//! the clock empties the slots it passed, keeping what is not due yet: a
//! deadline more than a turn of the wheel ahead (an idle timeout) is
//! passed over once per turn.
//!
//! Pure: no clock, no lock; `Deadlines` brings both.

use std::task::Waker;

use super::Millis;

/// Slots on the wheel: a turn is `SLOTS` ticks (6.4 s at 25 ms).
const SLOTS: u64 = 256;

/// See the module documentation.
#[derive(Debug)]
pub(super) struct Wheel {
    /// The clock's tick, in milliseconds (at least 1).
    tick: Millis,
    /// Deadline ids by the tick they fall in, modulo [`SLOTS`]. An id
    /// whose timer was cancelled stays until its slot is next emptied.
    slots: Vec<Vec<u64>>,
    /// The deadlines, by key; a free one has no waker.
    timers: Vec<Timer>,
    /// Keys of free timers.
    free: Vec<u32>,
    /// The tick the last [`Wheel::expire`] reached: its slot may still
    /// hold deadlines later in that tick, so the next one looks again.
    expired_through: Millis,
}

#[derive(Debug)]
struct Timer {
    /// Bumped each time the timer is freed: an id of an earlier use no
    /// longer matches.
    generation: u32,
    at: Millis,
    waker: Option<Waker>,
}

impl Timer {
    /// Free the timer if `generation` is still its own: its waker, which
    /// is `None` if it fired or was cancelled already.
    fn release(&mut self, generation: u32) -> Option<Waker> {
        if self.generation != generation {
            return None;
        }
        let waker = self.waker.take()?;
        self.generation = self.generation.wrapping_add(1);
        Some(waker)
    }
}

/// An id: the timer's generation over its key.
fn id(generation: u32, key: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(key)
}

fn key_and_generation(id: u64) -> (usize, u32) {
    ((id & u64::from(u32::MAX)) as usize, (id >> 32) as u32)
}

impl Wheel {
    pub(super) fn new(tick: Millis) -> Self {
        let slots = (0..SLOTS).map(|_| Vec::new()).collect();
        Wheel { tick: tick.max(1), slots, timers: Vec::new(), free: Vec::new(), expired_through: 0 }
    }

    /// File `waker` to be woken once [`Wheel::expire`] reaches `at`; the
    /// id to cancel it with.
    pub(super) fn insert(&mut self, at: Millis, waker: Waker) -> u64 {
        let key = match self.free.pop() {
            Some(key) => key,
            None => {
                self.timers.push(Timer { generation: 0, at: 0, waker: None });
                u32::try_from(self.timers.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let Some(timer) = self.timers.get_mut(key as usize) else { return u64::MAX };
        timer.at = at;
        timer.waker = Some(waker);
        let id = id(timer.generation, key);
        // Never behind the last expiry: a deadline set while the clock
        // moved on is looked at with the next one.
        let tick = (at / self.tick).max(self.expired_through);
        self.slots[(tick % SLOTS) as usize].push(id);
        id
    }

    /// Cancel a deadline; nothing if it fired or was cancelled already.
    pub(super) fn remove(&mut self, id: u64) {
        let (key, generation) = key_and_generation(id);
        if self.timers.get_mut(key).and_then(|timer| timer.release(generation)).is_some() {
            self.free.push(key as u32);
        }
    }

    /// Move the wakers of every deadline at or before `now` to `due`.
    pub(super) fn expire(&mut self, now: Millis, due: &mut Vec<Waker>) {
        let last = now / self.tick;
        // After a stall of a whole turn or more, every slot once.
        let first = self.expired_through.max(last.saturating_sub(SLOTS - 1));
        let (timers, free) = (&mut self.timers, &mut self.free);
        for tick in first..=last {
            let slot = &mut self.slots[(tick % SLOTS) as usize];
            slot.retain(|&id| {
                let (key, generation) = key_and_generation(id);
                let Some(timer) = timers.get_mut(key) else { return false };
                if timer.at > now && timer.generation == generation && timer.waker.is_some() {
                    return true;
                }
                // Due, or a stale id (its timer fired or was cancelled).
                if let Some(waker) = timer.release(generation) {
                    due.push(waker);
                    free.push(key as u32);
                }
                false
            });
        }
        self.expired_through = self.expired_through.max(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counted() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (Arc::clone(&count), Waker::from(count))
    }

    fn expire(wheel: &mut Wheel, now: Millis) -> usize {
        let mut due = Vec::new();
        wheel.expire(now, &mut due);
        let n = due.len();
        due.into_iter().for_each(Waker::wake);
        n
    }

    #[test]
    fn deadlines_fire_once_when_reached_and_not_before() {
        let mut wheel = Wheel::new(25);
        let (a, wa) = counted();
        let (b, wb) = counted();
        wheel.insert(110, wa);
        wheel.insert(130, wb);
        assert_eq!(expire(&mut wheel, 100), 0);
        // 110 and 130 share no tick; 110's tick (100-124) is looked at
        // again until it is past.
        assert_eq!(expire(&mut wheel, 109), 0);
        assert_eq!(expire(&mut wheel, 110), 1);
        assert_eq!((a.0.load(Ordering::SeqCst), b.0.load(Ordering::SeqCst)), (1, 0));
        assert_eq!(expire(&mut wheel, 200), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        assert_eq!(expire(&mut wheel, 300), 0, "a deadline fired twice");
    }

    #[test]
    fn a_cancelled_deadline_never_fires_and_its_timer_is_reused() {
        let mut wheel = Wheel::new(25);
        let (_, w) = counted();
        let first = wheel.insert(60, w.clone());
        wheel.remove(first);
        let second = wheel.insert(60, w);
        assert_ne!(first, second, "a reused timer kept its old id");
        assert_eq!(wheel.timers.len(), 1);
        // The stale id in the slot is not the new deadline.
        wheel.remove(first);
        assert_eq!(expire(&mut wheel, 60), 1);
        wheel.remove(second);
        assert_eq!(expire(&mut wheel, 100), 0);
    }

    #[test]
    fn deadlines_beyond_a_turn_wait_for_their_own_time() {
        let mut wheel = Wheel::new(25);
        let turn = SLOTS * 25;
        let (_, w) = counted();
        wheel.insert(turn + 30, w);
        // Its slot comes round before it is due: passed over.
        assert_eq!(expire(&mut wheel, 40), 0);
        assert_eq!(expire(&mut wheel, turn - 1), 0);
        assert_eq!(expire(&mut wheel, turn + 29), 0);
        assert_eq!(expire(&mut wheel, turn + 30), 1);
    }

    #[test]
    fn a_clock_that_jumps_fires_everything_passed_and_a_late_insert_is_not_lost() {
        let mut wheel = Wheel::new(25);
        let mut counts = Vec::new();
        for at in [30, 500, 7_000, 20_000] {
            let (c, w) = counted();
            wheel.insert(at, w);
            counts.push(c);
        }
        assert_eq!(expire(&mut wheel, 50_000), 4);
        // Set for a time the last expiry passed already (the clock moved
        // on meanwhile): fired by the next one, not a turn later.
        let (_, w) = counted();
        wheel.insert(49_990, w);
        assert_eq!(expire(&mut wheel, 50_001), 1);
    }
}
