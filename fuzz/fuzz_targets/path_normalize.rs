//! Request paths and hosts from the network: normalisation never panics,
//! and a normalised path is stable (normalising it again changes nothing).
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart::router::{normalize_host, normalize_path};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = normalize_host(s);
        if let Ok(p) = normalize_path(s) {
            if s.starts_with('/') {
                assert_eq!(normalize_path(&p).ok().as_deref(), Some(&*p));
            }
        }
    }
});
