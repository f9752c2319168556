//! Conditional and range requests against one file (RFC 9110 §13, §14):
//! the file's validators (`ETag`, `Last-Modified`), the preconditions a
//! request carries, evaluated in the RFC's order, and a single byte range
//! ([`byte_range`], also read by the cache for its stored answers).
//! Pure: no I/O, the file's size and modification time come in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap};

/// What identifies one version of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// Strong, quoted: `"<mtime secs hex>-<size hex>"` as nginx makes it,
    /// so moving a site from nginx keeps clients' cached copies valid; a
    /// precompressed sibling's ends with its coding (`-br`).
    pub etag: String,
    /// Whole seconds, as `Last-Modified` carries it.
    pub modified: SystemTime,
}

impl Validators {
    pub fn new(modified: SystemTime, len: u64, coding: Option<&str>) -> Self {
        let secs = modified.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let etag = match coding {
            Some(c) => format!("\"{secs:x}-{len:x}-{c}\""),
            None => format!("\"{secs:x}-{len:x}\""),
        };
        Validators { etag, modified: UNIX_EPOCH + Duration::from_secs(secs) }
    }

    pub fn last_modified(&self) -> String {
        httpdate::fmt_http_date(self.modified)
    }
}

/// The request's preconditions and range, copied out of its headers.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub get: bool,
    if_match: Option<String>,
    if_unmodified_since: Option<String>,
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
    if_range: Option<String>,
    range: Option<String>,
}

impl Conditions {
    /// One pass over the request's few headers: cheaper than six lookups
    /// that mostly find nothing. The lists (`If-Match`, `If-None-Match`)
    /// are one list over all their lines (RFC 9110 5.3); of the other,
    /// single-valued ones the first line counts, as `HeaderMap::get` would
    /// take it.
    pub fn from_headers(get: bool, h: &HeaderMap) -> Self {
        let mut c = Conditions { get, ..Conditions::default() };
        for (name, value) in h {
            let (slot, list) = match *name {
                header::IF_MATCH => (&mut c.if_match, true),
                header::IF_UNMODIFIED_SINCE => (&mut c.if_unmodified_since, false),
                header::IF_NONE_MATCH => (&mut c.if_none_match, true),
                header::IF_MODIFIED_SINCE => (&mut c.if_modified_since, false),
                header::IF_RANGE => (&mut c.if_range, false),
                header::RANGE => (&mut c.range, false),
                _ => continue,
            };
            let Ok(value) = value.to_str() else { continue };
            match slot {
                None => *slot = Some(value.to_owned()),
                Some(joined) if list => {
                    joined.push_str(", ");
                    joined.push_str(value);
                }
                Some(_) => {}
            }
        }
        c
    }

    /// Whether the request asks for anything but the whole file.
    pub fn any(&self) -> bool {
        self.if_match.is_some()
            || self.if_unmodified_since.is_some()
            || self.if_none_match.is_some()
            || self.if_modified_since.is_some()
            || self.range.is_some()
    }
}

/// How to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// 200 with the whole file.
    Full,
    /// 206 with bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// 304.
    NotModified,
    /// 412.
    PreconditionFailed,
    /// 416.
    Unsatisfiable,
}

/// Evaluate the preconditions, then the range, in RFC 9110 §13.2.2's order.
pub fn decide(c: &Conditions, v: &Validators, len: u64) -> Decision {
    if let Some(im) = &c.if_match {
        if !etag_list_matches(im, &v.etag, true) {
            return Decision::PreconditionFailed;
        }
    } else if let Some(since) = c.if_unmodified_since.as_deref().and_then(http_date) {
        if v.modified > since {
            return Decision::PreconditionFailed;
        }
    }
    if let Some(inm) = &c.if_none_match {
        // GET and HEAD only come here.
        if etag_list_matches(inm, &v.etag, false) {
            return Decision::NotModified;
        }
    } else if let Some(since) = c.if_modified_since.as_deref().and_then(http_date) {
        // A date later than now is not a date the server sent: ignored
        // (RFC 9110 13.1.3).
        if v.modified <= since && since <= SystemTime::now() {
            return Decision::NotModified;
        }
    }
    let Some(range) = c.range.as_deref().filter(|_| c.get) else { return Decision::Full };
    if let Some(ir) = &c.if_range {
        let current = if ir.trim_start().starts_with('"') {
            // A strong comparison: a weak tag never matches.
            ir.trim() == v.etag
        } else {
            http_date(ir) == Some(v.modified)
        };
        if !current {
            return Decision::Full;
        }
    }
    match byte_range(range, len) {
        ByteRange::One(start, end) => Decision::Partial { start, end },
        ByteRange::Unsatisfiable => Decision::Unsatisfiable,
        ByteRange::Ignore => Decision::Full,
    }
}

/// `*` or a list of entity tags; `strong` asks for the strong comparison.
fn etag_list_matches(list: &str, etag: &str, strong: bool) -> bool {
    let list = list.trim();
    if list == "*" {
        return true;
    }
    list.split(',').map(str::trim).any(|t| match t.strip_prefix("W/") {
        Some(weak) => !strong && weak == etag,
        None => t == etag,
    })
}

fn http_date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s.trim()).ok()
}

/// What a `Range` header asks of a representation `len` bytes long.
#[derive(Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// Bytes `start..=end`, within the file.
    One(u64, u64),
    Unsatisfiable,
    /// Not a single byte range we answer (bad syntax, another unit,
    /// several ranges): the whole file, as the RFC allows.
    Ignore,
}

/// A `Range` header read as nginx reads it: one `bytes` range (`a-b`,
/// `a-`, `-n`), clamped to `len`; anything else (another unit, several
/// ranges, bad syntax) is ignored and the whole representation sent, and
/// so is any range of an empty one (no byte to name; media players ask
/// `bytes=0-` of every file). The static files and the cache's stored
/// answers both use it.
pub fn byte_range(h: &str, len: u64) -> ByteRange {
    if len == 0 {
        return ByteRange::Ignore;
    }
    let h = h.trim();
    let Some(set) = h.get(..6).filter(|u| u.eq_ignore_ascii_case("bytes=")).map(|_| &h[6..]) else {
        return ByteRange::Ignore;
    };
    if set.contains(',') {
        return ByteRange::Ignore;
    }
    let Some((first, last)) = set.trim().split_once('-') else { return ByteRange::Ignore };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // `-N`: the last N bytes.
        (true, false) => match num(last) {
            Some(0) => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::One(len.saturating_sub(n), len - 1),
            None => ByteRange::Ignore,
        },
        // `N-`: from N to the end.
        (false, true) => match num(first) {
            Some(s) if s >= len => ByteRange::Unsatisfiable,
            Some(s) => ByteRange::One(s, len - 1),
            None => ByteRange::Ignore,
        },
        (false, false) => match (num(first), num(last)) {
            (Some(s), Some(e)) if s > e => ByteRange::Ignore,
            (Some(s), Some(_)) if s >= len => ByteRange::Unsatisfiable,
            (Some(s), Some(e)) => ByteRange::One(s, e.min(len - 1)),
            _ => ByteRange::Ignore,
        },
        (true, true) => ByteRange::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conds(pairs: &[(&str, &str)]) -> Conditions {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        Conditions::from_headers(true, &h)
    }

    fn v() -> Validators {
        Validators::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(300), 1000, None)
    }

    #[test]
    fn etags_look_like_nginx_ones() {
        assert_eq!(v().etag, "\"6553f100-3e8\"");
        assert_eq!(Validators::new(UNIX_EPOCH, 16, Some("br")).etag, "\"0-10-br\"");
        assert_eq!(v().last_modified(), "Tue, 14 Nov 2023 22:13:20 GMT");
    }

    #[test]
    fn if_none_match_wins_over_if_modified_since() {
        let etag = v().etag;
        assert_eq!(decide(&conds(&[("if-none-match", &etag)]), &v(), 1000), Decision::NotModified);
        assert_eq!(decide(&conds(&[("if-none-match", &format!("W/{etag}"))]), &v(), 1000), Decision::NotModified);
        assert_eq!(decide(&conds(&[("if-none-match", "\"a\", *")]), &v(), 1000), Decision::Full);
        assert_eq!(decide(&conds(&[("if-none-match", "*")]), &v(), 1000), Decision::NotModified);
        let lm = v().last_modified();
        assert_eq!(decide(&conds(&[("if-modified-since", &lm)]), &v(), 1000), Decision::NotModified);
        assert_eq!(
            decide(&conds(&[("if-none-match", "\"other\""), ("if-modified-since", &lm)]), &v(), 1000),
            Decision::Full
        );
        let older = "Tue, 14 Nov 2023 22:13:19 GMT";
        assert_eq!(decide(&conds(&[("if-modified-since", older)]), &v(), 1000), Decision::Full);
        assert_eq!(decide(&conds(&[("if-modified-since", "yesterday")]), &v(), 1000), Decision::Full);
    }

    #[test]
    fn list_lines_are_one_list_and_future_dates_are_ignored() {
        let etag = v().etag;
        let mut h = HeaderMap::new();
        h.append(header::IF_NONE_MATCH, "\"a\"".parse().unwrap());
        h.append(header::IF_NONE_MATCH, etag.parse().unwrap());
        assert_eq!(decide(&Conditions::from_headers(true, &h), &v(), 1000), Decision::NotModified);
        let mut h = HeaderMap::new();
        h.append(header::IF_MATCH, "\"a\"".parse().unwrap());
        h.append(header::IF_MATCH, etag.parse().unwrap());
        assert_eq!(decide(&Conditions::from_headers(true, &h), &v(), 1000), Decision::Full);
        // Later than now: not a date the server sent, so no 304.
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(86_400));
        assert_eq!(decide(&conds(&[("if-modified-since", &future)]), &v(), 1000), Decision::Full);
    }

    #[test]
    fn if_match_and_if_unmodified_since_fail_with_412() {
        let etag = v().etag;
        assert_eq!(decide(&conds(&[("if-match", "\"x\"")]), &v(), 1000), Decision::PreconditionFailed);
        assert_eq!(decide(&conds(&[("if-match", &format!("W/{etag}"))]), &v(), 1000), Decision::PreconditionFailed);
        assert_eq!(decide(&conds(&[("if-match", &etag)]), &v(), 1000), Decision::Full);
        let older = "Tue, 14 Nov 2023 22:13:19 GMT";
        assert_eq!(decide(&conds(&[("if-unmodified-since", older)]), &v(), 1000), Decision::PreconditionFailed);
    }

    #[test]
    fn single_ranges() {
        assert_eq!(byte_range("bytes=0-99", 1000), ByteRange::One(0, 99));
        assert_eq!(byte_range("bytes=900-", 1000), ByteRange::One(900, 999));
        assert_eq!(byte_range("bytes=-100", 1000), ByteRange::One(900, 999));
        assert_eq!(byte_range("bytes=-5000", 1000), ByteRange::One(0, 999));
        assert_eq!(byte_range("bytes=990-5000", 1000), ByteRange::One(990, 999));
        assert_eq!(byte_range("BYTES= 1-2", 1000), ByteRange::One(1, 2));
        assert_eq!(byte_range("bytes=1000-", 1000), ByteRange::Unsatisfiable);
        assert_eq!(byte_range("bytes=-0", 1000), ByteRange::Unsatisfiable);
        // An empty file has no byte to name: whole (200), as nginx answers.
        for empty in ["bytes=0-", "bytes=0-0", "bytes=-1", "bytes=-0"] {
            assert_eq!(byte_range(empty, 0), ByteRange::Ignore, "{empty}");
        }
        assert_eq!(byte_range("bytes=5-1", 1000), ByteRange::Ignore);
        assert_eq!(byte_range("bytes=0-1,5-6", 1000), ByteRange::Ignore);
        assert_eq!(byte_range("items=0-1", 1000), ByteRange::Ignore);
        assert_eq!(byte_range("bytes=a-b", 1000), ByteRange::Ignore);
        assert_eq!(byte_range("bytes=+1-2", 1000), ByteRange::Ignore);
        assert_eq!(byte_range("bytes=-", 1000), ByteRange::Ignore);
        assert_eq!(byte_range("bytes=99999999999999999999999-", 1000), ByteRange::Ignore);
    }

    #[test]
    fn if_range_keeps_the_range_only_for_the_current_version() {
        let etag = v().etag;
        let r = |ir: &str| decide(&conds(&[("range", "bytes=0-9"), ("if-range", ir)]), &v(), 1000);
        assert_eq!(r(&etag), Decision::Partial { start: 0, end: 9 });
        assert_eq!(r("\"old\""), Decision::Full);
        assert_eq!(r(&format!("W/{etag}")), Decision::Full);
        assert_eq!(r(&v().last_modified()), Decision::Partial { start: 0, end: 9 });
        assert_eq!(r("Tue, 14 Nov 2023 22:13:19 GMT"), Decision::Full);
        let mut head = conds(&[("range", "bytes=0-9")]);
        head.get = false;
        assert_eq!(decide(&head, &v(), 1000), Decision::Full);
    }
}
