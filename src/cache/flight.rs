//! One upstream fetch per cache key at a time. The first request that
//! misses becomes the key's leader and goes upstream; later ones for the
//! same key wait (bounded by `lock_timeout`) for the leader's outcome: once
//! its response is stored they are served from the cache, and when it was
//! not storable they go upstream themselves, all at once, never one after
//! another. A leader that went away without an outcome (its client left,
//! its upstream broke off) hands the key on: the waiters join again and
//! one of them leads, as nginx's `proxy_cache_lock` does, instead of all
//! of them going upstream at once. A purge or an invalidation while a
//! fetch is under way dooms it ([`Flights::doom`]): its answer still goes
//! to its client, but is not stored, so what was purged does not come
//! back from a fetch that began before the purge.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// How a leader's fetch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    /// The response may not be stored (or is too large): each waiter
    /// fetches its own.
    NotStored,
    /// The leader was dropped before it knew: nothing was decided.
    Abandoned,
}

/// One key's fetch: its outcome for the waiters, and whether a purge came
/// while it ran.
#[derive(Debug)]
struct Flight {
    outcome: watch::Sender<Option<Outcome>>,
    doomed: AtomicBool,
}

type Slot = Arc<Flight>;

fn new_slot() -> Slot {
    Arc::new(Flight { outcome: watch::channel(None).0, doomed: AtomicBool::new(false) })
}

#[derive(Debug, Default)]
pub struct Flights {
    map: Arc<Mutex<HashMap<String, Slot>>>,
}

/// What joining a key's flight made of this request.
pub enum Join {
    Leader(Leader),
    Follower(watch::Receiver<Option<Outcome>>),
}

impl Flights {
    pub fn join(&self, key: &str) -> Join {
        let Ok(mut map) = self.map.lock() else {
            // A poisoned map only loses the coordination, never the request.
            return Join::Leader(Leader { map: None, key: String::new(), slot: new_slot() });
        };
        if let Some(slot) = map.get(key) {
            return Join::Follower(slot.outcome.subscribe());
        }
        let slot = new_slot();
        map.insert(key.to_string(), Arc::clone(&slot));
        Join::Leader(Leader { map: Some(Arc::clone(&self.map)), key: key.to_string(), slot })
    }

    /// Follow `key`'s fetch if one is under way; never lead it.
    pub fn follow(&self, key: &str) -> Option<watch::Receiver<Option<Outcome>>> {
        self.map.lock().ok()?.get(key).map(|slot| slot.outcome.subscribe())
    }

    /// A purge or invalidation removed what the keys `matches` picks: the
    /// fetches under way for them must not store what they bring.
    pub fn doom(&self, matches: impl Fn(&str) -> bool) {
        if let Ok(map) = self.map.lock() {
            for (key, slot) in map.iter().filter(|(key, _)| matches(key)) {
                tracing::debug!(key, "cache fetch under way outdated by a purge; its answer will not be stored");
                slot.doomed.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Lead `key` only if nobody does (background revalidation).
    pub fn try_lead(&self, key: &str) -> Option<Leader> {
        match self.join(key) {
            Join::Leader(l) => Some(l),
            Join::Follower(_) => None,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }
}

/// Wait for the leader, at most `timeout`. `None`: it timed out or left
/// without saying.
pub async fn wait(mut rx: watch::Receiver<Option<Outcome>>, timeout: Duration) -> Option<Outcome> {
    match tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await {
        Ok(Ok(v)) => *v,
        _ => None,
    }
}

/// The leader's hold on a key; dropping it without [`Leader::finish`]
/// tells the followers it was [`Outcome::Abandoned`].
#[derive(Debug)]
pub struct Leader {
    map: Option<Arc<Mutex<HashMap<String, Slot>>>>,
    key: String,
    slot: Slot,
}

impl Leader {
    pub fn finish(self, outcome: Outcome) {
        self.release(outcome);
    }

    /// A purge came while this fetch ran ([`Flights::doom`]).
    pub fn doomed(&self) -> bool {
        self.slot.doomed.load(Ordering::Relaxed)
    }

    fn release(&self, outcome: Outcome) {
        if let Some(map) = &self.map {
            if let Ok(mut m) = map.lock() {
                if m.get(&self.key).is_some_and(|s| Arc::ptr_eq(s, &self.slot)) {
                    m.remove(&self.key);
                }
            }
        }
        self.slot.outcome.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(outcome);
                true
            } else {
                false
            }
        });
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.release(Outcome::Abandoned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_learn_the_leaders_outcome() {
        let f = Flights::default();
        let Join::Leader(leader) = f.join("k") else { panic!("first is leader") };
        let Join::Follower(rx) = f.join("k") else { panic!("second follows") };
        assert!(f.try_lead("k").is_none());
        let waiter = tokio::spawn(wait(rx, Duration::from_secs(5)));
        leader.finish(Outcome::Stored);
        assert_eq!(waiter.await.unwrap(), Some(Outcome::Stored));
        assert_eq!(f.in_flight(), 0);
        let Join::Leader(again) = f.join("k") else { panic!("free again") };
        let Join::Follower(rx) = f.join("k") else { panic!("follows") };
        drop(again);
        assert_eq!(wait(rx, Duration::from_secs(5)).await, Some(Outcome::Abandoned));
        let Join::Leader(third) = f.join("k") else { panic!("free after the drop") };
        let Join::Follower(rx) = f.join("k") else { panic!("follows") };
        third.finish(Outcome::NotStored);
        assert_eq!(wait(rx, Duration::from_secs(5)).await, Some(Outcome::NotStored));
    }

    #[tokio::test]
    async fn a_follower_gives_up_after_the_timeout() {
        let f = Flights::default();
        let _leader = f.join("k");
        let Join::Follower(rx) = f.join("k") else { panic!("follows") };
        assert_eq!(wait(rx, Duration::from_millis(10)).await, None);
    }
}
