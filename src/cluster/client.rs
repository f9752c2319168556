//! The Redis client made from `[cluster] redis`: the URL as written, the
//! password from [`PASSWORD_ENV`] when the URL has none, and for
//! `rediss://` the roots the server's certificate is checked against
//! (rustls with aws-lc-rs, through the redis crate's `tokio-rustls-comp`).
//! Without [`CA_FILE_ENV`] those are the system's roots (as
//! rustls-native-certs finds them; `SSL_CERT_FILE` / `SSL_CERT_DIR`
//! override them); with it, only the certificates in that PEM file (a
//! private CA, or a self-signed Redis certificate). Verification is never
//! turned off: the redis crate's `#insecure` URL fragment is refused.

use std::ffi::OsString;
use std::path::Path;

use redis::{ConnectionAddr, IntoConnectionInfo, TlsCertificates};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::StoreError;

/// Environment variable holding the Redis password when the URL has none.
pub const PASSWORD_ENV: &str = "RAMPART_REDIS_PASSWORD";
/// Environment variable naming a PEM file: with `rediss://`, the only
/// roots trusted for the Redis server's certificate.
pub const CA_FILE_ENV: &str = "RAMPART_REDIS_CA_FILE";

/// The client for `url`, with the password and CA file from the environment.
pub(super) fn from_env(url: &str) -> Result<redis::Client, StoreError> {
    build(url, std::env::var(PASSWORD_ENV).ok(), std::env::var_os(CA_FILE_ENV))
}

fn build(url: &str, password: Option<String>, ca_file: Option<OsString>) -> Result<redis::Client, StoreError> {
    let mut info = url.into_connection_info()?;
    if info.redis.password.is_none() {
        info.redis.password = password.filter(|p| !p.is_empty());
    }
    let ca_file = ca_file.filter(|p| !p.is_empty());
    let insecure = match &info.addr {
        ConnectionAddr::TcpTls { insecure, .. } => *insecure,
        _ => {
            if let Some(path) = ca_file {
                let path = Path::new(&path).display();
                return Err(StoreError::Config(format!(
                    "{CA_FILE_ENV}={path} is set but the [cluster] redis URL is not rediss://: \
                     nothing would be encrypted"
                )));
            }
            return Ok(redis::Client::open(info)?);
        }
    };
    if insecure {
        return Err(StoreError::Config(format!(
            "the [cluster] redis URL's #insecure fragment is not supported: the server's certificate \
             is always verified (name a PEM file with its CA in {CA_FILE_ENV})"
        )));
    }
    let Some(path) = ca_file else { return Ok(redis::Client::open(info)?) };
    let root_cert = read_roots(Path::new(&path))?;
    Ok(redis::Client::build_with_tls(info, TlsCertificates { client_tls: None, root_cert: Some(root_cert) })?)
}

/// The PEM file's bytes, once it is known to hold at least one certificate
/// (an empty trust store would fail every handshake with a vaguer error).
fn read_roots(path: &Path) -> Result<Vec<u8>, StoreError> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| StoreError::Config(format!("{CA_FILE_ENV}={shown}: {e}")))?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        if let Err(e) = cert {
            return Err(StoreError::Config(format!("{CA_FILE_ENV}={shown}: {e}")));
        }
        count += 1;
    }
    if count == 0 {
        return Err(StoreError::Config(format!("{CA_FILE_ENV}={shown}: no PEM certificate in the file")));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem(dir: &Path) -> OsString {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["redis.test".to_string()]).unwrap().self_signed(&key).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        path.into_os_string()
    }

    /// Whether the client carries roots of its own (the redis crate keeps them in the address).
    fn tls_params_set(client: &redis::Client) -> bool {
        matches!(client.get_connection_info().addr, ConnectionAddr::TcpTls { tls_params: Some(_), .. })
    }

    #[test]
    fn the_password_fills_in_only_when_the_url_has_none() {
        let c = build("redis://127.0.0.1:6379/0", Some("env-pw".into()), None).unwrap();
        assert_eq!(c.get_connection_info().redis.password.as_deref(), Some("env-pw"));
        let c = build("redis://:url-pw@127.0.0.1:6379/0", Some("env-pw".into()), None).unwrap();
        assert_eq!(c.get_connection_info().redis.password.as_deref(), Some("url-pw"));
        let c = build("redis://127.0.0.1:6379/0", Some(String::new()), None).unwrap();
        assert_eq!(c.get_connection_info().redis.password, None);
        let c = build("rediss://127.0.0.1:6380/0", Some("env-pw".into()), None).unwrap();
        assert_eq!(c.get_connection_info().redis.password.as_deref(), Some("env-pw"));
    }

    #[test]
    fn rediss_trusts_the_ca_file_when_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_pem(dir.path());
        let c = build("rediss://127.0.0.1:6380/0", None, Some(ca)).unwrap();
        assert!(matches!(c.get_connection_info().addr, ConnectionAddr::TcpTls { insecure: false, .. }));
        assert!(tls_params_set(&c), "{:?}", c.get_connection_info().addr);
        let c = build("rediss://127.0.0.1:6380/0", None, None).unwrap();
        assert!(!tls_params_set(&c), "system roots: no roots of our own");
    }

    #[test]
    fn a_ca_file_that_cannot_be_used_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = build("rediss://127.0.0.1:6380/0", None, Some(missing.clone().into())).unwrap_err().to_string();
        assert!(err.contains(CA_FILE_ENV) && err.contains(&missing.display().to_string()), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = build("rediss://127.0.0.1:6380/0", None, Some(empty.into())).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let ca = ca_pem(dir.path());
        let err = build("redis://127.0.0.1:6379/0", None, Some(ca)).unwrap_err().to_string();
        assert!(err.contains("not rediss://"), "{err}");
    }

    #[test]
    fn the_insecure_fragment_is_refused() {
        let err = build("rediss://127.0.0.1:6380/0#insecure", None, None).unwrap_err().to_string();
        assert!(err.contains("#insecure"), "{err}");
    }
}
