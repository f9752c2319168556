//! A real Redis for the cluster tests: Debian's `redis-server` on a
//! loopback port from `closed_port`, its data (an append-only file, so a
//! restart keeps what was written) in a temp dir. The tests freeze it
//! (SIGSTOP), kill it and start it again on the same port and data.
//! [`RedisServer::start_tls`] serves TLS only (`--port 0`), with a server
//! certificate for 127.0.0.1 signed by a CA made here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::closed_port;

pub struct RedisServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    password: Option<String>,
    /// With TLS: the CA that signed the server's certificate (PEM, in `dir`).
    pub ca_file: Option<PathBuf>,
}

fn binary() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = PathBuf::from(dir).join("redis-server");
        if p.exists() {
            return p;
        }
    }
    panic!("redis-server not found: install the Debian package `redis-server` (scripts/test does)");
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with_password(None)
    }

    /// With `requirepass`: clients must AUTH.
    pub fn start_with_password(password: Option<&str>) -> RedisServer {
        let mut r = RedisServer {
            addr: closed_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            password: password.map(str::to_string),
            ca_file: None,
        };
        r.spawn();
        r
    }

    /// TLS only, optionally with `requirepass`; clients are not asked for
    /// certificates. The CA is `ca_file`.
    pub fn start_tls(password: Option<&str>) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::tls_util::TestCa::new("redis test CA");
        let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]);
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.crt"), cert).unwrap();
        std::fs::write(dir.path().join("server.key"), key).unwrap();
        let mut r = RedisServer {
            addr: closed_port(),
            ca_file: Some(dir.path().join("ca.pem")),
            dir,
            child: None,
            password: password.map(str::to_string),
        };
        r.spawn();
        r
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca_file.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://{}/0", self.addr)
    }

    /// The port options: plain, or TLS only with the files `start_tls` wrote.
    fn port_args(&self) -> Vec<String> {
        let port = self.addr.port().to_string();
        if self.ca_file.is_none() {
            return vec!["--port".into(), port];
        }
        let file = |name: &str| self.dir.path().join(name).display().to_string();
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port,
            "--tls-cert-file".into(),
            file("server.crt"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    }

    fn spawn(&mut self) {
        let child = Command::new(binary())
            .args(["--bind", "127.0.0.1"])
            .args(self.port_args())
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .args(["--maxmemory-policy", "noeviction", "--loglevel", "warning", "--daemonize", "no"])
            .args(self.password.iter().flat_map(|p| ["--requirepass".to_string(), p.clone()]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Over TLS, redis-cli (with the password, if any) must get PONG.
            let up = if self.ca_file.is_some() { self.cli(&["PING"]) == "PONG" } else { self.plain_ping() };
            if up {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start on {}", self.addr);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PING over plain TCP is answered; with a password, NOAUTH counts too.
    fn plain_ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 64];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut buf)
                .map(|n| buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
                .unwrap_or(false)
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill").args([sig, &c.id().to_string()]).status().map(|s| s.success());
            assert!(ok.unwrap_or(false), "kill {sig} redis-server");
        }
    }

    /// Freeze it: connections stay open, nothing is answered.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// One command through redis-cli, its output trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.addr.port().to_string())
            .envs(self.password.iter().map(|p| ("REDISCLI_AUTH", p.as_str())))
            .args(self.ca_file.iter().flat_map(|ca| ["--tls".into(), "--cacert".into(), ca.display().to_string()]))
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A frozen process does not die of SIGTERM; SIGKILL works on it.
        self.kill();
    }
}
