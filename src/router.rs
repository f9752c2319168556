//! Host + path routing: a pure structure built once per config load.
//!
//! Choice order follows the contract: the most specific host (exact, then the
//! longest matching `*.suffix` wildcard, then `*`), and within that host the
//! longest path prefix on segment boundaries. Like nginx's server blocks, a
//! host that matched but has no fitting path answers 404 rather than falling
//! through to a less specific host. Lookup is a handful of hash probes: one per
//! host label and one per path segment, whatever the number of routes.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::config::{EncodedSlashes, HostPattern};

mod canonical;
pub use canonical::{canonical_path, with_slashes_decoded, without_parameters, PathError};

/// Routes of one host, by path prefix (no trailing slash; `""` is the root).
#[derive(Debug)]
struct PathTable<T> {
    prefixes: HashMap<Box<str>, T>,
    longest: usize,
}

impl<T> Default for PathTable<T> {
    fn default() -> Self {
        PathTable { prefixes: HashMap::new(), longest: 0 }
    }
}

impl<T> PathTable<T> {
    fn insert(&mut self, prefix: &str, value: T) -> Option<T> {
        self.longest = self.longest.max(prefix.len());
        self.prefixes.insert(prefix.to_ascii_lowercase().into(), value)
    }

    /// Longest prefix of `path` that ends on a segment boundary.
    fn lookup<'a>(&'a self, path: &str) -> Option<Match<'a, T>> {
        // Prefixes compare without case: Express, ASP.NET and IIS route
        // `/ADMIN/` to the `/admin/` handler, so a guard on `/admin/` must
        // cover it. Lower-casing keeps every byte offset (`prefix_len`).
        let lower;
        let path = if path.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = path.to_ascii_lowercase();
            lower.as_str()
        } else {
            path
        };
        let path = path.strip_suffix('/').unwrap_or(path);
        let mut end = path.len();
        // Skip straight to the deepest candidate that could be in the table.
        if end > self.longest {
            end = path.as_bytes()[..=self.longest].iter().rposition(|&b| b == b'/').unwrap_or(0);
        }
        loop {
            let candidate = &path[..end];
            if let Some(v) = self.prefixes.get(candidate) {
                return Some(Match { value: v, prefix_len: end });
            }
            if end == 0 {
                return None;
            }
            end = path.as_bytes()[..end].iter().rposition(|&b| b == b'/').unwrap_or(0);
        }
    }
}

/// What a lookup found: the route and how many bytes of the path its prefix
/// covered (for `strip_prefix`).
#[derive(Debug, PartialEq, Eq)]
pub struct Match<'a, T> {
    pub value: &'a T,
    pub prefix_len: usize,
}

#[derive(Debug)]
pub struct Router<T> {
    exact: HashMap<Box<str>, PathTable<T>>,
    /// Keyed by the suffix with its leading dot: `.example.com`.
    wildcard: HashMap<Box<str>, PathTable<T>>,
    any: Option<PathTable<T>>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router { exact: HashMap::new(), wildcard: HashMap::new(), any: None }
    }
}

impl<T> Router<T> {
    /// Add a route; returns the value it replaced, if host and prefix were taken.
    pub fn insert(&mut self, host: &HostPattern, prefix: &str, value: T) -> Option<T> {
        let table = match host {
            HostPattern::Exact(h) => self.exact.entry(h.as_str().into()).or_default(),
            HostPattern::Wildcard(s) => self.wildcard.entry(s.as_str().into()).or_default(),
            HostPattern::Any => self.any.get_or_insert_with(PathTable::default),
        };
        table.insert(prefix.trim_end_matches('/'), value)
    }

    /// Find the route for a request. `host` may carry a port and any case;
    /// `path` should already be normalised (see [`normalize_path`]).
    pub fn lookup(&self, host: &str, path: &str) -> Option<Match<'_, T>> {
        let host = normalize_host(host);
        self.host_table(&host)?.lookup(path)
    }

    fn host_table(&self, host: &str) -> Option<&PathTable<T>> {
        if let Some(t) = self.exact.get(host) {
            return Some(t);
        }
        if !self.wildcard.is_empty() {
            // Longest suffix first: a.b.example.com tries .b.example.com, then .example.com, ...
            for (i, _) in host.match_indices('.') {
                if let Some(t) = self.wildcard.get(&host[i..]) {
                    return Some(t);
                }
            }
        }
        self.any.as_ref()
    }
}

/// Lower-case, without port or trailing dot. Borrows in the common case.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = if host.starts_with('[') {
        // IPv6 literal: keep the brackets, drop the port.
        host.find(']').map(|i| &host[..=i]).unwrap_or(host)
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// [`canonical_path`] with encoded slashes refused (the default).
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    canonical_path(path, EncodedSlashes::Reject)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router<&'static str> {
        let mut r = Router::default();
        r.insert(&HostPattern::Exact("logen.example.com".into()), "/api/", "api");
        r.insert(&HostPattern::Exact("logen.example.com".into()), "/", "front");
        r.insert(&HostPattern::Exact("logen.example.com".into()), "/api/v2", "api2");
        r.insert(&HostPattern::Wildcard(".example.com".into()), "/", "wild");
        r.insert(&HostPattern::Wildcard(".deep.example.com".into()), "/", "deep");
        r.insert(&HostPattern::Any, "/only", "any");
        r
    }

    fn hit(r: &Router<&'static str>, host: &str, path: &str) -> Option<(&'static str, usize)> {
        r.lookup(host, path).map(|m| (*m.value, m.prefix_len))
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any() {
        let r = router();
        assert_eq!(hit(&r, "logen.example.com", "/x"), Some(("front", 0)));
        assert_eq!(hit(&r, "other.example.com", "/x"), Some(("wild", 0)));
        assert_eq!(hit(&r, "a.deep.example.com", "/x"), Some(("deep", 0)));
        assert_eq!(hit(&r, "a.b.example.com", "/x"), Some(("wild", 0)));
        assert_eq!(hit(&r, "example.com", "/only/x"), Some(("any", 5)));
        assert_eq!(hit(&r, "example.com", "/x"), None);
    }

    #[test]
    fn host_case_port_and_trailing_dot_are_ignored() {
        let r = router();
        assert_eq!(hit(&r, "LOGEN.Example.COM:8443", "/api/x"), Some(("api", 4)));
        assert_eq!(hit(&r, "logen.example.com.", "/api"), Some(("api", 4)));
    }

    #[test]
    fn prefixes_match_on_segment_boundaries_longest_first() {
        let r = router();
        assert_eq!(hit(&r, "logen.example.com", "/api"), Some(("api", 4)));
        assert_eq!(hit(&r, "logen.example.com", "/api/"), Some(("api", 4)));
        assert_eq!(hit(&r, "logen.example.com", "/api/users"), Some(("api", 4)));
        assert_eq!(hit(&r, "logen.example.com", "/apix"), Some(("front", 0)));
        assert_eq!(hit(&r, "logen.example.com", "/api/v2/x"), Some(("api2", 7)));
        assert_eq!(hit(&r, "logen.example.com", "/api/v22"), Some(("api", 4)));
        assert_eq!(hit(&r, "logen.example.com", "/"), Some(("front", 0)));
    }

    #[test]
    fn ten_thousand_hosts() {
        let mut r = Router::default();
        for i in 0..10_000 {
            r.insert(&HostPattern::Exact(format!("h{i}.example.com")), "/", i);
        }
        assert_eq!(r.lookup("h9999.example.com", "/a").map(|m| *m.value), Some(9999));
        assert!(r.lookup("h10000.example.com", "/a").is_none());
    }
}
