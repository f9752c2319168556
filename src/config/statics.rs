//! Validation of a static upstream (`static = DIR` and its keys): exactly
//! one of `static` and `servers`, the directory exists, index names are
//! plain file names, the fallback and the `cache_control` patterns are
//! paths, and keys of one kind of upstream are not given to the other.

use std::ops::Range;

use serde_spanned::Spanned;

use super::compile::Compiler;
use super::raw::RawUpstream;
use super::{CacheRule, PathPattern, StaticSpec};

impl Compiler<'_> {
    /// The static part of an upstream, or `None` for a proxied one. Every
    /// problem is reported at the key (or the upstream's table) it is about.
    pub(super) fn static_spec(&mut self, name: &str, table: Range<usize>, u: &RawUpstream) -> Option<StaticSpec> {
        let Some(dir) = &u.static_dir else {
            // With Docker discovery, labels may fill a pool the file only configures.
            if u.servers.is_none() && !self.discovery {
                self.err(
                    Some(table.clone()),
                    format!("upstream {name:?} needs `servers` (a proxied upstream) or `static = DIR` (files)"),
                );
            }
            self.static_keys_need_static(name, table, u);
            return None;
        };
        if u.servers.is_some() {
            self.err(
                Some(dir.span()),
                format!(
                    "upstream {name:?} has both `static` and `servers`; an upstream serves files or proxies, not both"
                ),
            );
        }
        self.server_keys_need_servers(name, dir, u);
        let root = self.relative(dir.get_ref());
        if dir.get_ref().trim().is_empty() {
            self.err(Some(dir.span()), "static must name a directory");
        } else if !root.is_dir() {
            self.err(
                Some(dir.span()),
                format!("static directory {} does not exist or is not a directory", root.display()),
            );
        }

        let allow_dotfiles = u.allow_dotfiles.as_ref().is_some_and(|b| *b.get_ref());
        let index = match &u.index {
            None => vec!["index.html".to_string()],
            Some(list) => {
                for n in list.get_ref() {
                    if n.is_empty() || n == "." || n == ".." || n.contains(['/', '\\', '\0']) {
                        self.err(Some(list.span()), format!("index entries are file names without '/', got {n:?}"));
                    } else if n.starts_with('.') && !allow_dotfiles {
                        self.err(
                            Some(list.span()),
                            format!("index entry {n:?} is a dotfile, never served without allow_dotfiles = true"),
                        );
                    }
                }
                list.get_ref().clone()
            }
        };
        let fallback = u.fallback.as_ref().map(|f| {
            let v = f.get_ref();
            if !is_site_path(v) || v.ends_with('/') || !decodes_inside(v) {
                self.err(
                    Some(f.span()),
                    format!("fallback must be a file's path inside the directory, such as \"/index.html\", got {v:?}"),
                );
            } else if !allow_dotfiles && has_dotfile(v) {
                self.err(
                    Some(f.span()),
                    format!("fallback {v:?} names a dotfile, never served without allow_dotfiles = true"),
                );
            }
            v.clone()
        });
        let mut cache_control = Vec::new();
        for rule in u.cache_control.iter().flatten() {
            let r = rule.get_ref();
            let p = r.path.get_ref();
            let pattern = if let Some(suffix) = p.strip_prefix('*').filter(|s| !s.is_empty() && !s.contains('*')) {
                PathPattern::Suffix(suffix.to_string())
            } else if is_site_path(p) {
                PathPattern::Prefix(p.clone())
            } else {
                self.err(
                    Some(r.path.span()),
                    format!("cache_control path must be a prefix (\"/assets/\") or a suffix (\"*.html\"), got {p:?}"),
                );
                continue;
            };
            match http::HeaderValue::from_str(r.value.get_ref()) {
                Ok(value) if !r.value.get_ref().trim().is_empty() => cache_control.push(CacheRule { pattern, value }),
                _ => self.err(Some(r.value.span()), "cache_control value must be a non-empty header value"),
            }
        }
        Some(StaticSpec {
            root,
            index,
            fallback,
            precompressed: u.precompressed.as_ref().is_none_or(|b| *b.get_ref()),
            follow_symlinks: u.follow_symlinks.as_ref().is_some_and(|b| *b.get_ref()),
            allow_dotfiles,
            recheck_after: u.recheck_after.map_or(std::time::Duration::ZERO, |d| d.0),
            cache_control,
        })
    }

    fn static_keys_need_static(&mut self, name: &str, table: Range<usize>, u: &RawUpstream) {
        let spans = [
            ("index", u.index.as_ref().map(|s| s.span())),
            ("fallback", u.fallback.as_ref().map(|s| s.span())),
            ("precompressed", u.precompressed.as_ref().map(|s| s.span())),
            ("follow_symlinks", u.follow_symlinks.as_ref().map(|s| s.span())),
            ("allow_dotfiles", u.allow_dotfiles.as_ref().map(|s| s.span())),
            ("cache_control", u.cache_control.as_ref().and_then(|r| r.first()).map(|s| s.span())),
            // A duration carries no position of its own: the upstream's table.
            ("recheck_after", u.recheck_after.and(Some(table.clone()))),
        ];
        for (key, span) in spans {
            if let Some(span) = span {
                self.err(Some(span), format!("upstream {name:?}: `{key}` needs `static = DIR`"));
            }
        }
    }

    fn server_keys_need_servers(&mut self, name: &str, dir: &Spanned<String>, u: &RawUpstream) {
        let at_dir = Some(dir.span());
        let spans = [
            ("balance", u.balance.as_ref().map(|s| s.span())),
            ("health", u.health.as_ref().map(|s| s.span())),
            ("retries", u.retries.as_ref().map(|s| s.span())),
            ("max_fails", u.max_fails.as_ref().map(|s| s.span())),
            ("max_idle_per_server", u.max_idle_per_server.as_ref().map(|s| s.span())),
            ("connect_timeout", u.connect_timeout.and(at_dir.clone())),
            ("response_timeout", u.response_timeout.and(at_dir.clone())),
            ("fail_timeout", u.fail_timeout.and(at_dir.clone())),
        ];
        for (key, span) in spans {
            if let Some(span) = span {
                self.err(Some(span), format!("upstream {name:?}: `{key}` is for servers, not a static upstream"));
            }
        }
    }
}

/// A path inside the site: starts with `/`, no `.`/`..` segments, no
/// backslash, NUL, query or fragment.
/// Whether `p`, percent-decoded segment by segment as a request path is,
/// stays a path inside the directory: no segment that decodes to `.` or
/// `..` or holds a `/`, `\` or NUL (`/%2e%2e/x` is refused at every use).
fn decodes_inside(p: &str) -> bool {
    p.split('/').filter(|s| !s.is_empty()).all(|seg| {
        let b: Vec<u8> = percent_encoding::percent_decode_str(seg).collect();
        b != b"." && b != b".." && !b.iter().any(|&c| c == b'/' || c == b'\\' || c == 0)
    })
}

/// Whether a segment of `p` (decoded) starts with a dot, `/.well-known/`
/// at the top aside, as the request paths' rule reads them.
fn has_dotfile(p: &str) -> bool {
    p.split('/').filter(|s| !s.is_empty()).enumerate().any(|(i, seg)| {
        let b: Vec<u8> = percent_encoding::percent_decode_str(seg).collect();
        b.first() == Some(&b'.') && !(i == 0 && b == b".well-known")
    })
}

fn is_site_path(p: &str) -> bool {
    p.starts_with('/') && !p.contains(['\\', '\0', '?', '#']) && p.split('/').all(|seg| seg != "." && seg != "..")
}
