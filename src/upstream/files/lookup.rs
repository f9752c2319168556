//! Which file answers a request path, and the rules that keep every answer
//! inside the site's directory. [`segments`] checks the path's text
//! (percent-decoded: no `/`, `\` or NUL inside a segment, no `.`/`..`, no
//! dotfiles unless allowed); [`find`] (blocking file-system calls, run off
//! the runtime) opens each candidate through [`Root`], which never resolves
//! outside the directory unless `follow_symlinks`. Only regular files are
//! served: a directory gets its index file, or nothing (no listings);
//! FIFOs, sockets and devices are refused.

use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::beneath::{Entry, Root};
use crate::config::StaticSpec;

/// A request path that cannot name a file of the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

/// The path's segments, decoded, for joining onto the directory.
pub fn segments(path: &str, allow_dotfiles: bool) -> Result<Vec<OsString>, Refused> {
    let mut out = Vec::new();
    for (i, seg) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(seg).collect();
        if bytes.iter().any(|&b| b == b'/' || b == b'\\' || b == 0) || bytes == b"." || bytes == b".." {
            return Err(Refused);
        }
        // RFC 8615's `/.well-known/` is meant to be served.
        let well_known = i == 0 && bytes == b".well-known";
        if bytes.first() == Some(&b'.') && !allow_dotfiles && !well_known {
            return Err(Refused);
        }
        out.push(OsString::from_vec(bytes));
    }
    Ok(out)
}

/// A precompressed sibling's coding, in the server's preference order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Br,
    Zstd,
    Gzip,
}

impl Coding {
    pub const ALL: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    /// An ordered list of codings as one byte (two bits each, 0 ends
    /// it): the open-file cache's key part for what a client accepts.
    pub fn key(codings: &[Coding]) -> u8 {
        codings.iter().take(4).fold(0, |k, &c| (k << 2) | (c as u8 + 1))
    }

    fn suffix(self) -> &'static str {
        match self {
            Coding::Br => ".br",
            Coding::Zstd => ".zst",
            Coding::Gzip => ".gz",
        }
    }
}

/// The file chosen for a request, open.
pub struct Found {
    pub file: File,
    pub meta: Metadata,
    /// The site path of the file asked for (the index or the fallback
    /// when those answered): what `Content-Type` and `cache_control`
    /// rules look at.
    pub site_path: String,
    pub coding: Option<Coding>,
    /// The file's path through the site's directory as configured (its
    /// symlinks unresolved): what the open-file cache checks again.
    pub path: PathBuf,
}

pub enum Lookup {
    Found(Box<Found>),
    /// A directory asked for without its trailing slash.
    AddSlash,
    NotFound,
}

/// Find and open the file for `segs` (see [`segments`]); `site_path` is
/// the request's path inside the site, `codings` what the client accepts,
/// best first. Blocking.
pub fn find(spec: &StaticSpec, segs: &[OsString], site_path: &str, codings: &[Coding]) -> io::Result<Lookup> {
    let root = Root::open(&spec.root, spec.follow_symlinks)?;
    let rel: PathBuf = segs.iter().collect();
    let file = |rel: &Path| -> io::Result<Option<Entry>> { Ok(root.open_in(rel)?.filter(|e| e.meta.is_file())) };
    let mut found = match root.open_in(&rel)? {
        // `a.txt/` names no file (the kernel's ENOTDIR; nginx answers 404),
        // and served it would take the type and `cache_control` rules of
        // a name the file does not have.
        Some(e) if e.meta.is_file() && site_path.ends_with('/') => None,
        Some(e) if e.meta.is_file() => Some((e, rel, site_path.to_string())),
        Some(_) if !site_path.ends_with('/') => return Ok(Lookup::AddSlash),
        Some(_) => {
            let mut index = None;
            for name in &spec.index {
                let candidate = rel.join(name);
                if let Some(e) = file(&candidate)? {
                    index = Some((e, candidate, format!("{site_path}{name}")));
                    break;
                }
            }
            index
        }
        None => None,
    };
    if found.is_none() {
        if let Some(fallback) = &spec.fallback {
            let segs = segments(fallback, true).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let candidate: PathBuf = segs.iter().collect();
            found = file(&candidate)?.map(|e| (e, candidate, fallback.clone()));
        }
    }
    let Some((mut entry, rel, site_path)) = found else { return Ok(Lookup::NotFound) };
    // Siblings of the name asked for, as nginx's gzip_static looks them up.
    let mut coding = None;
    let mut served = rel;
    for &c in codings {
        let mut name = served.clone().into_os_string();
        name.push(c.suffix());
        let name = PathBuf::from(name);
        if let Some(e) = file(&name)? {
            entry = e;
            coding = Some(c);
            served = name;
            break;
        }
    }
    let path = spec.root.join(served);
    Ok(Lookup::Found(Box::new(Found { file: entry.file, meta: entry.meta, site_path, coding, path })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_refuse_what_could_leave_or_hide() {
        let ok = |p: &str| segments(p, false).map(|v| v.len());
        assert_eq!(ok("/"), Ok(0));
        assert_eq!(ok("/a/b%20c/d.txt"), Ok(3));
        assert_eq!(segments("/b%20c", false).unwrap()[0], OsString::from("b c"));
        assert_eq!(ok("/a%2Fb"), Err(Refused));
        assert_eq!(ok("/a%5cb"), Err(Refused));
        assert_eq!(ok("/a%00b"), Err(Refused));
        assert_eq!(ok("/%2e%2e/etc/passwd"), Err(Refused));
        assert_eq!(ok("/.env"), Err(Refused));
        assert_eq!(ok("/a/.git/config"), Err(Refused));
        assert_eq!(ok("/%2egit/config"), Err(Refused));
        assert_eq!(ok("/.well-known/security.txt"), Ok(2));
        assert_eq!(ok("/a/.well-known/x"), Err(Refused));
        assert_eq!(segments("/.env", true).map(|v| v.len()), Ok(1));
        assert_eq!(segments("/..", true).map(|v| v.len()), Err(Refused));
    }
}
