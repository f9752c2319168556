//! Which file answers a request path, and the rules that keep every answer
//! inside the site's directory. [`segments`] checks the path's text
//! (percent-decoded: no `/`, `\` or NUL inside a segment, no `.`/`..`, no
//! dotfiles unless allowed); [`find`] (blocking file-system calls, run off
//! the runtime) resolves each candidate to its real path and, unless
//! `follow_symlinks`, refuses one outside the directory's real path, so a
//! symlink cannot lead out. Only regular files are served: a directory
//! gets its index file, or nothing (no listings); FIFOs, sockets and
//! devices are never opened.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

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

    fn suffix(self) -> &'static str {
        match self {
            Coding::Br => ".br",
            Coding::Zstd => ".zst",
            Coding::Gzip => ".gz",
        }
    }
}

/// The file chosen for a request.
#[derive(Debug)]
pub struct Found {
    /// The real path of what is opened (the sibling, when one is).
    pub real: PathBuf,
    /// The site path of the file asked for (the index or the fallback
    /// when those answered): what `Content-Type` and `cache_control`
    /// rules look at.
    pub site_path: String,
    pub coding: Option<Coding>,
}

#[derive(Debug)]
pub enum Lookup {
    Found(Found),
    /// A directory asked for without its trailing slash.
    AddSlash,
    NotFound,
}

/// Find the file for `segs` (see [`segments`]); `site_path` is the
/// request's path inside the site, `codings` what the client accepts, best
/// first. Blocking.
pub fn find(spec: &StaticSpec, segs: &[OsString], site_path: &str, codings: &[Coding]) -> io::Result<Lookup> {
    let root = std::fs::canonicalize(&spec.root)?;
    let mut candidate = root.clone();
    candidate.extend(segs);
    let mut found = match real(spec, &root, &candidate) {
        Some((path, Kind::File)) => Some(Found { real: path, site_path: site_path.to_string(), coding: None }),
        Some((_, Kind::Dir)) if !site_path.ends_with('/') => return Ok(Lookup::AddSlash),
        Some((dir, Kind::Dir)) => spec.index.iter().find_map(|name| match real(spec, &root, &dir.join(name)) {
            Some((path, Kind::File)) => {
                Some(Found { real: path, site_path: format!("{site_path}{name}"), coding: None })
            }
            _ => None,
        }),
        None => None,
    };
    if found.is_none() {
        if let Some(fallback) = &spec.fallback {
            let segs = segments(fallback, true).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let mut path = root.clone();
            path.extend(&segs);
            if let Some((path, Kind::File)) = real(spec, &root, &path) {
                found = Some(Found { real: path, site_path: fallback.clone(), coding: None });
            }
        }
    }
    let Some(mut found) = found else { return Ok(Lookup::NotFound) };
    for &coding in codings {
        let mut name = found.real.clone().into_os_string();
        name.push(coding.suffix());
        if let Some((path, Kind::File)) = real(spec, &root, Path::new(&name)) {
            found.real = path;
            found.coding = Some(coding);
            break;
        }
    }
    Ok(Lookup::Found(found))
}

enum Kind {
    File,
    Dir,
}

/// The real path of `path` and what it is, if it exists, is a file or a
/// directory, and (unless `follow_symlinks`) lies inside `root`.
fn real(spec: &StaticSpec, root: &Path, path: &Path) -> Option<(PathBuf, Kind)> {
    let real = std::fs::canonicalize(path).ok()?;
    if !spec.follow_symlinks && !real.starts_with(root) {
        tracing::debug!(path = %path.display(), target = %real.display(), "static: symlink leads outside the directory");
        return None;
    }
    let meta = std::fs::metadata(&real).ok()?;
    if meta.is_file() {
        Some((real, Kind::File))
    } else if meta.is_dir() {
        Some((real, Kind::Dir))
    } else {
        None
    }
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
