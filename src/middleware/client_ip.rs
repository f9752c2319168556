//! Who the client is when Rampart sits behind other proxies: the socket
//! peer, unless the peer is a trusted proxy, in which case walk
//! `X-Forwarded-For` from the right past trusted hops to the first address
//! we do not trust (the one a client cannot forge).

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// Read here, appended to by `proxy::headers` (which re-exports it).
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub use crate::config::parse_cidrs;

/// Whether `name` (lowercase) is a claim about the request's path through
/// proxies that an untrusted client may not make: `Forwarded`,
/// `X-Forwarded-*`, `X-Original-URL`, `X-Rewrite-URL`. The proxy removes
/// them from such a client's request. Spellings with `_` for `-`
/// (`X_Forwarded_For`) count as the name: CGI, WSGI, PHP and Rack read
/// both as one variable (`HTTP_X_FORWARDED_FOR`), the client's first.
pub fn untrusted_claim(name: &str) -> bool {
    // Every request's every header comes here: one byte decides for most.
    match name.as_bytes().first() {
        Some(b'f') => name == "forwarded",
        Some(b'x') if name.contains('_') => untrusted_claim(&name.replace('_', "-")),
        Some(b'x') => name.starts_with("x-forwarded-") || name == "x-original-url" || name == "x-rewrite-url",
        _ => false,
    }
}

/// Whether the proxy sets or removes the header `name` (lowercase) on its
/// way upstream: the [`untrusted_claim`]s and `X-Real-IP`, in either
/// spelling.
pub fn set_by_forwarding(name: &str) -> bool {
    match name.as_bytes().first() {
        Some(b'x') if name.contains('_') => set_by_forwarding(&name.replace('_', "-")),
        Some(b'x') => untrusted_claim(name) || name == "x-real-ip",
        _ => untrusted_claim(name),
    }
}

/// A header that only spells one the proxy sets with `_` for `-`
/// (`X_Real_IP`): no proxy, trusted or not, sends those, and the
/// frameworks that read headers as variables would take it for the one the
/// proxy set.
pub fn underscore_spelling(name: &str) -> bool {
    name.starts_with('x') && name.contains('_') && set_by_forwarding(name)
}

pub fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The client address as seen through `trusted` proxies.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !contains(trusted, peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','));
    let hops: Vec<&str> = hops.collect();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else { break };
        client = canonical(ip);
        if !contains(trusted, client) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_forwarded_for_past_trusted_hops() {
        let trusted = parse_cidrs(&["10.0.0.0/8".into()]).unwrap();
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, "198.51.100.1, 203.0.113.7, 10.0.0.2".parse().unwrap());
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(resolve(peer, &h, &trusted), "203.0.113.7".parse::<IpAddr>().unwrap());
        // An untrusted peer's header is ignored.
        let outsider: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(resolve(outsider, &h, &trusted), outsider);
        assert!(parse_cidrs(&["nope".into()]).is_err());
        assert!(contains(
            &parse_cidrs(&["::ffff:0:0/96".into(), "127.0.0.1".into()]).unwrap(),
            "127.0.0.1".parse().unwrap()
        ));
    }
}
