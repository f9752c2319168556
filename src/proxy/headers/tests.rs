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
    for end_to_end in ["content-type", "cookie", "te-x", "trailers", "upgrade-insecure-requests", "proxy", "", "k"] {
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

/// The lines written straight into an untrusted client's upstream head are
/// what `add_forwarded` sets in the map once the client's claims are gone,
/// and the map keeps none of what the client said of them.
#[test]
fn untrusted_lines_are_what_add_forwarded_sets_without_claims() {
    let (host, ip) = (HeaderValue::from_static("a.example"), ip_header_value("192.0.2.7".parse().unwrap()));
    let f = Forwarded { host_header: &host, client_ip: &ip, proto: "http", trusted: false };
    let client_said = || {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.9.9.9"));
        h.insert(&X_REAL_IP, HeaderValue::from_static("10.9.9.9"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        h
    };
    let mut added = client_said();
    strip_untrusted_forwarding(&mut added);
    add_forwarded(&mut added, &f);
    let mut direct = client_said();
    let lines = untrusted_forwarding_lines(&mut direct, &f);
    assert_eq!(direct.keys().collect::<Vec<_>>(), [header::ACCEPT], "only what the proxy does not set is left");
    for (name, value) in lines {
        assert_eq!(added.get_all(name).iter().map(|v| v.as_bytes()).collect::<Vec<_>>(), [value], "{name}");
    }
    assert_eq!(lines.len() + direct.len(), added.len());
}

#[test]
fn connection_cannot_remove_what_the_proxy_owns() {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONNECTION,
        HeaderValue::from_static("host, x-forwarded-for, x-real-ip, x-request-id, content-length, forwarded, x-hop"),
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
