//! Certificates as the TLS layer serves them: PEM chain + key parsed into a
//! rustls `CertifiedKey`, with the facts the rest of the proxy needs (names
//! from the SANs, expiry, serial). Static certificates are read from
//! `tls.certs_dir` (`NAME.crt` full chain + `NAME.key`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Static,
    Acme,
    SelfSigned,
}

/// What we know about one loaded certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// DNS names from the subjectAltName extension, lower-case; wildcards
    /// kept as `*.example.com`.
    pub names: Vec<String>,
    /// Validity, as Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// `not_after` as RFC 3339 UTC.
    pub not_after_text: String,
    /// Serial number, hex.
    pub serial: String,
    pub source: Source,
}

/// A certificate ready to be served.
#[derive(Debug)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// The crypto provider used everywhere: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Parse a PEM chain and PEM key (PKCS#8, PKCS#1 or SEC1). `what` names the
/// origin for error messages.
pub fn from_pem(chain_pem: &[u8], key_pem: &[u8], source: Source, what: &Path) -> Result<Loaded, TlsError> {
    let bad = |message: String| TlsError::BadCert { path: what.to_path_buf(), message };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("cannot parse certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(bad("no certificate found in the PEM data".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad(format!("cannot parse private key PEM: {e}")))?;
    let certified = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| bad(format!("certificate and key do not fit together: {e}")))?;
    let info = inspect(&certified.cert[0], source).map_err(bad)?;
    Ok(Loaded { key: Arc::new(certified), info })
}

/// Names, validity and serial of a DER certificate.
pub fn inspect(der: &CertificateDer<'_>, source: Source) -> Result<CertInfo, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| format!("cannot parse certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        // Old certificates name the host only in the subject CN.
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    let validity = cert.validity();
    let t = validity.not_after.to_datetime();
    let not_after_text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    Ok(CertInfo {
        names,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        not_after_text,
        serial: cert.raw_serial_as_string().replace(':', ""),
        source,
    })
}

/// Seconds since the epoch, as a certificate's `not_after` is kept (0 for
/// a clock before it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Read every `NAME.crt` + `NAME.key` pair in `dir` (not recursive). A
/// missing directory is no error (ACME may create it); a `.crt` whose key is
/// missing or unreadable is, naming the file.
pub fn load_dir(dir: &Path) -> Result<Vec<Loaded>, TlsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(TlsError::Read { path: dir.to_path_buf(), source }),
    };
    let mut crts: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "crt"))
        .collect();
    crts.sort();
    let read = |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source });
    let mut out = Vec::with_capacity(crts.len());
    for crt in crts {
        let key_path = crt.with_extension("key");
        let chain = read(&crt)?;
        let key = read(&key_path)?;
        // A key that does not parse is named as the key file, not its pair.
        if let Err(e) = PrivateKeyDer::from_pem_slice(&key) {
            return Err(TlsError::BadCert { path: key_path, message: format!("cannot parse private key PEM: {e}") });
        }
        let loaded = from_pem(&chain, &key, Source::Static, &crt)?;
        if loaded.info.names.is_empty() {
            return Err(TlsError::BadCert {
                path: crt,
                message: "certificate names no DNS host (no subjectAltName dNSName)".into(),
            });
        }
        if loaded.info.not_after <= unix_now() {
            tracing::warn!(
                path = %crt.display(),
                names = ?loaded.info.names,
                not_after = %loaded.info.not_after_text,
                "static certificate has expired: a valid one for its names (ACME's) is served before it"
            );
        }
        out.push(loaded);
    }
    Ok(out)
}

#[cfg(test)]
mod load_dir_tests {
    use super::*;

    /// A key file that does not parse is named in the error, not the
    /// certificate beside it.
    #[test]
    fn a_broken_key_is_named_as_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        std::fs::write(dir.path().join("a.test.crt"), cert.cert.pem()).unwrap();
        std::fs::write(dir.path().join("a.test.key"), "garbage").unwrap();
        let e = load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("a.test.key") && e.contains("private key"), "{e}");
        std::fs::write(dir.path().join("a.test.key"), cert.signing_key.serialize_pem()).unwrap();
        assert_eq!(load_dir(dir.path()).unwrap()[0].info.names, ["a.test"]);
    }
}
