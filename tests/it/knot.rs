//! A real authoritative DNS server for DNS-01 tests: Knot DNS (`knotd`)
//! on a loopback port, serving `example.test` from a zone file, accepting
//! RFC 2136 updates signed with one TSIG key under an update policy (TXT
//! records at `_acme-challenge` names only). `_acme-challenge.cname` is a
//! CNAME to `delegated._acme-challenge` (a delegated validation name). Knot rather than BIND: one
//! small daemon whose whole setup is one file of explicit paths, started in
//! milliseconds from a temp directory as any user. [`Knot::start_pair`]
//! gives the zone a hidden primary and a secondary (its only NS) that
//! follows it by NOTIFY and IXFR, and that can be frozen to lag behind.

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

/// Where the zone comes from and where changes go.
#[derive(Clone, Copy)]
enum Role {
    /// Its own zone file; no transfers.
    Alone,
    /// Its own zone file; NOTIFY to and transfers for this secondary.
    Primary(SocketAddr),
    /// The zone from this primary (AXFR/IXFR on NOTIFY); no zone file.
    Secondary(SocketAddr),
}

pub struct Knot {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    /// The TSIG secret, base64.
    pub secret: String,
    role: Role,
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
    /// On a loopback port; the zone's NS is `ns.invalid.` (no address).
    pub fn start(policy: Policy) -> Knot {
        Self::start_as(closed_port(), policy, Role::Alone, "@ NS ns.invalid.\n")
    }

    /// A hidden primary on `primary` (it takes the updates, under
    /// [`Policy::AcmeChallenge`]) and a secondary on `secondary`, the
    /// zone's only name server (`ns.example.test`; so a port-53 address),
    /// holding the zone before this returns.
    pub fn start_pair(primary: SocketAddr, secondary: SocketAddr) -> (Knot, Knot) {
        let ns = format!("@ NS ns\nns A {}\n", secondary.ip());
        let p = Self::start_as(primary, Policy::AcmeChallenge, Role::Primary(secondary), &ns);
        let s = Self::start_as(secondary, Policy::AcmeChallenge, Role::Secondary(primary), &ns);
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.soa().is_empty() {
            assert!(Instant::now() < deadline, "the secondary did not get the zone:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        (p, s)
    }

    fn start_as(addr: SocketAddr, policy: Policy, role: Role, ns: &str) -> Knot {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let mut secret = [0u8; 32];
        for (i, b) in secret.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37) ^ (std::process::id() as u8);
        }
        let secret = base64::engine::general_purpose::STANDARD.encode(secret);
        let zone = format!(
            "$ORIGIN {ZONE}.\n$TTL 60\n@ SOA ns.invalid. hostmaster.{ZONE}. 1 60 60 3600 60\n\
             {ns}@ A 127.0.0.1\n* A 127.0.0.1\n\
             _acme-challenge.cname CNAME delegated._acme-challenge\n"
        );
        if !matches!(role, Role::Secondary(_)) {
            std::fs::write(dir.path().join("zone"), zone).unwrap();
        }
        let mut k = Knot { dir, addr, secret, role, child: None };
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
        let (remote, transfer) = match self.role {
            Role::Alone => (String::new(), ""),
            Role::Primary(to) => {
                (format!("remote:\n  - id: other\n    address: {}@{}\n", to.ip(), to.port()), "    notify: other\n")
            }
            Role::Secondary(from) => {
                (format!("remote:\n  - id: other\n    address: {}@{}\n", from.ip(), from.port()), "    master: other\n")
            }
        };
        let conf = format!(
            "server:\n    listen: {ip}@{port}\n    rundir: {d}\n    pidfile: {d}/knot.pid\n\
             control:\n    listen: {d}/knot.sock\n\
             database:\n    storage: {d}\n\
             log:\n  - target: stderr\n    any: info\n\
             key:\n  - id: {KEY}\n    algorithm: hmac-sha256\n    secret: {secret}\n\
             {remote}\
             acl:\n  - id: acme\n    key: {KEY}\n    action: update\n    update-type: TXT\n\
             \x20   update-owner: name\n    update-owner-match: sub-or-equal\n    update-owner-name: {owner}\n\
             \x20 - id: transfer\n    address: 127.0.0.0/8\n    action: [transfer, notify]\n\
             zone:\n  - domain: {ZONE}\n    storage: {d}\n    file: zone\n    acl: [acme, transfer]\n\
             \x20   zonefile-sync: -1\n{transfer}",
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
        self.short(name, "TXT").into_iter().map(|l| l.trim_matches('"').to_string()).collect()
    }

    /// The zone's SOA as the server answers it now (none while it has no zone).
    pub fn soa(&self) -> Vec<String> {
        self.short(ZONE, "SOA")
    }

    fn short(&self, name: &str, rtype: &str) -> Vec<String> {
        let out = Command::new("kdig")
            .args([&format!("@{}", self.addr.ip()), "-p", &self.addr.port().to_string(), name, rtype, "+short"])
            .output()
            .expect("kdig (Debian knot-dnsutils) is needed");
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }

    /// Stop taking zone changes (a secondary: transfers wait) until [`Knot::thaw`].
    pub fn freeze(&self) {
        self.control("zone-freeze");
    }

    pub fn thaw(&self) {
        self.control("zone-thaw");
    }

    fn control(&self, command: &str) {
        let socket = self.dir.path().join("knot.sock");
        let out = Command::new("knotc")
            .arg("-s")
            .arg(&socket)
            .args([command, ZONE])
            .output()
            .expect("knotc (Debian knot) is needed");
        assert!(out.status.success(), "knotc {command}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        self.stop();
    }
}
