//! Stored responses and the tiers that hold them. The memory tier is a
//! weight-bounded `quick_cache` (weight = body + headers + key bytes); the
//! optional disk tier ([`super::disk`]) sits under it and is read on a
//! memory miss. A response with `Vary` is stored as one entry per variant
//! under `primary + the request's values of the Vary headers`, and the
//! primary key holds a small marker naming those headers.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use super::disk::Disk;
use super::policy::{self, CacheControl};

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    /// Host (lowercase, no port) and path, for purges.
    pub host: String,
    pub path: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Unix seconds.
    pub response_time: u64,
    /// Corrected initial age, seconds (RFC 9111 4.2.3).
    pub initial_age: u64,
    /// Freshness lifetime, seconds.
    pub lifetime: u64,
    /// When it was stored, in nanoseconds: a variant older than its marker
    /// belongs to an invalidated generation.
    pub stored: u64,
    pub cc: CacheControl,
    /// [`Self::answer_headers`]' template, made on the first hit.
    pub answer: OnceLock<HeaderMap>,
}

impl Entry {
    /// The stored headers with an `Age` and, after any upstream cache's
    /// members, this cache's own `Cache-Status` value, both placeholders
    /// for the answer to replace in place; `Surrogate-Control`, kept with
    /// the entry for its rules, is for this cache only. An answer cloned from
    /// `headers` had to grow its table for those two on every hit (a
    /// reallocation: about 600 of a hit's 17.5k instructions). Its values
    /// share the stored ones' bytes, so the entry's weight leaves it out.
    pub fn answer_headers(&self) -> HeaderMap {
        self.answer
            .get_or_init(|| {
                let mut h = HeaderMap::with_capacity(self.headers.len() + 2);
                for (k, v) in &self.headers {
                    if *k != super::policy::SURROGATE_CONTROL {
                        h.append(k.clone(), v.clone());
                    }
                }
                h.insert(header::AGE, HeaderValue::from_static("0"));
                h.append(super::CACHE_STATUS.clone(), HeaderValue::from_static("Rampart"));
                h
            })
            .clone()
    }

    pub fn age(&self, now: u64) -> u64 {
        self.initial_age + now.saturating_sub(self.response_time)
    }

    /// Seconds of freshness left (negative: stale for that long).
    pub fn ttl(&self, now: u64) -> i64 {
        self.lifetime as i64 - self.age(now) as i64
    }

    pub fn header_str(&self, name: &HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn weight(&self, key: &str) -> u64 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum();
        (self.body.len() + headers + key.len() + self.host.len() + self.path.len() + 256) as u64
    }
}

/// The marker under a primary key whose response varies.
#[derive(Debug)]
pub struct Marker {
    pub host: String,
    pub path: String,
    pub names: Vec<HeaderName>,
    pub created: u64,
}

#[derive(Debug, Clone)]
pub enum Slot {
    Object(Arc<Entry>),
    Variants(Arc<Marker>),
}

impl Slot {
    fn host_path(&self) -> (&str, &str) {
        match self {
            Slot::Object(e) => (&e.host, &e.path),
            Slot::Variants(m) => (&m.host, &m.path),
        }
    }
}

#[derive(Debug, Clone)]
struct SlotWeight;

impl quick_cache::Weighter<String, Slot> for SlotWeight {
    fn weight(&self, key: &String, val: &Slot) -> u64 {
        match val {
            Slot::Object(e) => e.weight(key),
            Slot::Variants(m) => (key.len() + m.names.len() * 32 + 128) as u64,
        }
    }
}

pub fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

pub fn now_secs() -> u64 {
    policy::secs(SystemTime::now())
}

/// The secondary key of one variant: the primary key and the request's
/// values of each `Vary` header (absent and empty kept apart). Lines of
/// one header are joined as one list, each member trimmed (RFC 9111 4.1
/// allows that much normalising of list fields); commas and spaces
/// inside a quoted string are the member's own (`"a, b"` is not `"a,b"`);
/// every byte of a value is kept (obs-text and `%` written as `%XX`), so
/// two values that differ anywhere else are two variants.
pub fn variant_key(primary: &str, names: &[HeaderName], req: &HeaderMap) -> String {
    let mut key = String::with_capacity(primary.len() + 64);
    key.push_str(primary);
    for name in names {
        key.push('\n');
        key.push_str(name.as_str());
        let mut values = req.get_all(name).iter().peekable();
        if values.peek().is_none() {
            key.push('\u{1}');
            continue;
        }
        key.push('=');
        let members = values.flat_map(|v| list_members(v.as_bytes())).map(<[u8]>::trim_ascii);
        for (i, member) in members.enumerate() {
            if i > 0 {
                key.push(',');
            }
            push_escaped(&mut key, member);
        }
    }
    key
}

/// A list field's members: split at commas outside quoted strings.
fn list_members(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    let (mut quoted, mut escaped) = (false, false);
    v.split(move |&b| {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => return true,
            _ => {}
        }
        false
    })
}

/// `bytes` into `key`: printable ASCII as it is, anything else and `%`
/// as `%XX`.
fn push_escaped(key: &mut String, bytes: &[u8]) {
    use std::fmt::Write;
    for &b in bytes {
        if (b.is_ascii_graphic() && b != b'%') || b == b' ' {
            key.push(b as char);
        } else {
            let _ = write!(key, "%{b:02X}");
        }
    }
}

/// What a look-up found.
pub enum Found {
    Hit(Arc<Entry>),
    /// The URL is stored, but not for this request's variant.
    VaryMiss,
    Miss,
}

pub struct Store {
    mem: quick_cache::sync::Cache<String, Slot, SlotWeight>,
    pub disk: Option<Disk>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("entries", &self.mem.len()).field("bytes", &self.mem.weight()).finish()
    }
}

impl Store {
    /// A memory tier of `max_size` bytes. Shards are sized so each one can
    /// hold several objects of `max_object_size` (an item heavier than its
    /// shard would never be stored).
    pub fn new(max_size: u64, max_object_size: u64, disk: Option<Disk>) -> Store {
        let per_shard = max_object_size.saturating_mul(4).max(1);
        let shards = (max_size / per_shard).clamp(1, 16) as usize;
        let shards = if shards.is_power_of_two() { shards } else { shards.next_power_of_two() / 2 };
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(((max_size / 8192) as usize).clamp(64, 1 << 20))
            .weight_capacity(max_size)
            .shards(shards.max(1))
            .build();
        let mem = match options {
            Ok(o) => quick_cache::sync::Cache::with_options(o, SlotWeight, Default::default(), Default::default()),
            Err(_) => quick_cache::sync::Cache::with_weighter(1024, max_size, SlotWeight),
        };
        Store { mem, disk }
    }

    pub fn set_capacity(&self, max_size: u64) {
        if self.mem.capacity() != max_size {
            self.mem.set_capacity(max_size);
        }
    }

    pub fn memory_bytes(&self) -> u64 {
        self.mem.weight()
    }

    pub fn entries(&self) -> usize {
        self.mem.len()
    }

    fn get(&self, key: &str) -> Option<Slot> {
        self.mem.get(key)
    }

    /// Look `primary` up for a request with headers `req`, memory first,
    /// then disk (whatever is found there is kept in memory again).
    pub async fn lookup(&self, primary: &str, req: &HeaderMap) -> Found {
        let slot = match self.get(primary) {
            Some(s) => Some(s),
            None => self.read_disk(primary).await,
        };
        match slot {
            None => Found::Miss,
            Some(Slot::Object(e)) => Found::Hit(e),
            Some(Slot::Variants(m)) => {
                let key = variant_key(primary, &m.names, req);
                let v = match self.get(&key) {
                    Some(s) => Some(s),
                    None => self.read_disk(&key).await,
                };
                match v {
                    Some(Slot::Object(e)) if e.stored >= m.created => Found::Hit(e),
                    _ => Found::VaryMiss,
                }
            }
        }
    }

    /// [`Self::lookup`] in memory only: the stored response, if memory
    /// holds one for this request (its variant, under `Vary`). `None` says
    /// nothing about the disk tier.
    pub fn lookup_memory(&self, primary: &str, req: &HeaderMap) -> Option<Arc<Entry>> {
        self.lookup_memory_unless(primary, req, |_| false)
    }

    /// As [`Self::lookup_memory`], but `None` for a response that varies on
    /// a header `unsettled` names (one whose value in `req` is not final).
    pub fn lookup_memory_unless(
        &self,
        primary: &str,
        req: &HeaderMap,
        unsettled: impl Fn(&HeaderName) -> bool,
    ) -> Option<Arc<Entry>> {
        match self.get(primary)? {
            Slot::Object(e) => Some(e),
            Slot::Variants(m) if m.names.iter().any(&unsettled) => None,
            Slot::Variants(m) => match self.get(&variant_key(primary, &m.names, req))? {
                Slot::Object(e) if e.stored >= m.created => Some(e),
                _ => None,
            },
        }
    }

    async fn read_disk(&self, key: &str) -> Option<Slot> {
        let slot = self.disk.as_ref()?.read(key).await?;
        self.mem.insert(key.to_string(), slot.clone());
        Some(slot)
    }

    /// Store `entry` for the request with headers `req`; returns the key it
    /// went under.
    pub fn insert(&self, primary: &str, names: Vec<HeaderName>, req: &HeaderMap, mut entry: Entry) -> Arc<Entry> {
        if names.is_empty() {
            entry.stored = now_nanos();
            let e = Arc::new(entry);
            self.put(primary.to_string(), Slot::Object(Arc::clone(&e)));
            return e;
        }
        let marker = match self.get(primary) {
            Some(Slot::Variants(m)) if m.names == names => m,
            _ => {
                let m = Arc::new(Marker {
                    host: entry.host.clone(),
                    path: entry.path.clone(),
                    names,
                    created: now_nanos(),
                });
                self.put(primary.to_string(), Slot::Variants(Arc::clone(&m)));
                m
            }
        };
        entry.stored = now_nanos().max(marker.created);
        let e = Arc::new(entry);
        self.put(variant_key(primary, &marker.names, req), Slot::Object(Arc::clone(&e)));
        e
    }

    /// Replace the stored object under exactly `key` (a 304's new headers).
    fn put(&self, key: String, slot: Slot) {
        if let Some(disk) = &self.disk {
            disk.write(&key, &slot);
        }
        self.mem.insert(key, slot);
    }

    /// Store an updated copy of `old` (found for `req` under `primary`).
    pub fn update(&self, primary: &str, req: &HeaderMap, entry: Entry) -> Arc<Entry> {
        let names = match self.get(primary) {
            Some(Slot::Variants(m)) => m.names.clone(),
            _ => Vec::new(),
        };
        self.insert(primary, names, req, entry)
    }

    /// Forget everything stored for `primary` (every variant): after an
    /// unsafe request to the URL (RFC 9111 4.4).
    pub fn invalidate(&self, primary: &str) {
        self.mem.remove(primary);
        if let Some(disk) = &self.disk {
            disk.remove(primary);
        }
    }

    /// Remove every object whose host is `host` (any host when `None`) and
    /// whose path starts with `prefix`; returns how many responses went.
    pub fn purge(&self, host: Option<&str>, prefix: &str) -> usize {
        let matches = |h: &str, p: &str| host.is_none_or(|x| x.eq_ignore_ascii_case(h)) && p.starts_with(prefix);
        let mut keys = Vec::new();
        let mut objects = 0usize;
        for (k, v) in self.mem.iter() {
            let (h, p) = v.host_path();
            if matches(h, p) {
                if matches!(v, Slot::Object(_)) {
                    objects += 1;
                }
                keys.push(k);
            }
        }
        for k in &keys {
            self.mem.remove(k.as_str());
        }
        if let Some(disk) = &self.disk {
            objects = objects.max(disk.purge(host, prefix));
        }
        objects
    }
}
