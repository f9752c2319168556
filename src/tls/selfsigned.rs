//! Certificates we make ourselves with rcgen: the self-signed fallback (for
//! `rampart demo` and hosts with no certificate) and the TLS-ALPN-01
//! challenge certificate carrying the acmeIdentifier extension (RFC 8737).

use std::path::Path;
use std::sync::Arc;

use rcgen::{CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair};
use rustls::sign::CertifiedKey;

use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::certs::{from_pem, provider, Loaded, Source};
use super::TlsError;

fn gen_err(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// A self-signed ECDSA P-256 certificate for `names`.
pub fn self_signed(names: &[String]) -> Result<Loaded, TlsError> {
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(gen_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Rampart self-signed");
    params.distinguished_name = dn;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes(), Source::SelfSigned, Path::new("<self-signed>"))
}

/// The TLS-ALPN-01 answer for `domain`: a self-signed certificate whose
/// acmeIdentifier extension holds the SHA-256 of the key authorization.
pub fn alpn_challenge(domain: &str, key_auth_digest: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut params = CertificateParams::new(vec![domain.to_string()]).map_err(gen_err)?;
    params.distinguished_name = DistinguishedName::new();
    params.custom_extensions.push(CustomExtension::new_acme_identifier(key_auth_digest));
    let cert = params.self_signed(&key).map_err(gen_err)?;
    // Not `CertifiedKey::from_der`: its consistency check parses the
    // certificate with webpki, which refuses the critical acmeIdentifier.
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = provider().key_provider.load_private_key(key_der)?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing)))
}
