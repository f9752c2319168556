//! Header rewriting between client and upstream: hop-by-hop removal and the
//! `X-Forwarded-*` family. Pure functions over `HeaderMap`, benchmarked.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub use crate::middleware::X_FORWARDED_FOR;
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// A header named by the `close` token of `Connection` (see [`strip_hop_by_hop`]).
static CLOSE: HeaderName = HeaderName::from_static("close");

/// Headers that describe one connection, never forwarded (RFC 9110 7.6.1),
/// plus `Proxy-*` ones that are ours to consume (any other `proxy-` name
/// too, see [`strip_hop_by_hop`]). `Connection` comes first.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
];

/// Where `name` (lowercase, as `HeaderName` keeps it) is in [`HOP_BY_HOP`]:
/// `Some(Some(i))`; `Some(None)` for another `proxy-` name; `None` for an
/// end-to-end header. One byte decides for most names, instead of nine
/// comparisons each.
fn hop_by_hop_index(name: &str) -> Option<Option<usize>> {
    let fixed = |i: usize| (HOP_BY_HOP[i].as_str() == name).then_some(Some(i));
    match name.as_bytes().first()? {
        b'c' => fixed(0),
        b'k' => fixed(1),
        b't' => fixed(2).or_else(|| fixed(3)).or_else(|| fixed(4)),
        b'u' => fixed(5),
        b'p' if name.starts_with("proxy-") => Some(fixed(6).or_else(|| fixed(7)).or_else(|| fixed(8)).flatten()),
        _ => None,
    }
}

/// Remove hop-by-hop headers, including every header named in `Connection`.
/// Returns the `Upgrade` value when the message asked for a protocol
/// upgrade, so the caller can forward it deliberately.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    // One pass over the names first: most messages carry none of these but
    // `Connection`, so each removal below is one that is needed.
    let mut present = 0u16;
    let mut other_proxy_names = false;
    for name in headers.keys() {
        match hop_by_hop_index(name.as_str()) {
            Some(Some(i)) => present |= 1 << i,
            Some(None) => other_proxy_names = true,
            None => {}
        }
    }
    if present == 0 && !other_proxy_names {
        return None;
    }
    let mut upgrade_requested = false;
    let mut close_named = false;
    // Names listed in Connection beyond its usual tokens; rare, and a Vec
    // allocates only when one is pushed.
    let mut named: Vec<HeaderName> = Vec::new();
    if present & 1 != 0 {
        for value in headers.get_all(header::CONNECTION) {
            let Ok(s) = value.to_str() else { continue };
            for token in s.split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("upgrade") {
                    upgrade_requested = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    // A fixed hop-by-hop name: removed below.
                } else if token.eq_ignore_ascii_case("close") {
                    // A header of that name goes too, as RFC 9110 7.6.1 asks
                    // of every name listed; without parsing or allocating,
                    // since every one-request connection says it.
                    close_named = true;
                } else if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    if !proxy_owned(&name) {
                        named.push(name);
                    }
                }
            }
        }
    }
    let upgrade = if upgrade_requested { headers.get(header::UPGRADE).cloned() } else { None };
    if close_named {
        headers.remove(&CLOSE);
    }
    for name in named {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if other_proxy_names {
        let doomed: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().starts_with("proxy-")).cloned().collect();
        for name in doomed {
            headers.remove(name);
        }
    }
    upgrade
}

/// Headers `Connection` may not remove: the routed host, the framing, and
/// what the proxy itself tells the upstream. A client listing `Host` or
/// `X-Forwarded-For` there would otherwise strip what the route was chosen
/// by or who the client is.
fn proxy_owned(name: &HeaderName) -> bool {
    let n = name.as_str();
    *name == header::HOST
        || *name == header::CONTENT_LENGTH
        || n == "forwarded"
        || n.starts_with("x-forwarded-")
        || *name == X_REAL_IP
        || *name == X_REQUEST_ID
}

/// Remove what only a trusted proxy may say about the request: client-sent
/// `Forwarded`, `X-Forwarded-*` (those the proxy sets are set again by
/// [`add_forwarded`]), `X-Original-URL` and `X-Rewrite-URL` (which some
/// frameworks route by instead of the path). One pass over the names;
/// nothing is removed from a request that carries none.
pub fn strip_untrusted_forwarding(headers: &mut HeaderMap) {
    remove_named(headers, crate::middleware::untrusted_claim);
}

/// HTTP/2 clients send `Cookie` as one field per pair (RFC 9113 8.2.3);
/// on the way to an HTTP/1.1 upstream they MUST be one line, joined with
/// `; ` (frameworks read only the first `Cookie` line).
pub fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Remove the `_` spellings of what the proxy sets (`X_Forwarded_For`),
/// which even a trusted proxy passes on from its client unread.
pub fn strip_underscore_spellings(headers: &mut HeaderMap) {
    remove_named(headers, crate::middleware::client_ip::underscore_spelling);
}

/// Remove every header whose (lowercase) name `doomed` picks.
fn remove_named(headers: &mut HeaderMap, doomed: fn(&str) -> bool) {
    if !headers.keys().any(|k| doomed(k.as_str())) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|k| doomed(k.as_str())).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// Whether the client said this request is its connection's last: HTTP/1.1
/// with `Connection: close`, or HTTP/1.0 without `keep-alive`. (HTTP/2
/// requests never are.)
pub fn last_on_connection(version: http::Version, headers: &HeaderMap) -> bool {
    let has = |wanted: &str| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(wanted))))
    };
    match version {
        http::Version::HTTP_11 => has("close"),
        http::Version::HTTP_10 | http::Version::HTTP_09 => !has("keep-alive"),
        _ => false,
    }
}

/// Facts about the client side that the upstream is told.
pub struct Forwarded<'a> {
    /// The request's host as received (becomes `X-Forwarded-Host`).
    pub host_header: &'a HeaderValue,
    /// The peer is a trusted proxy: keep the `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` it sent (it saw the client's scheme and host).
    pub trusted: bool,
    /// The client address, already a header value (see [`ip_header_value`]).
    pub client_ip: &'a HeaderValue,
    pub proto: &'static str,
}

/// The forwarding headers of a client that is not a trusted proxy, as lines
/// for the upstream head: every header the proxy sets or removes on the way
/// upstream ([`set_by_forwarding`](crate::middleware::set_by_forwarding):
/// the client's claims and its `X-Real-IP`) goes from `headers`, and the
/// lines are what [`add_forwarded`] would then set.
pub fn untrusted_forwarding_lines<'a>(headers: &mut HeaderMap, f: &Forwarded<'a>) -> [(&'static str, &'a [u8]); 4] {
    remove_named(headers, crate::middleware::set_by_forwarding);
    [
        (X_FORWARDED_FOR.as_str(), f.client_ip.as_bytes()),
        (X_FORWARDED_PROTO.as_str(), f.proto.as_bytes()),
        (X_FORWARDED_HOST.as_str(), f.host_header.as_bytes()),
        (X_REAL_IP.as_str(), f.client_ip.as_bytes()),
    ]
}

/// Append the client to `X-Forwarded-For` and set `X-Forwarded-Proto`,
/// `X-Forwarded-Host` and `X-Real-IP`.
pub fn add_forwarded(headers: &mut HeaderMap, f: &Forwarded<'_>) {
    // hyper sizes a new connection's first map for the client's headers
    // alone; grow it once here rather than twice on the way.
    headers.reserve(4);
    let ip = f.client_ip.clone();
    let mut prev = String::new();
    for v in headers.get_all(&X_FORWARDED_FOR) {
        let Ok(v) = v.to_str() else { continue };
        let v = v.trim();
        if !v.is_empty() {
            if !prev.is_empty() {
                prev.push_str(", ");
            }
            prev.push_str(v);
        }
    }
    let xff = if prev.is_empty() {
        ip.clone()
    } else {
        prev.push_str(", ");
        prev.push_str(ip.to_str().unwrap_or_default());
        HeaderValue::from_str(&prev).unwrap_or_else(|_| ip.clone())
    };
    // Several X-Forwarded-For lines are one list; `insert` replaces them all
    // with the joined form.
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    if !(f.trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(f.proto));
    }
    if !(f.trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        headers.insert(X_FORWARDED_HOST.clone(), f.host_header.clone());
    }
    headers.insert(X_REAL_IP.clone(), ip);
}

/// The client address as `X-Real-IP` and `X-Forwarded-For` carry it (an
/// IPv4-mapped IPv6 address as IPv4). Made once per connection.
pub fn ip_header_value(ip: IpAddr) -> HeaderValue {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    // An IP address only holds characters valid in a header value.
    let value = match ip {
        IpAddr::V4(v4) => {
            let (text, len) = ipv4_text(v4);
            HeaderValue::from_bytes(&text[..len])
        }
        IpAddr::V6(_) => HeaderValue::from_str(&ip.to_string()),
    };
    value.unwrap_or(HeaderValue::from_static("unknown"))
}

/// Dotted-quad text without the formatting machinery, which cost a fifth
/// of a one-request connection's header work.
fn ipv4_text(ip: std::net::Ipv4Addr) -> ([u8; 15], usize) {
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    (text, len)
}

#[cfg(test)]
mod tests;
