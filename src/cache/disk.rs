//! The optional disk tier under `dir`: one file per stored key, named by a
//! 128-bit hash of the key, so the cache survives a restart. A file is
//! written to a temporary name and renamed into place (readers never see
//! half a file); it carries its full key (checked on read, so a hash
//! collision is a miss) and a checksum. A file that does not parse, or
//! whose checksum is wrong, is ignored and removed. The tier is bounded by
//! `max_disk_size`: past it, the least recently used files go.
//!
//! Layout: `RMPC1\0\0\0`, u32 meta length, u64 body length, the meta as
//! JSON, the body, u64 FNV-1a of meta and body (little-endian numbers).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::policy::CacheControl;
use super::store::{Entry, Marker, Slot};

const MAGIC: &[u8; 8] = b"RMPC1\0\0\0";
const HEAD: usize = 8 + 4 + 8;

#[derive(Serialize, Deserialize)]
struct Meta {
    key: String,
    host: String,
    path: String,
    /// Present for a response, absent for a Vary marker.
    status: Option<u16>,
    headers: Vec<(String, String)>,
    vary: Vec<String>,
    response_time: u64,
    initial_age: u64,
    lifetime: u64,
    stored: u64,
}

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

fn fnv(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = seed;
    for p in parts {
        for b in p.iter() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

fn file_name(key: &str) -> String {
    let a = fnv(0xcbf2_9ce4_8422_2325, &[key.as_bytes()]);
    let b = fnv(0x8422_2325_cbf2_9ce4, &[key.as_bytes(), b"rampart"]);
    format!("{a:016x}{b:016x}")
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn encode(key: &str, slot: &Slot) -> Option<Vec<u8>> {
    let (meta, body) = match slot {
        Slot::Object(e) => (
            Meta {
                key: key.to_string(),
                host: e.host.clone(),
                path: e.path.clone(),
                status: Some(e.status.as_u16()),
                headers: e.headers.iter().map(|(k, v)| (k.as_str().to_string(), b64().encode(v.as_bytes()))).collect(),
                vary: vec![],
                response_time: e.response_time,
                initial_age: e.initial_age,
                lifetime: e.lifetime,
                stored: e.stored,
            },
            e.body.clone(),
        ),
        Slot::Variants(m) => (
            Meta {
                key: key.to_string(),
                host: m.host.clone(),
                path: m.path.clone(),
                status: None,
                headers: vec![],
                vary: m.names.iter().map(|n| n.as_str().to_string()).collect(),
                response_time: 0,
                initial_age: 0,
                lifetime: 0,
                stored: m.created,
            },
            Bytes::new(),
        ),
    };
    let meta = serde_json::to_vec(&meta).ok()?;
    let mut out = Vec::with_capacity(HEAD + meta.len() + body.len() + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&u32::try_from(meta.len()).ok()?.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&body);
    out.extend_from_slice(&fnv(0xcbf2_9ce4_8422_2325, &[&meta, &body]).to_le_bytes());
    Some(out)
}

/// Parse a whole file; `None` if it is not one of ours, intact.
fn decode(data: &[u8]) -> Option<(Meta, Bytes)> {
    if data.len() < HEAD + 8 || &data[..8] != MAGIC {
        return None;
    }
    let meta_len = u32::from_le_bytes(data[8..12].try_into().ok()?) as usize;
    let body_len = usize::try_from(u64::from_le_bytes(data[12..20].try_into().ok()?)).ok()?;
    let end = HEAD.checked_add(meta_len)?.checked_add(body_len)?;
    if data.len() != end.checked_add(8)? {
        return None;
    }
    let meta = &data[HEAD..HEAD + meta_len];
    let body = &data[HEAD + meta_len..end];
    let sum = u64::from_le_bytes(data[end..end + 8].try_into().ok()?);
    if sum != fnv(0xcbf2_9ce4_8422_2325, &[meta, body]) {
        return None;
    }
    Some((serde_json::from_slice(meta).ok()?, Bytes::copy_from_slice(body)))
}

fn to_slot(meta: Meta, body: Bytes) -> Option<Slot> {
    let Some(status) = meta.status else {
        let names = meta.vary.iter().map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect::<Option<Vec<_>>>()?;
        return Some(Slot::Variants(Arc::new(Marker {
            host: meta.host,
            path: meta.path,
            names,
            created: meta.stored,
        })));
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &meta.headers {
        let v = b64().decode(v).ok()?;
        headers.append(HeaderName::from_bytes(k.as_bytes()).ok()?, HeaderValue::from_bytes(&v).ok()?);
    }
    let cc = CacheControl::parse(&headers);
    Some(Slot::Object(Arc::new(Entry {
        host: meta.host,
        path: meta.path,
        status: StatusCode::from_u16(status).ok()?,
        headers,
        body,
        response_time: meta.response_time,
        initial_age: meta.initial_age,
        lifetime: meta.lifetime,
        stored: meta.stored,
        cc,
    })))
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
    use super::*;

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
