//! Header rewriting on any header list a client can send: never panics;
//! afterwards no hop-by-hop header is left, every end-to-end header the
//! client's `Connection` did not name is still there with its values in
//! order, and the forwarding headers are the proxy's.
#![no_main]
use std::net::{IpAddr, Ipv4Addr};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use rampart::proxy::headers::{add_forwarded, ip_header_value, strip_hop_by_hop, Forwarded};

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
];

fuzz_target!(|data: &[u8]| {
    // "name: value" lines; lines that are not a valid header are skipped.
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    let named: Vec<String> = headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()).collect::<Vec<_>>())
        .collect();
    let before = headers.clone();
    let upgrade = strip_hop_by_hop(&mut headers);
    for name in HOP_BY_HOP {
        assert!(!headers.contains_key(name), "{name} survived");
    }
    assert!(headers.keys().all(|k| !k.as_str().starts_with("proxy-")));
    if upgrade.is_some() {
        assert!(named.iter().any(|t| t == "upgrade"));
    }
    for name in before.keys() {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || n.starts_with("proxy-") || named.iter().any(|t| t == n) {
            continue;
        }
        let kept: Vec<_> = headers.get_all(name).iter().collect();
        let sent: Vec<_> = before.get_all(name).iter().collect();
        assert_eq!(kept, sent, "{n} was changed though nothing named it");
    }

    let host = before.get("host").cloned().unwrap_or(HeaderValue::from_static("example.com"));
    let client_ip = ip_header_value(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    add_forwarded(
        &mut headers,
        &Forwarded { host_header: &host, trusted: false, client_ip: &client_ip, proto: "https" },
    );
    assert_eq!(headers.get_all("x-forwarded-proto").iter().count(), 1);
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(headers.get_all("x-real-ip").iter().count(), 1);
    assert_eq!(headers["x-real-ip"], "192.0.2.7");
    let xff: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
    assert!(xff.last().is_some_and(|v| v.as_bytes().ends_with(b"192.0.2.7")), "{xff:?}");
});
