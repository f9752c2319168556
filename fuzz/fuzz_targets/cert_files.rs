//! Certificate files as stored on disk (static `NAME.crt` + `NAME.key`,
//! ACME's chain + key + account key): any bytes in them give an error,
//! never a panic.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rampart::tls::certs::{from_pem, inspect, Source};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

fuzz_target!(|data: &[u8]| {
    // Two bytes give the chain's length; the rest is the key.
    if data.len() < 2 {
        return;
    }
    let split = (usize::from(data[0]) << 8 | usize::from(data[1])).min(data.len() - 2);
    let (chain, key) = data[2..].split_at(split);
    if let Ok(loaded) = from_pem(chain, key, Source::Acme, Path::new("fuzz.example")) {
        assert!(!loaded.key.cert.is_empty());
    }
    // The ACME account key file.
    let _ = PrivatePkcs8KeyDer::from_pem_slice(key);
    // Raw DER, as a certificate's bytes reach `inspect` after PEM decoding.
    let _ = inspect(&CertificateDer::from(chain), Source::Static);
    for der in CertificateDer::pem_slice_iter(data).flatten() {
        let _ = inspect(&der, Source::Acme);
    }
});
