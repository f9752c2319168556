//! A real ACME CA for the tests: Pebble with its own HTTPS certificate
//! (made here with rcgen) and pebble-challtestsrv as the DNS server that
//! answers 127.0.0.1 for every name. Pebble validates challenges against
//! the ports the proxy under test listens on. All ports come from
//! `closed_port`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::closed_port;

pub struct Pebble {
    pub dir: tempfile::TempDir,
    pub listen: SocketAddr,
    pub mgmt: SocketAddr,
    /// Pebble's HTTPS certificate: the proxy's `ca_cert`.
    pub cert: PathBuf,
    config: PathBuf,
    /// The DNS server Pebble asks: challtestsrv's, or the test's own.
    pub dns: SocketAddr,
    /// challtestsrv's DNS server and management API (`/set-txt`, `/clear-txt`).
    pub challtest_dns: SocketAddr,
    pub challtest_mgmt: SocketAddr,
    pebble: Option<Child>,
    challtest: Child,
}

fn which(bin: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = PathBuf::from(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("{bin} not found: install the Debian package `pebble` (scripts/test does)");
}

fn wait_port(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Pebble {
    /// Start challtestsrv and Pebble; Pebble validates HTTP-01 on
    /// `http_port` and TLS-ALPN-01 on `tls_port` of 127.0.0.1, and asks
    /// `dns_server` (an authoritative server the test runs), else
    /// challtestsrv, for DNS-01.
    pub fn start_with_dns(http_port: u16, tls_port: u16, dns_server: Option<SocketAddr>) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_path = dir.path().join("pebble.crt");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(dir.path().join("pebble.key"), key.serialize_pem()).unwrap();
        let (listen, mgmt, dns, dns_mgmt) = (closed_port(), closed_port(), closed_port(), closed_port());
        let config = dir.path().join("pebble.json");
        let json = serde_json::json!({"pebble": {
            "listenAddress": listen.to_string(),
            "managementListenAddress": mgmt.to_string(),
            "certificate": cert_path,
            "privateKey": dir.path().join("pebble.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(&config, json.to_string()).unwrap();
        let challtest = Command::new(which("pebble-challtestsrv"))
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &dns.to_string(), "-management", &dns_mgmt.to_string()])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run pebble-challtestsrv");
        wait_port(dns_mgmt, "pebble-challtestsrv");
        let mut p = Pebble {
            dir,
            listen,
            mgmt,
            cert: cert_path,
            config,
            dns: dns_server.unwrap_or(dns),
            challtest_dns: dns,
            challtest_mgmt: dns_mgmt,
            pebble: None,
            challtest,
        };
        p.restart();
        p
    }

    /// (Re)start Pebble on the same ports; a new instance has a new root.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(self.dir.path().join("pebble.log")).unwrap();
        let child = Command::new(which("pebble"))
            .arg("-config")
            .arg(&self.config)
            .args(["-dnsserver", &self.dns.to_string()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Every order validates: a renewal must show its challenges work.
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot run pebble");
        self.pebble = Some(child);
        wait_port(self.listen, "pebble");
        wait_port(self.mgmt, "pebble management");
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn directory(&self) -> String {
        format!("https://{}/dir", self.listen)
    }

    /// The root that signs this instance's certificates (management API).
    pub async fn root(&self) -> rustls::pki_types::CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        let url = format!("https://{}/roots/0", self.mgmt);
        let cacert = self.cert.display().to_string();
        let (ok, pem, err) = crate::tls_util::curl(&["--cacert", &cacert, &url]).await;
        assert!(ok, "cannot fetch Pebble's root: {err}");
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// Orders Pebble created (not requests: a POST Pebble refused with
    /// badNonce, as it does to 5% of them, is sent again).
    pub fn orders(&self) -> usize {
        self.log().lines().filter(|l| l.contains("Added order \"")).count()
    }

    /// The proxy's name for this CA's state (its directory's address).
    pub fn slug(&self) -> String {
        self.listen.to_string().replace(':', "_")
    }

    /// Where a proxy with `certs_dir` keeps `name` for this CA.
    pub fn stored(&self, certs_dir: &Path, name: &str) -> PathBuf {
        certs_dir.join("acme").join(self.slug()).join(name)
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = self.challtest.kill();
        let _ = self.challtest.wait();
    }
}
