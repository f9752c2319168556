//! A real authoritative DNS server for DNS-01 tests: Knot DNS (`knotd`)
//! on a loopback port, serving `example.test` from a zone file, accepting
//! RFC 2136 updates signed with one TSIG key under an update policy (TXT
//! records at `_acme-challenge` names only). `_acme-challenge.cname` is a
//! CNAME to `delegated._acme-challenge` (a delegated validation name). Knot rather than BIND: one
//! small daemon whose whole setup is one file of explicit paths, started in
//! milliseconds from a temp directory as any user.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::closed_port;

pub const ZONE: &str = "example.test";
pub const KEY: &str = "rampart.";

/// What the update policy lets the key change.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// TXT records at `_acme-challenge.example.test` and below.
    AcmeChallenge,
    /// Nothing the proxy writes (only `_other.example.test`): every update is refused.
    Refuse,
}

pub struct Knot {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    /// The TSIG secret, base64.
    pub secret: String,
    child: Option<Child>,
}

fn knotd() -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin"] {
        let p = PathBuf::from(dir).join("knotd");
        if p.exists() {
            return p;
        }
    }
    panic!("knotd not found: install the Debian package `knot` (scripts/test does)");
}

impl Knot {
    pub fn start(policy: Policy) -> Knot {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let mut secret = [0u8; 32];
        for (i, b) in secret.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37) ^ (std::process::id() as u8);
        }
        let secret = base64::engine::general_purpose::STANDARD.encode(secret);
        let zone = format!(
            "$ORIGIN {ZONE}.\n$TTL 60\n@ SOA ns.invalid. hostmaster.{ZONE}. 1 60 60 3600 60\n\
             @ NS ns.invalid.\n@ A 127.0.0.1\n* A 127.0.0.1\n\
             _acme-challenge.cname CNAME delegated._acme-challenge\n"
        );
        std::fs::write(dir.path().join("zone"), zone).unwrap();
        let mut k = Knot { dir, addr: closed_port(), secret, child: None };
        k.restart(policy);
        k
    }

    /// (Re)start knotd with `policy`; the zone starts from its file again.
    pub fn restart(&mut self, policy: Policy) {
        self.stop();
        let d = self.dir.path().display().to_string();
        let owner = match policy {
            Policy::AcmeChallenge => "_acme-challenge",
            Policy::Refuse => "_other",
        };
        let conf = format!(
            "server:\n    listen: {ip}@{port}\n    rundir: {d}\n    pidfile: {d}/knot.pid\n\
             control:\n    listen: {d}/knot.sock\n\
             database:\n    storage: {d}\n\
             log:\n  - target: stderr\n    any: info\n\
             key:\n  - id: {KEY}\n    algorithm: hmac-sha256\n    secret: {secret}\n\
             acl:\n  - id: acme\n    key: {KEY}\n    action: update\n    update-type: TXT\n\
             \x20   update-owner: name\n    update-owner-match: sub-or-equal\n    update-owner-name: {owner}\n\
             zone:\n  - domain: {ZONE}\n    storage: {d}\n    file: zone\n    acl: acme\n    zonefile-sync: -1\n",
            ip = self.addr.ip(),
            port = self.addr.port(),
            secret = self.secret,
        );
        let _ = std::fs::remove_dir_all(self.dir.path().join("journal"));
        let conf_path = self.dir.path().join("knot.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("knot.log")).unwrap();
        let child = Command::new(knotd())
            .arg("-c")
            .arg(&conf_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("cannot run knotd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let started = self.log().matches("server started").count() + 1;
        while self.log().matches("server started").count() < started {
            assert!(Instant::now() < deadline, "knotd did not start:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knot.log")).unwrap_or_default()
    }

    /// The TXT values at `name` as the server answers them now.
    pub fn txt(&self, name: &str) -> Vec<String> {
        let out = Command::new("kdig")
            .args([&format!("@{}", self.addr.ip()), "-p", &self.addr.port().to_string(), name, "TXT", "+short"])
            .output()
            .expect("kdig (Debian knot-dnsutils) is needed");
        String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim_matches('"').to_string()).collect()
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        self.stop();
    }
}
