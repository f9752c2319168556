//! The one canonical form of a request path, made before routing: the
//! router, every middleware and the upstream see this path and no other,
//! so a guard on `/admin/` cannot be passed by spelling `/admin/` in a way
//! the proxy reads differently from the backend.
//!
//! Per RFC 3986 6.2.2: percent-encoded unreserved characters are decoded
//! (`/%61dmin` is `/admin`), the remaining escapes upper-cased (`%c3` is
//! `%C3`), dot-segments resolved, plain or encoded (`/a/%2e%2E/b` is `/b`),
//! and repeated slashes merged. What stays encoded is what a backend must
//! not read as structure: an encoded slash or backslash (`%2F`, `%5C`) and
//! a literal `\` are refused by default, since Express, Spring, Go and
//! Starlette variously decode or split on them after the proxy has routed
//! (Envoy's `path_with_escaped_slashes_action`); `EncodedSlashes::Keep`
//! forwards them untouched. `%00` and malformed escapes are refused.
//!
//! Case and `;` parameters are not changed here: the router compares path
//! prefixes case-insensitively and judges `;` parameters separately (see
//! `Router::lookup_canonical`).

use std::borrow::Cow;

use crate::config::EncodedSlashes;

/// Why a path cannot be made canonical; each is a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path escapes the root")]
    EscapesRoot,
    #[error("encoded slash or backslash in path")]
    EncodedSlash,
    #[error("malformed percent-escape in path")]
    BadEscape,
    #[error("NUL in path")]
    Nul,
}

/// The canonical form of `path` (which starts with `/`). Borrows when the
/// path is already canonical, which is nearly always.
pub fn canonical_path(path: &str, slashes: EncodedSlashes) -> Result<Cow<'_, str>, PathError> {
    let b = path.as_bytes();
    let mut needs_work = false;
    let mut prev = 0u8;
    for &c in b {
        match c {
            b'%' => needs_work = true,
            b'\\' if slashes == EncodedSlashes::Reject => return Err(PathError::EncodedSlash),
            b'/' | b'.' if prev == b'/' => needs_work = true,
            _ => {}
        }
        prev = c;
    }
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path, slashes)?;
    let resolved = resolve_dots(&decoded)?;
    if resolved == path {
        return Ok(Cow::Borrowed(path));
    }
    Ok(Cow::Owned(resolved))
}

/// Decode escapes of unreserved characters, upper-case the others.
fn decode_unreserved(path: &str, slashes: EncodedSlashes) -> Result<String, PathError> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c != b'%' {
            // ASCII: `http` keeps request targets to visible ASCII; a
            // non-ASCII character passes as it came.
            let len = utf8_len(c);
            out.push_str(path.get(i..i + len).ok_or(PathError::BadEscape)?);
            i += len;
            continue;
        }
        let (Some(hi), Some(lo)) = (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex)) else {
            return Err(PathError::BadEscape);
        };
        let v = hi << 4 | lo;
        match v {
            0 => return Err(PathError::Nul),
            b'/' | b'\\' if slashes == EncodedSlashes::Reject => return Err(PathError::EncodedSlash),
            // Kept exactly as sent: the app that asked for them reads them.
            b'/' | b'\\' => out.push_str(&path[i..i + 3]),
            _ if is_unreserved(v) => out.push(char::from(v)),
            _ => {
                out.push('%');
                out.push(char::from(HEX_UPPER[usize::from(hi)]));
                out.push(char::from(HEX_UPPER[usize::from(lo)]));
            }
        }
        i += 3;
    }
    Ok(out)
}

/// Merge repeated slashes and resolve `.` and `..` segments.
fn resolve_dots(path: &str) -> Result<String, PathError> {
    let mut out: Vec<&str> = Vec::new();
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
            }
            _ => out.push(seg),
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() || trailing {
        s.push('/');
    }
    Ok(s)
}

/// The path with each segment's `;` parameters removed (`/a;x=1/b;y` is
/// `/a/b`), then made canonical again: the path Spring and Tomcat route
/// by. `None` when the path has no `;`.
pub fn without_parameters(canonical: &str) -> Option<Result<String, PathError>> {
    if !canonical.contains(';') {
        return None;
    }
    let mut s = String::with_capacity(canonical.len());
    for (i, seg) in canonical.split('/').enumerate() {
        if i > 0 {
            s.push('/');
        }
        s.push_str(seg.split_once(';').map_or(seg, |(name, _)| name));
    }
    Some(resolve_dots(&s))
}

/// Under `encoded_slashes = "keep"`: the path as a backend that decodes
/// `%2F` and `%5C` and splits on `\` would route it, made canonical
/// again (`/x%2F..%2Fadmin` is `/admin`). `None` when the path has none.
pub fn with_slashes_decoded(canonical: &str) -> Option<Result<String, PathError>> {
    let b = canonical.as_bytes();
    let escaped_slash =
        |i: usize| b[i] == b'%' && matches!(b.get(i + 1..i + 3), Some([b'2', b'f' | b'F']) | Some([b'5', b'c' | b'C']));
    if !(0..b.len()).any(|i| b[i] == b'\\' || escaped_slash(i)) {
        return None;
    }
    let mut s = String::with_capacity(canonical.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            s.push('/');
            i += 1;
        } else if escaped_slash(i) {
            s.push('/');
            i += 3;
        } else {
            let len = utf8_len(b[i]);
            s.push_str(canonical.get(i..i + len).unwrap_or_default());
            i += len;
        }
    }
    Some(resolve_dots(&s))
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex(c: &u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 2.3: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(p: &str) -> Result<String, PathError> {
        canonical_path(p, EncodedSlashes::Reject).map(Cow::into_owned)
    }

    #[test]
    fn clean_paths_are_borrowed() {
        for p in ["/", "/a/b", "/a/b/", "/.well-known/x", "/a.b/c.d", "/a;b"] {
            assert!(matches!(canonical_path(p, EncodedSlashes::Reject), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(canon("//a///b").unwrap(), "/a/b");
        assert_eq!(canon("/public/../admin").unwrap(), "/admin");
        assert_eq!(canon("/public/%2e%2E/admin/").unwrap(), "/admin/");
        assert_eq!(canon("/public/.%2e/admin/").unwrap(), "/admin/");
        assert_eq!(canon("/a/./b/.").unwrap(), "/a/b/");
        assert_eq!(canon("/a/..").unwrap(), "/");
        assert_eq!(canon("/a/%2E").unwrap(), "/a/");
        assert_eq!(canon("/../etc"), Err(PathError::EscapesRoot));
        assert_eq!(canon("/%2e%2e/etc"), Err(PathError::EscapesRoot));
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(canon("/%61dmin/").unwrap(), "/admin/");
        assert_eq!(canon("/%41%44%4d%49%4e").unwrap(), "/ADMIN");
        assert_eq!(canon("/a%7eb%2D%5f").unwrap(), "/a~b-_");
        assert_eq!(canon("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(canon("/a%20b%3b").unwrap(), "/a%20b%3B");
        assert_eq!(canon("/%25%32%66").unwrap(), "/%252f");
    }

    #[test]
    fn encoded_slashes_are_refused_or_kept() {
        for p in ["/admin%2fx", "/admin%2Fx", "/a%5cb", "/a\\b", "/%2e%2e%2fadmin"] {
            assert_eq!(canon(p), Err(PathError::EncodedSlash), "{p}");
        }
        let keep = |p| canonical_path(p, EncodedSlashes::Keep).map(Cow::into_owned);
        assert_eq!(keep("/a%2fb").unwrap(), "/a%2fb");
        assert_eq!(keep("/a%2Fb").unwrap(), "/a%2Fb");
        assert_eq!(keep("/a\\b").unwrap(), "/a\\b");
        assert_eq!(keep("/a/..%2f..%2fx").unwrap(), "/a/..%2f..%2fx");
        // What a decoding backend routes them as.
        assert_eq!(with_slashes_decoded("/a/b"), None);
        assert_eq!(with_slashes_decoded("/admin%2Fx").unwrap().unwrap(), "/admin/x");
        assert_eq!(with_slashes_decoded("/x%2f..%2Fadmin%2Fpanel").unwrap().unwrap(), "/admin/panel");
        assert_eq!(with_slashes_decoded("/\\admin").unwrap().unwrap(), "/admin");
        assert_eq!(with_slashes_decoded("/a%5C..%5C..%5Cx").unwrap(), Err(PathError::EscapesRoot));
    }

    #[test]
    fn malformed_escapes_and_nul_are_refused() {
        assert_eq!(canon("/a%"), Err(PathError::BadEscape));
        assert_eq!(canon("/a%2"), Err(PathError::BadEscape));
        assert_eq!(canon("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(canon("/a%00b"), Err(PathError::Nul));
    }

    #[test]
    fn parameters_are_dropped_per_segment() {
        assert_eq!(without_parameters("/a/b"), None);
        assert_eq!(without_parameters("/admin;x/secret").unwrap().unwrap(), "/admin/secret");
        assert_eq!(without_parameters("/public/..;/admin/").unwrap().unwrap(), "/admin/");
        assert_eq!(without_parameters("/api/users;jsessionid=1").unwrap().unwrap(), "/api/users");
        assert_eq!(without_parameters("/..;/x").unwrap(), Err(PathError::EscapesRoot));
    }
}
