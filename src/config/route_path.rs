//! A route's `path` as the router matches it: the prefix without its
//! trailing slash, refused when no request could ever match it because
//! requests are routed in canonical form (`router::canonical`), with the
//! form to write instead when there is one.

/// A route's path as matched: the prefix without its trailing slash.
pub(super) fn route_prefix(v: &str) -> Result<String, String> {
    if !v.starts_with('/') || v.contains(['?', '#', ' ']) || v.contains("//") {
        return Err(format!("invalid path {v:?}; expected a prefix such as \"/\" or \"/api/\""));
    }
    if v.contains(';') {
        // A request path's `;` parameters are read as Spring and Tomcat read
        // them (`proxy::route`): one is served only when its path without
        // them routes the same way, which a prefix holding one never does.
        return Err(format!(
            "path {v:?} would never match: a `;` starts a parameter, and a request is served only where \
             its path without parameters routes too"
        ));
    }
    if let Some((why, instead)) = not_canonical(v) {
        let write = instead.map(|p| format!("; write {p:?}")).unwrap_or_default();
        return Err(format!("path {v:?} would never match: requests are routed in canonical form, and {why}{write}"));
    }
    Ok(v.trim_end_matches('/').to_string())
}

/// Why `path` is not in the form requests are routed in
/// (`router::canonical`), and that form, if it has one: RFC 3986 path
/// characters only (other bytes as `%XX` of their UTF-8), escapes of
/// unreserved characters decoded and the others in upper case, no `.` or
/// `..` segments. `None` when it is; no form when none would match.
fn not_canonical(path: &str) -> Option<(&'static str, Option<String>)> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    let allowed = |b: u8| unreserved(b) || b"!$&'()*+,;=:@/".contains(&b);
    let hex = |b: u8| char::from(b"0123456789ABCDEF"[usize::from(b)]);
    let mut out = String::with_capacity(path.len());
    let mut why = None;
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let digits = b.get(i + 1..i + 3).and_then(|d| std::str::from_utf8(d).ok());
            let Some(v) = digits.and_then(|d| u8::from_str_radix(d, 16).ok()) else {
                return Some(("it has a malformed %-escape", None));
            };
            if v == 0 || v == b'/' || v == b'\\' {
                return Some(("an encoded NUL, slash or backslash is never routed", None));
            }
            if unreserved(v) {
                why.get_or_insert("escapes of letters, digits and -._~ are decoded");
                out.push(char::from(v));
            } else {
                if digits.is_some_and(|d| d.bytes().any(|x| x.is_ascii_lowercase())) {
                    why.get_or_insert("escapes are upper-cased");
                }
                out.extend(['%', hex(v >> 4), hex(v & 15)]);
            }
            i += 3;
            continue;
        }
        if !allowed(c) {
            why.get_or_insert("characters outside RFC 3986's path set arrive %-encoded (UTF-8)");
            out.extend(['%', hex(c >> 4), hex(c & 15)]);
        } else {
            out.push(char::from(c));
        }
        i += 1;
    }
    if out.split('/').any(|seg| seg == "." || seg == "..") {
        // Resolved as requests are (RFC 3986 5.2.4), after the decoding
        // above (`%2e%2e` is `..`); one that climbs above the root is
        // refused, so no form of it matches.
        let mut segments: Vec<&str> = Vec::new();
        for seg in out.split('/').skip(1) {
            match seg {
                "." => {}
                ".." if segments.pop().is_none() => {
                    return Some(("`..` climbs above the root, which requests may not", None));
                }
                ".." => {}
                seg => segments.push(seg),
            }
        }
        let mut resolved = String::from("/");
        resolved.push_str(&segments.join("/"));
        if out.ends_with("/.") || out.ends_with("/..") {
            resolved.push('/');
        }
        let resolved = resolved.replace("//", "/");
        return Some(("`.` and `..` segments are resolved first", Some(resolved)));
    }
    why.map(|w| (w, Some(out)))
}
