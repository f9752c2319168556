//! Opening a path inside the site's directory so that it cannot resolve to
//! anything outside it. On Linux 5.6+ this is `openat2(RESOLVE_BENEATH)`
//! relative to a descriptor of the directory: one syscall, and no window
//! between a check and the open for a swapped symlink to slip through.
//! `openat2` also refuses an absolute symlink even when it points back
//! inside, and older kernels (or a seccomp filter) lack it; those cases take
//! the portable way: the candidate's real path, checked against the
//! directory's real path, then opened. With `follow_symlinks`, a plain
//! `openat` follows links wherever they lead (the request path itself still
//! has no `..`: see `lookup::segments`).
//!
//! Everything is opened non-blocking, so a FIFO in the directory answers at
//! once (and is then refused as not a file) instead of waiting for a writer.

use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once `openat2` turned out to be missing or forbidden.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

const FLAGS: libc::c_int = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;

/// The kernel's `struct open_how` (its first version, 24 bytes; libc's
/// is `non_exhaustive`).
#[cfg(target_os = "linux")]
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// The site's directory, opened for one request.
pub struct Root<'a> {
    dir: &'a Path,
    fd: OwnedFd,
    follow_symlinks: bool,
}

/// A regular file or a directory, open, with its metadata.
pub struct Entry {
    pub file: File,
    pub meta: Metadata,
}

impl<'a> Root<'a> {
    /// Open `dir` (following a symlink to it: a `current -> releases/N`
    /// switch takes effect with the next request). `O_PATH`: a handle to
    /// resolve from, not an open that a watcher on the directory's parent
    /// (the config file's, often) would be woken by.
    pub fn open(dir: &'a Path, follow_symlinks: bool) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)?;
        Ok(Root { dir, fd: OwnedFd::from(file), follow_symlinks })
    }

    /// What `rel` (a relative path without `.`/`..`; empty for the
    /// directory itself) names inside the directory: `None` if nothing,
    /// something outside, or neither a regular file nor a directory.
    pub fn open_in(&self, rel: &Path) -> io::Result<Option<Entry>> {
        let opened = if self.follow_symlinks {
            self.openat(rel)
        } else {
            match self.openat2(rel) {
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) || unsupported(&e) => self.open_checked(rel),
                other => other,
            }
        };
        let file = match opened {
            Ok(f) => f,
            Err(e) if missing(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        Ok((meta.is_file() || meta.is_dir()).then_some(Entry { file, meta }))
    }

    #[cfg(target_os = "linux")]
    fn openat2(&self, rel: &Path) -> io::Result<File> {
        if NO_OPENAT2.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        let path = c_path(rel)?;
        let how =
            OpenHow { flags: FLAGS as u64, mode: 0, resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS };
        // SAFETY: a valid directory descriptor, a NUL-terminated path and an
        // `open_how` of the size passed, all alive for the call; the result
        // is a new descriptor that only this `File` owns.
        #[allow(unsafe_code)]
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if unsupported(&e) && !NO_OPENAT2.swap(true, Ordering::Relaxed) {
                tracing::info!(error = %e, "openat2 is not available; static files are checked by their real path");
            }
            return Err(e);
        }
        // SAFETY: `fd` is a descriptor the kernel just returned to us.
        #[allow(unsafe_code)]
        Ok(unsafe { File::from_raw_fd(fd as libc::c_int) })
    }

    #[cfg(not(target_os = "linux"))]
    fn openat2(&self, _rel: &Path) -> io::Result<File> {
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }

    fn openat(&self, rel: &Path) -> io::Result<File> {
        let path = c_path(rel)?;
        // SAFETY: a valid directory descriptor and a NUL-terminated path;
        // the result is a new descriptor that only this `File` owns.
        #[allow(unsafe_code)]
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), path.as_ptr(), FLAGS) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor the kernel just returned to us.
        #[allow(unsafe_code)]
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// The portable check: the real path must lie inside the directory's.
    fn open_checked(&self, rel: &Path) -> io::Result<File> {
        let root = std::fs::canonicalize(self.dir)?;
        let real = std::fs::canonicalize(root.join(rel))?;
        if !real.starts_with(&root) {
            tracing::debug!(path = %rel.display(), target = %real.display(), "static: a symlink leads outside the directory");
            return Err(io::ErrorKind::NotFound.into());
        }
        std::fs::OpenOptions::new().read(true).custom_flags(FLAGS).open(real)
    }
}

/// `rel` as a C string; `.` for the directory itself.
fn c_path(rel: &Path) -> io::Result<CString> {
    let bytes = rel.as_os_str().as_bytes();
    CString::new(if bytes.is_empty() { b"." as &[u8] } else { bytes }).map_err(|_| io::ErrorKind::NotFound.into())
}

/// Errors that mean "no such file here" rather than a failure.
fn missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || matches!(
            e.raw_os_error(),
            Some(libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG | libc::ENXIO | libc::EXDEV)
        )
}

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// openat2 and the portable check agree on every kind of link.
    #[test]
    fn both_ways_keep_to_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site");
        std::fs::create_dir_all(site.join("sub")).unwrap();
        std::fs::write(site.join("sub/a.txt"), "a").unwrap();
        std::fs::write(dir.path().join("outside.txt"), "x").unwrap();
        symlink(site.join("sub/a.txt"), site.join("abs-in")).unwrap();
        symlink("sub/a.txt", site.join("rel-in")).unwrap();
        symlink(dir.path().join("outside.txt"), site.join("abs-out")).unwrap();
        symlink("../outside.txt", site.join("rel-out")).unwrap();
        symlink("..", site.join("up")).unwrap();
        let root = Root::open(&site, false).unwrap();
        let cases = [
            ("sub/a.txt", true),
            ("sub", true),
            ("", true),
            ("abs-in", true),
            ("rel-in", true),
            ("abs-out", false),
            ("rel-out", false),
            ("up/outside.txt", false),
            // Out and back in: the file itself is inside.
            ("up/site/sub/a.txt", true),
            ("missing", false),
            ("sub/a.txt/x", false),
        ];
        for (rel, inside) in cases {
            let rel = Path::new(rel);
            assert_eq!(root.open_in(rel).unwrap().is_some(), inside, "open_in {rel:?}");
            assert_eq!(root.open_checked(rel).is_ok(), inside, "open_checked {rel:?}");
        }
        let follow = Root::open(&site, true).unwrap();
        assert!(follow.open_in(Path::new("rel-out")).unwrap().is_some());
        assert!(follow.open_in(Path::new("up/outside.txt")).unwrap().is_some());
    }
}
