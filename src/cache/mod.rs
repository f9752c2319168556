//! The shared HTTP cache (RFC 9111) behind the `cache` middleware: the
//! caching rules ([`policy`]), the stored responses and their memory and
//! disk tiers ([`store`], [`disk`]), and one upstream fetch per key
//! ([`flight`]). The middleware (`middleware/cache.rs`) drives these from
//! the request and response phases; a [`Cache`] outlives reloads, kept by
//! the middleware's name.

pub mod disk;
pub mod fills;
pub mod flight;
pub mod policy;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

pub use fills::Fills;
pub use flight::Flights;
pub use store::Store;

/// RFC 9211's response header, one member per cache on the way.
pub static CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("cache-status");

/// A cache's settings, from its `[middleware.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub max_size: u64,
    pub dir: Option<PathBuf>,
    pub max_disk_size: u64,
    pub max_object_size: u64,
    pub default_ttl: Duration,
    pub lock_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_size: 256 << 20,
            dir: None,
            max_disk_size: 1 << 30,
            max_object_size: 8 << 20,
            default_ttl: Duration::ZERO,
            lock_timeout: Duration::from_secs(5),
        }
    }
}

/// The state that survives a reload: the stored responses and the fetches
/// in flight.
#[derive(Debug)]
pub struct Cache {
    pub store: Store,
    pub flights: Flights,
    /// The responses being copied aside to be stored, bounded together.
    pub fills: Fills,
}

impl Cache {
    pub fn open(s: &Settings) -> Result<Cache, String> {
        let disk = match &s.dir {
            Some(dir) => Some(disk::Disk::open(dir, s.max_disk_size)?),
            None => None,
        };
        Ok(Cache {
            store: Store::new(s.max_size, s.max_object_size, disk),
            flights: Flights::default(),
            fills: Fills::new(s.max_size),
        })
    }

    /// Remove the responses of `key` (an unsafe request's answer, RFC 9111
    /// 4.4); a fetch of it under way will not store its answer.
    pub fn invalidate(&self, key: &str) {
        self.flights.doom(|k| k == key);
        self.store.invalidate(key);
    }

    /// Remove every response whose host is `host` (any when `None`) and
    /// whose path starts with `prefix`, fetches under way included; how
    /// many responses went.
    pub fn purge(&self, host: Option<&str>, prefix: &str) -> usize {
        self.flights.doom(|key| {
            let Some((_, rest)) = key.split_once("://") else { return false };
            let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
            let bare = match authority.strip_prefix('[') {
                Some(_) => authority.find(']').map_or(authority, |i| &authority[..=i]),
                None => authority.split(':').next().unwrap_or(authority),
            };
            host.is_none_or(|h| h.eq_ignore_ascii_case(bare)) && path.starts_with(prefix)
        });
        self.store.purge(host, prefix)
    }

    /// Whether this cache can serve `next` as it is (same disk directory),
    /// its memory bound adjusted.
    pub fn reusable_for(&self, next: &Settings) -> bool {
        let dir = self.store.disk.as_ref().map(|d| d.dir().to_path_buf());
        dir == next.dir
    }
}
