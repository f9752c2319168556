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
    let claims =
        |n: &str| n == "forwarded" || n.starts_with("x-forwarded-") || n == "x-original-url" || n == "x-rewrite-url";
    if !headers.keys().any(|k| claims(k.as_str())) {
        return;
    }
    let doomed: Vec<HeaderName> = headers.keys().filter(|k| claims(k.as_str())).cloned().collect();
    for name in doomed {
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
mod tests {
    use super::*;

    #[test]
    fn client_addresses_are_written_as_their_usual_text() {
        for ip in ["0.0.0.0", "127.0.0.1", "10.20.30.40", "9.99.100.255", "255.255.255.255", "192.168.1.109"] {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_header_value(addr), ip);
        }
        for o in 0..=255u8 {
            let addr = std::net::Ipv4Addr::new(o, 0, 255 - o, o);
            assert_eq!(ip_header_value(addr.into()), addr.to_string().as_str());
        }
        assert_eq!(ip_header_value("::ffff:10.0.0.7".parse().unwrap()), "10.0.0.7");
        assert_eq!(ip_header_value("2001:db8::1".parse().unwrap()), "2001:db8::1");
    }

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        // `close` goes by a path of its own (no HeaderName parsed): a header
        // of that name is removed all the same.
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret, Close"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("close", HeaderValue::from_static("x"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("proxy-authorization", HeaderValue::from_static("x"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        assert_eq!(strip_hop_by_hop(&mut h), None);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn hop_by_hop_names_are_told_from_end_to_end_ones() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name.as_str()), Some(Some(i)), "{name}");
        }
        assert_eq!(hop_by_hop_index("proxy-x"), Some(None));
        for end_to_end in ["content-type", "cookie", "te-x", "trailers", "upgrade-insecure-requests", "proxy", "", "k"]
        {
            assert_eq!(hop_by_hop_index(end_to_end), None, "{end_to_end}");
        }
    }

    #[test]
    fn each_kind_of_hop_by_hop_header_is_found_on_its_own() {
        let strip = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (name, value) in pairs {
                h.append(*name, HeaderValue::from_static(value));
            }
            let upgrade = strip_hop_by_hop(&mut h);
            let mut left: Vec<String> = h.keys().map(|k| k.to_string()).collect();
            left.sort();
            (upgrade, left)
        };
        // A Proxy-* header that is on no list, with nothing else to strip.
        assert_eq!(strip(&[("proxy-x", "1"), ("accept", "*/*")]), (None, vec!["accept".to_string()]));
        // Headers named in Connection, `close` included.
        assert_eq!(
            strip(&[("connection", "close, X-Trace"), ("x-trace", "1"), ("close", "1"), ("accept", "*/*")]),
            (None, vec!["accept".to_string()])
        );
        // Every fixed one, alone.
        for name in ["te", "trailer", "transfer-encoding", "upgrade", "proxy-authenticate", "proxy-connection"] {
            assert_eq!(strip(&[(name, "x"), ("accept", "*/*")]), (None, vec!["accept".to_string()]), "{name}");
        }
        // Nothing to strip.
        assert_eq!(strip(&[("accept", "*/*")]), (None, vec!["accept".to_string()]));
    }

    #[test]
    fn tells_a_connection_s_last_request() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONNECTION, HeaderValue::from_static(v));
            h
        };
        let none = HeaderMap::new();
        assert!(last_on_connection(http::Version::HTTP_11, &with("Close")));
        assert!(last_on_connection(http::Version::HTTP_11, &with("te, close")));
        assert!(!last_on_connection(http::Version::HTTP_11, &none));
        assert!(!last_on_connection(http::Version::HTTP_11, &with("keep-alive")));
        assert!(last_on_connection(http::Version::HTTP_10, &none));
        assert!(!last_on_connection(http::Version::HTTP_10, &with("Keep-Alive")));
        assert!(!last_on_connection(http::Version::HTTP_2, &with("close")));
    }

    #[test]
    fn reports_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(strip_hop_by_hop(&mut h), Some(HeaderValue::from_static("websocket")));
        assert!(h.is_empty());
    }

    #[test]
    fn appends_forwarded_for() {
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.2, 10.0.0.3"));
        add_forwarded(
            &mut h,
            &Forwarded {
                host_header: &HeaderValue::from_static("a.example"),
                client_ip: &ip_header_value("192.0.2.7".parse().unwrap()),
                proto: "https",
                trusted: false,
            },
        );
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "a.example");
        assert_eq!(h[&X_REAL_IP], "192.0.2.7");
    }

    #[test]
    fn connection_cannot_remove_what_the_proxy_owns() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static(
                "host, x-forwarded-for, x-real-ip, x-request-id, content-length, forwarded, x-hop",
            ),
        );
        for name in ["host", "x-forwarded-for", "x-real-ip", "x-request-id", "content-length", "forwarded", "x-hop"] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-hop").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h.len(), 6, "{h:?}");
    }

    #[test]
    fn untrusted_forwarding_claims_are_removed() {
        let mut h = HeaderMap::new();
        for name in [
            "forwarded",
            "x-forwarded-host",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-original-url",
            "x-rewrite-url",
            "x-kept",
        ] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        strip_untrusted_forwarding(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
