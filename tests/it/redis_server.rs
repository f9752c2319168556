//! A real Redis for the cluster tests: Debian's `redis-server` on a
//! loopback port from `closed_port`, its data (an append-only file, so a
//! restart keeps what was written) in a temp dir. The tests freeze it
//! (SIGSTOP), kill it and start it again on the same port and data.

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
        };
        r.spawn();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    fn spawn(&mut self) {
        let child = Command::new(binary())
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
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
            if let Ok(mut s) = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 64];
                // With a password, PING answers NOAUTH: still up.
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read(&mut buf)
                        .map(|n| buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
                        .unwrap_or(false)
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start on {}", self.addr);
            std::thread::sleep(Duration::from_millis(50));
        }
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
