//! The optional disk tier under `dir`: one file per stored key, named by a
//! 128-bit hash of the key, so the cache survives a restart. A file is
//! written to a temporary name and renamed into place (readers never see
//! half a file); it carries its full key (checked on read, so a hash
//! collision is a miss) and a checksum. A file that does not parse, or
//! whose checksum is wrong, is ignored and removed. The tier is bounded by
//! `max_disk_size`: past it, the least recently used files go. This file
//! owns the directory and its in-memory index (sizes, hosts and paths for
//! purges, last use for eviction); the bytes of a file are `format.rs`'s.

mod format;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use format::{decode, encode, file_name, to_slot};

use super::store::Slot;

#[derive(Debug, Clone)]
struct Indexed {
    size: u64,
    host: String,
    path: String,
    object: bool,
    used: u64,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<HashMap<String, Indexed>>,
    bytes: AtomicU64,
    clock: AtomicU64,
}

/// The disk tier; cheap to clone (background writes hold a clone).
#[derive(Debug, Clone)]
pub struct Disk {
    inner: Arc<Inner>,
}

impl Disk {
    /// Open (creating) `dir` and index what a previous run left there;
    /// unreadable or corrupt files and unfinished temporary ones are removed.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Disk, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cache dir {}: {e}", dir.display()))?;
        let mut index = HashMap::new();
        let mut bytes = 0u64;
        let rd = std::fs::read_dir(dir).map_err(|e| format!("cache dir {}: {e}", dir.display()))?;
        for ent in rd.flatten() {
            let path = ent.path();
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if name.len() != 32 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let parsed = std::fs::read(&path).ok().and_then(|d| decode(&d).map(|(m, _)| (m, d.len() as u64)));
            match parsed {
                Some((meta, size)) if file_name(&meta.key) == name => {
                    bytes += size;
                    index.insert(
                        meta.key,
                        Indexed { size, host: meta.host, path: meta.path, object: meta.status.is_some(), used: 0 },
                    );
                }
                _ => {
                    tracing::warn!(file = %path.display(), "corrupt cache file removed");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(Disk {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                max_bytes,
                index: Mutex::new(index),
                bytes: AtomicU64::new(bytes),
                clock: AtomicU64::new(1),
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    pub fn entries(&self) -> usize {
        self.inner.index.lock().map_or(0, |i| i.len())
    }

    fn known(&self, key: &str) -> bool {
        let tick = self.inner.clock.fetch_add(1, Ordering::Relaxed);
        self.inner.index.lock().ok().and_then(|mut i| i.get_mut(key).map(|e| e.used = tick)).is_some()
    }

    pub async fn read(&self, key: &str) -> Option<Slot> {
        if !self.known(key) {
            return None;
        }
        let me = self.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || me.read_blocking(&key)).await.ok().flatten()
    }

    fn read_blocking(&self, key: &str) -> Option<Slot> {
        let path = self.inner.dir.join(file_name(key));
        let data = std::fs::read(&path).ok();
        let slot = data.as_deref().and_then(decode).filter(|(m, _)| m.key == key).and_then(|(m, b)| to_slot(m, b));
        if slot.is_none() {
            tracing::warn!(file = %path.display(), "corrupt or missing cache file ignored and removed");
            self.forget(key);
            let _ = std::fs::remove_file(&path);
        }
        slot
    }

    fn forget(&self, key: &str) {
        if let Some(old) = self.inner.index.lock().ok().and_then(|mut i| i.remove(key)) {
            self.inner.bytes.fetch_sub(old.size.min(self.bytes()), Ordering::Relaxed);
        }
    }

    /// Write `slot` under `key` in the background.
    pub fn write(&self, key: &str, slot: &Slot) {
        let Some(data) = encode(key, slot) else { return };
        let (host, path, object) = match slot {
            Slot::Object(e) => (e.host.clone(), e.path.clone(), true),
            Slot::Variants(m) => (m.host.clone(), m.path.clone(), false),
        };
        let me = self.clone();
        let key = key.to_string();
        let job = move || {
            if let Err(e) = me.write_blocking(&key, &data) {
                tracing::warn!(dir = %me.inner.dir.display(), error = %e, "cache file not written");
                return;
            }
            me.forget(&key);
            let size = data.len() as u64;
            let used = me.inner.clock.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut i) = me.inner.index.lock() {
                i.insert(key, Indexed { size, host, path, object, used });
            }
            me.inner.bytes.fetch_add(size, Ordering::Relaxed);
            me.evict();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(job)),
            Err(_) => job(),
        }
    }

    fn write_blocking(&self, key: &str, data: &[u8]) -> std::io::Result<()> {
        let name = file_name(key);
        let tmp = self.inner.dir.join(format!(".tmp-{name}-{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&tmp, self.inner.dir.join(name)).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    /// Past `max_bytes`, remove the least recently used files down to 90%.
    fn evict(&self) {
        if self.bytes() <= self.inner.max_bytes {
            return;
        }
        let target = self.inner.max_bytes / 10 * 9;
        let mut victims: Vec<(u64, String)> = match self.inner.index.lock() {
            Ok(i) => i.iter().map(|(k, v)| (v.used, k.clone())).collect(),
            Err(_) => return,
        };
        victims.sort_unstable();
        for (_, key) in victims {
            if self.bytes() <= target {
                break;
            }
            self.remove_blocking(&key);
        }
    }

    fn remove_blocking(&self, key: &str) {
        self.forget(key);
        let _ = std::fs::remove_file(self.inner.dir.join(file_name(key)));
    }

    pub fn remove(&self, key: &str) {
        self.remove_blocking(key);
    }

    /// Remove every file for `host` (any when `None`) under `prefix`;
    /// returns how many responses went.
    pub fn purge(&self, host: Option<&str>, prefix: &str) -> usize {
        let keys: Vec<(String, bool)> = match self.inner.index.lock() {
            Ok(i) => i
                .iter()
                .filter(|(_, v)| host.is_none_or(|h| h.eq_ignore_ascii_case(&v.host)) && v.path.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.object))
                .collect(),
            Err(_) => return 0,
        };
        for (k, _) in &keys {
            self.remove_blocking(k);
        }
        keys.iter().filter(|(_, o)| *o).count()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::header::{HeaderMap, HeaderValue};
    use http::StatusCode;
    use std::sync::OnceLock;

    use super::*;
    use crate::cache::policy::CacheControl;
    use crate::cache::store::Entry;

    fn entry() -> Slot {
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        Slot::Object(Arc::new(Entry {
            host: "a.test".into(),
            path: "/x".into(),
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"hello"),
            response_time: 5,
            initial_age: 1,
            lifetime: 60,
            stored: 7,
            cc: CacheControl::default(),
            answer: OnceLock::new(),
        }))
    }

    #[test]
    fn round_trips_and_drops_corrupt_files_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path(), 1 << 20).unwrap();
        disk.write("http://a.test/x", &entry());
        let Some(Slot::Object(e)) = disk.read_blocking("http://a.test/x") else { panic!("stored") };
        assert_eq!(&e.body[..], b"hello");
        assert_eq!(e.headers["cache-control"], "max-age=60");
        // Flip a body byte: the checksum catches it, and the file goes.
        let path = dir.path().join(file_name("http://a.test/x"));
        let mut data = std::fs::read(&path).unwrap();
        let n = data.len();
        data[n - 10] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        std::fs::write(dir.path().join(".tmp-left-over"), b"x").unwrap();
        let again = Disk::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(again.entries(), 0);
        assert!(!path.exists());
        assert!(!dir.path().join(".tmp-left-over").exists());
    }

    #[test]
    fn evicts_least_recently_used_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path(), 600).unwrap();
        for i in 0..5 {
            disk.write(&format!("k{i}"), &entry());
        }
        assert!(disk.bytes() <= 600, "{} bytes", disk.bytes());
        assert!(disk.entries() < 5);
        assert_eq!(disk.purge(None, "/nothing"), 0);
        let n = disk.entries();
        assert_eq!(disk.purge(Some("A.TEST"), "/"), n);
        assert_eq!(disk.entries(), 0);
    }
}
