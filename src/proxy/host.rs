//! The request's host: which of `Host` and the URI's authority counts, and
//! whether it is well-formed. The route is chosen by this host and the
//! upstream is sent this host, so the two can never disagree: otherwise a
//! route's `ip_allow` or `basic_auth` could be passed by asking another
//! route for the same backend.

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Authority;

use super::error::ProxyError;

/// The host a request is for, and whether its `Host` header must be set to
/// it (absent, or naming another host than an absolute-form target).
pub struct RequestHost {
    pub value: HeaderValue,
    pub set_header: bool,
}

/// The request's host, or `BadHost` (400) for two `Host` headers (RFC 9112
/// 3.2), for none at all, or for one that is not a host name, IPv4 or
/// bracketed IPv6 address with an optional port ([`well_formed`]).
///
/// The URI's authority wins over `Host`, which is then rewritten to match:
/// an HTTP/1 absolute-form target (`GET http://a/ HTTP/1.1`, RFC 9112
/// 3.2.2, as nginx does), and HTTP/2's `:authority`. RFC 9113 8.3.1 lets a
/// server refuse an HTTP/2 request whose `Host` differs instead; Go's
/// server, behind Traefik and Caddy, takes `:authority` as this does, and
/// some clients (hyper's, given a `Host` header) send both.
pub fn request_host(authority: Option<&Authority>, headers: &HeaderMap) -> Result<RequestHost, ProxyError> {
    let mut host_headers = headers.get_all(header::HOST).iter();
    let host_header = host_headers.next();
    if host_headers.next().is_some() {
        return Err(ProxyError::BadHost);
    }
    let found = match (authority, host_header) {
        (Some(a), Some(h)) if h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) => {
            RequestHost { value: h.clone(), set_header: false }
        }
        (Some(a), _) => {
            RequestHost { value: HeaderValue::from_str(a.as_str()).map_err(|_| ProxyError::BadHost)?, set_header: true }
        }
        (None, Some(h)) => RequestHost { value: h.clone(), set_header: false },
        (None, None) => return Err(ProxyError::BadHost),
    };
    if !well_formed(found.value.as_bytes()) {
        return Err(ProxyError::BadHost);
    }
    Ok(found)
}

/// `host[:port]` where host is a name of letters, digits, `-`, `_` and
/// dots (not leading, never two in a row; an IPv4 address is one too), or
/// an IPv6 address in brackets, and port is digits. Stricter than RFC
/// 3986's reg-name, which also allows `!$&'()*+,;=~` and `%`-escapes:
/// nothing routable uses them, and each is a way to make a proxy and a
/// backend read a host differently.
pub fn well_formed(host: &[u8]) -> bool {
    match host.first() {
        None | Some(b'.' | b'-' | b':') => false,
        Some(b'[') => match host.iter().position(|&b| b == b']') {
            Some(end) => {
                let inside = &host[1..end];
                !inside.is_empty()
                    && inside.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                    && inside.contains(&b':')
                    && port_ok(&host[end + 1..])
            }
            None => false,
        },
        // One pass: every request's host comes through here.
        Some(_) => {
            let mut after_dot = false;
            for (i, &b) in host.iter().enumerate() {
                match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => after_dot = false,
                    b'.' if !after_dot => after_dot = true,
                    b':' => return port_ok(&host[i..]),
                    _ => return false,
                }
            }
            true
        }
    }
}

/// Nothing, or `:` and a port number (at most 65535; empty is allowed,
/// as RFC 3986's `port = *DIGIT` is).
fn port_ok(port: &[u8]) -> bool {
    match port.split_first() {
        None => true,
        Some((b':', digits)) => {
            digits.len() <= 5
                && digits.iter().all(u8::is_ascii_digit)
                && digits.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 65535
        }
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_addresses_and_ports_are_well_formed() {
        for ok in [
            "app.test",
            "App.Test:8080",
            "localhost",
            "my_host",
            "a-b.c",
            "app.test.",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "[2001:db8::1]",
            "[::ffff:10.0.0.1]",
            "app.test:",
        ] {
            assert!(well_formed(ok.as_bytes()), "{ok}");
        }
    }

    #[test]
    fn anything_else_is_not() {
        for bad in [
            "",
            "app test",
            "a@app.test",
            "app.test:99999",
            "app.test:65536",
            "app.test:abc",
            "app.test:123456",
            "app.test/x",
            "app.test?x",
            "app.test#x",
            "app.test, other",
            "app.test,other",
            "-app.test",
            ".app.test",
            "app..test",
            "app.test\\x",
            "%61pp.test",
            "[::1",
            "[]",
            "[zz::1]",
            "[::1]x",
            "[::1]:x",
            ":80",
            "a:b:c",
        ] {
            assert!(!well_formed(bad.as_bytes()), "{bad:?}");
        }
    }

    fn headers(hosts: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(header::HOST, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn host(authority: Option<&str>, hosts: &[&str]) -> Result<(String, bool), ProxyError> {
        let authority = authority.map(|a| a.parse::<Authority>().unwrap());
        request_host(authority.as_ref(), &headers(hosts)).map(|h| (h.value.to_str().unwrap().to_owned(), h.set_header))
    }

    #[test]
    fn one_host_header_is_the_host() {
        assert_eq!(host(None, &["app.test"]), Ok(("app.test".into(), false)));
        assert_eq!(host(None, &[]), Err(ProxyError::BadHost));
        assert_eq!(host(None, &["a@app.test"]), Err(ProxyError::BadHost));
    }

    #[test]
    fn two_host_headers_are_refused_even_when_equal() {
        assert_eq!(host(None, &["other", "app.test"]), Err(ProxyError::BadHost));
        assert_eq!(host(None, &["app.test", "app.test"]), Err(ProxyError::BadHost));
        assert_eq!(host(Some("app.test"), &["app.test", "x"]), Err(ProxyError::BadHost));
    }

    #[test]
    fn the_authority_overrides_and_rewrites_host() {
        assert_eq!(host(Some("other"), &["app.test"]), Ok(("other".into(), true)));
        assert_eq!(host(Some("other"), &[]), Ok(("other".into(), true)));
        assert_eq!(host(Some("Other"), &["other"]), Ok(("other".into(), false)));
        assert_eq!(host(Some("u@other"), &["app.test"]), Err(ProxyError::BadHost));
    }
}
