//! TLS test helpers: certificates made with rcgen, and a rustls client that
//! reports what the server presented (certificate, ALPN, version,
//! resumption), either verifying against given roots or accepting anything;
//! a small CA ([`TestCa`]) for peers whose chain must verify.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::any_certificate::AnyCertificate;

/// Write `NAME.crt` + `NAME.key` (self-signed) into `dir`; `rsa` picks RSA
/// 2048 instead of ECDSA P-256.
pub fn write_cert(dir: &Path, name: &str, sans: &[&str], rsa: bool) {
    let key = if rsa {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap()
    } else {
        rcgen::KeyPair::generate().unwrap()
    };
    let params = rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client config: verifying against `roots` when given, else accepting
/// any certificate.
pub fn client_config(roots: Option<&[CertificateDer<'static>]>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    client_config_for(rustls::DEFAULT_VERSIONS, roots, alpn)
}

/// The same, offering only the protocol `versions` given.
pub fn client_config_for(
    versions: &[&'static rustls::SupportedProtocolVersion],
    roots: Option<&[CertificateDer<'static>]>,
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider()).with_protocol_versions(versions).unwrap();
    let mut cfg = match roots {
        Some(roots) => {
            let mut store = RootCertStore::empty();
            for r in roots {
                store.add(r.clone()).unwrap();
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// What a completed handshake showed.
#[derive(Debug)]
pub struct Handshake {
    pub cert: CertificateDer<'static>,
    pub info: rampart::tls::certs::CertInfo,
    pub alpn: Option<Vec<u8>>,
    pub resumed: bool,
}

impl Handshake {
    /// Does the presented certificate carry an RSA key?
    pub fn is_rsa(&self) -> bool {
        let (_, c) = x509_parser::parse_x509_certificate(self.cert.as_ref()).unwrap();
        c.public_key().algorithm.algorithm.to_id_string() == "1.2.840.113549.1.1.1"
    }
}

pub async fn handshake_with(cfg: Arc<ClientConfig>, addr: SocketAddr, sni: &str) -> Result<Handshake, String> {
    let connector = tokio_rustls::TlsConnector::from(cfg);
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let mut s = tokio::time::timeout(std::time::Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (_, conn) = s.get_ref();
    let cert = conn.peer_certificates().ok_or("no certificate")?[0].clone().into_owned();
    let hs = Handshake {
        info: rampart::tls::certs::inspect(&cert, rampart::tls::certs::Source::Static)?,
        cert,
        alpn: conn.alpn_protocol().map(|p| p.to_vec()),
        resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
    };
    // Read once so TLS 1.3 session tickets arrive before we close.
    use tokio::io::AsyncWriteExt;
    let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    let mut buf = Vec::new();
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(&mut s, &mut buf))
            .await;
    Ok(hs)
}

/// One handshake, accepting any certificate, offering h2 and http/1.1.
pub async fn handshake(addr: SocketAddr, sni: &str) -> Result<Handshake, String> {
    handshake_with(client_config(None, &[b"h2", b"http/1.1"]), addr, sni).await
}

/// Run curl with `args` off the async runtime (the test's upstreams run on
/// it); returns (exit ok, stdout, stderr).
pub async fn curl(args: &[&str]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl").args(["-sS", "--max-time", "20"]).args(&args).output()
    })
    .await
    .unwrap()
    .expect("curl is needed for these tests (scripts/test installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A certificate authority for tests: a self-signed root (ECDSA P-256)
/// that issues server certificates, for peers that must verify a chain.
pub struct TestCa {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

impl TestCa {
    pub fn new(common_name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        TestCa { params, key, cert }
    }

    /// The root certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `sans` (names or IP addresses) and its
    /// private key, both PEM.
    pub fn issue(&self, sans: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, sans[0]);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}
