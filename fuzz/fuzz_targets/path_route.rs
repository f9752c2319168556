//! Request paths and hosts from the network, normalised and routed:
//! never panics; a normalised path is stable (normalising it again changes
//! nothing), has no empty, `.` or `..` segment, and is routed to the route
//! whose prefix it starts with on a segment boundary, as a guard on that
//! prefix expects.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart::config::HostPattern;
use rampart::router::{normalize_host, normalize_path, Router};

fn router() -> Router<&'static str> {
    let mut r = Router::default();
    r.insert(&HostPattern::Any, "/", "root");
    r.insert(&HostPattern::Any, "/admin/", "admin");
    r.insert(&HostPattern::Any, "/api", "api");
    r.insert(&HostPattern::Exact("shop.example".into()), "/", "shop");
    r.insert(&HostPattern::Wildcard(".example".into()), "/", "wild-root");
    r.insert(&HostPattern::Wildcard(".example".into()), "/admin", "wild-admin");
    r
}

/// Whether `path` is `prefix` or starts with `prefix/` (ASCII case ignored).
fn under(path: &str, prefix: &str) -> bool {
    let p = path.as_bytes();
    p.len() >= prefix.len()
        && p[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        && (p.len() == prefix.len() || p[prefix.len()] == b'/')
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    // The first line is the host, the rest the path.
    let (host, path) = s.split_once('\n').unwrap_or(("x", s));
    let _ = normalize_host(host);
    let Ok(p) = normalize_path(path) else { return };
    if !path.starts_with('/') {
        return;
    }
    assert_eq!(normalize_path(&p).ok().as_deref(), Some(&*p), "not stable");
    assert!(p.starts_with('/'));
    let inner = p.strip_suffix('/').unwrap_or(&p);
    for seg in inner.split('/').skip(1) {
        assert!(!seg.is_empty() && seg != "." && seg != "..", "segment {seg:?} left in {p:?}");
    }
    // The proxy answers 400 to a host with an empty label before routing
    // (`proxy::host::well_formed`), so the router never sees one.
    if host.starts_with('.') || host.contains("..") {
        return;
    }
    let r = router();
    let m = r.lookup(host, &p).expect("a route for / always matches");
    let host_n = normalize_host(host);
    if *host_n == *"shop.example" {
        assert_eq!(*m.value, "shop");
    } else if host_n.ends_with(".example") && host_n.len() > ".example".len() {
        if under(&p, "/admin") && p.starts_with("/admin") {
            assert_eq!(*m.value, "wild-admin", "{host:?} {p:?}");
        } else if !under(&p, "/admin") {
            assert_eq!(*m.value, "wild-root", "{host:?} {p:?}");
        }
    } else if under(&p, "/admin") && p.starts_with("/admin") {
        assert_eq!(*m.value, "admin", "{p:?} slipped past the /admin/ route");
    } else if under(&p, "/api") && p.starts_with("/api") {
        assert_eq!(*m.value, "api", "{p:?}");
    }
});
