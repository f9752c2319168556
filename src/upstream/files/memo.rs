//! The open-file cache of a static site: for a request path (and the
//! precompressed codings its client accepts), which file answered, its
//! response headers made once, and, for files up to [`MAX_FILE`], its
//! bytes. nginx keeps descriptors and metadata with `open_file_cache` and
//! lets the kernel's page cache hold the bytes; Rampart keeps the bytes
//! itself, so a repeated asset costs one `statx` instead of opening the
//! directory and the file, `statx`, reading and two `close`s, three
//! quarters of a small file's cost (benches/README.md, `static-1k`).
//!
//! Each use checks the file by its path through the site's directory as
//! configured (so a `current -> releases/N` switch is seen at once): the
//! bytes are served only if it is still the file they were read from
//! (device, inode, size, modification and change times), so an edited, replaced or
//! removed file is never answered from memory. A site with
//! `recheck_after` trusts an entry that long after its last check instead,
//! as nginx's `open_file_cache_valid` does: the check, one `statx`, was
//! the largest cost a large file's answer had over nginx's
//! (benches/README.md, `static-100k`). The check follows symlinks without
//! `openat2`'s walls, which is safe because a match means the very file
//! that passed them. What it cannot see, a file newly shadowing the
//! answer (a precompressed sibling or an earlier `index` name created, a
//! file appearing where the `fallback` answered), is seen when the entry
//! is resolved again through every check, at most [`VALID_FOR`] (or
//! `recheck_after`, if longer) after the last time. Memory is bounded by
//! [`MAX_BYTES`] per site, weighed by bytes with `quick_cache` (as the
//! response cache), and the whole cache goes with a reload.
//!
//! A file of at least [`KEEP_OPEN_FROM`] bytes also keeps its descriptor
//! open, as nginx's `open_file_cache` does, so that a plain HTTP/1.1
//! answer can send it with `sendfile(2)` without opening it again
//! (`sendfile.rs`); the bytes stay for the answers that need them (TLS,
//! HTTP/2, compression). At most `MAX_BYTES / KEEP_OPEN_FROM` (512)
//! descriptors per site, and a replaced file's goes with its entry.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Representation;

/// Files up to this size are kept in memory; larger ones stream from disk.
pub const MAX_FILE: u64 = 256 * 1024;
/// Files from this size up keep their descriptor open too.
pub const KEEP_OPEN_FROM: u64 = 64 * 1024;
/// The most bytes one site's cache holds (bodies, headers and keys).
pub const MAX_BYTES: u64 = 32 * 1024 * 1024;
/// How long an entry is used before its path is resolved again.
pub const VALID_FOR: Duration = Duration::from_secs(1);

/// Which file a lookup found: it is the same file as long as these are.
/// The change time too: a rewrite in place that keeps size and
/// modification time (`cp -p`, `rsync --inplace -t`, builds with fixed
/// times) still changes it, and nobody can set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// One request path's answer, as of its last check.
pub struct Entry {
    pub rep: Representation,
    pub identity: Identity,
    pub body: Bytes,
    /// The open file, from [`KEEP_OPEN_FROM`] bytes up.
    pub file: Option<Arc<std::fs::File>>,
    /// The file's path through the site's directory as configured.
    path: PathBuf,
    /// When the path was last resolved through every check, in [`ticks`].
    checked: AtomicU64,
    /// When the path was last found naming this file, in [`ticks`].
    verified: AtomicU64,
}

impl Entry {
    pub fn new(
        rep: Representation,
        identity: Identity,
        body: Bytes,
        file: Option<Arc<std::fs::File>>,
        path: PathBuf,
    ) -> Self {
        let now = ticks();
        Entry { rep, identity, body, file, path, checked: AtomicU64::new(now), verified: AtomicU64::new(now) }
    }

    /// Resolved through every check within `valid_for`.
    fn fresh(&self, now: u64, valid_for: u64) -> bool {
        now.saturating_sub(self.checked.load(Ordering::Relaxed)) < valid_for
    }

    /// Whether the bytes may answer now: resolved recently, and the path
    /// still names the file they were read from, or did less than
    /// `recheck_after` (milliseconds) ago.
    fn usable(&self, recheck_after: u64) -> bool {
        self.usable_at(ticks(), recheck_after)
    }

    fn usable_at(&self, now: u64, recheck_after: u64) -> bool {
        if !self.fresh(now, recheck_after.max(VALID_FOR.as_millis() as u64)) {
            return false;
        }
        if now.saturating_sub(self.verified.load(Ordering::Relaxed)) < recheck_after {
            return true;
        }
        let same = std::fs::metadata(&self.path).is_ok_and(|m| Identity::of(&m) == self.identity);
        if same {
            self.verified.store(now, Ordering::Relaxed);
        }
        same
    }

    /// The file system was looked at again and found the same file.
    pub fn confirmed(&self) {
        self.confirmed_at(ticks());
    }

    fn confirmed_at(&self, now: u64) {
        self.checked.store(now, Ordering::Relaxed);
        self.verified.store(now, Ordering::Relaxed);
    }
}

/// Milliseconds since the first call: a clock for freshness only.
fn ticks() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    path: Box<str>,
    codings: u8,
}

/// A lookup's key, borrowed from the request: hashes as [`Key`] does.
struct KeyRef<'a> {
    path: &'a str,
    codings: u8,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.path.hash(state);
        self.codings.hash(state);
    }
}

impl quick_cache::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *key.path == *self.path && key.codings == self.codings
    }
}

#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<Key, Arc<Entry>> for Weight {
    fn weight(&self, key: &Key, entry: &Arc<Entry>) -> u64 {
        // Headers and bookkeeping: a few hundred bytes whatever the file.
        key.path.len() as u64 + entry.body.len() as u64 + 512
    }
}

/// One site's open-file cache.
pub struct Memo {
    entries: quick_cache::sync::Cache<Key, Arc<Entry>, Weight>,
    /// How long an entry is trusted after its path was checked, in
    /// milliseconds: 0 checks on every use.
    recheck_after: u64,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo").field("entries", &self.entries.len()).finish()
    }
}

impl Memo {
    pub fn new(recheck_after: Duration) -> Self {
        // Room for about one entry per 4 KiB: the item estimate only sizes
        // the table; the weight is what bounds it.
        let estimated = (MAX_BYTES / 4096) as usize;
        let entries = match quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(estimated)
            .weight_capacity(MAX_BYTES)
            .build()
        {
            Ok(o) => quick_cache::sync::Cache::with_options(o, Weight, Default::default(), Default::default()),
            Err(_) => quick_cache::sync::Cache::with_weighter(estimated, MAX_BYTES, Weight),
        };
        Memo { entries, recheck_after: u64::try_from(recheck_after.as_millis()).unwrap_or(u64::MAX) }
    }

    /// The entry for `path` and `codings`, fresh or not.
    pub fn get(&self, path: &str, codings: u8) -> Option<Arc<Entry>> {
        self.entries.get(&KeyRef { path, codings })
    }

    /// The entry for `path` and `codings` if it may answer as it is.
    pub fn usable(&self, path: &str, codings: u8) -> Option<Arc<Entry>> {
        self.get(path, codings).filter(|e| e.usable(self.recheck_after))
    }

    pub fn insert(&self, path: &str, codings: u8, entry: Entry) {
        self.entries.insert(Key { path: path.into(), codings }, Arc::new(entry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A file `name` holding `body` in a new temporary directory.
    fn written(name: &str, body: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        (dir, path)
    }

    fn entry(path: &Path) -> Entry {
        let meta = std::fs::metadata(path).unwrap();
        let body = Bytes::from(std::fs::read(path).unwrap());
        let rep = Representation {
            validators: super::super::conditional::Validators::new(meta.modified().unwrap(), meta.len(), None),
            whole: http::HeaderMap::new(),
            len: meta.len(),
        };
        Entry::new(rep, Identity::of(&meta), body, None, path.to_path_buf())
    }

    #[test]
    fn entries_are_kept_per_path_and_codings() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, br) = (dir.path().join("a.js"), dir.path().join("a.js.br"));
        std::fs::write(&plain, b"plain").unwrap();
        std::fs::write(&br, b"br").unwrap();
        let memo = Memo::new(Duration::ZERO);
        memo.insert("/a.js", 0, entry(&plain));
        memo.insert("/a.js", 1, entry(&br));
        assert_eq!(&memo.usable("/a.js", 0).map(|e| e.body.clone()).unwrap()[..], b"plain");
        assert_eq!(&memo.usable("/a.js", 1).map(|e| e.body.clone()).unwrap()[..], b"br");
        assert!(memo.get("/a.js", 2).is_none());
        assert!(memo.get("/b.js", 0).is_none());
    }

    #[test]
    fn an_entry_answers_only_for_the_file_it_was_read_from() {
        let (dir, path) = written("a.txt", b"one");
        let e = entry(&path);
        assert!(e.usable(0));
        std::fs::write(&path, b"three").unwrap();
        assert!(!e.usable(0), "edited in place");
        // Same size, modification time set back: the change time tells.
        let e = entry(&path);
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, b"THREE").unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
        assert!(!e.usable(0), "rewritten in place with its old size and time");
        let e = entry(&path);
        let next = dir.path().join("next.txt");
        std::fs::write(&next, b"three").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(!e.usable(0), "replaced by a rename, same size");
        let e = entry(&path);
        std::fs::remove_file(&path).unwrap();
        assert!(!e.usable(0), "removed");
    }

    #[test]
    fn an_entry_is_resolved_again_after_its_validity() {
        let (_dir, path) = written("a.txt", b"one");
        let e = entry(&path);
        let now = ticks();
        let valid = VALID_FOR.as_millis() as u64;
        assert!(e.fresh(now, valid));
        assert!(!e.fresh(now + valid, valid));
        e.checked.store(0, Ordering::Relaxed);
        assert!(!e.fresh(valid + 1, valid));
        e.confirmed();
        assert!(e.fresh(ticks(), valid));
    }

    #[test]
    fn with_recheck_after_an_entry_is_trusted_that_long_after_its_check_and_checked_again_then() {
        let (_dir, path) = written("a.txt", b"one");
        let an_hour = 3_600_000;
        let now = 10 * an_hour;
        let e = entry(&path);
        e.confirmed_at(now);
        std::fs::write(&path, b"three").unwrap();
        assert!(e.usable_at(now + an_hour - 1, an_hour), "trusted for recheck_after after its check");
        assert!(!e.usable_at(now, 0), "without recheck_after every use checks");
        assert!(!e.usable_at(now + an_hour, an_hour), "resolved again after recheck_after");
        // Resolved lately but checked long ago: the next use looks.
        e.confirmed_at(now);
        e.verified.store(now - an_hour, Ordering::Relaxed);
        assert!(!e.usable_at(now, an_hour), "the edit is seen once recheck_after has passed");
    }
}
