//! One real Docker engine for the whole test run: `dockerd` (Debian's
//! `docker.io`) started by the first test that needs it, as root, with its
//! own data root, exec root, pid file and unix socket under a temp dir, no
//! iptables or forwarding changes, and `--live-restore` so restarting it
//! leaves the containers running. A small image is made offline from
//! Debian's `busybox-static` (a rootfs with busybox and an index page,
//! `docker import`) and serves with `busybox httpd -f -p 8080`.
//!
//! Tests share the engine (the bridge, containerd's state and cgroups are
//! machine-wide) under a read lock; a test that restarts it takes the
//! write lock. A watchdog shell outlives nothing: when the test process
//! ends it removes the containers, stops dockerd and unmounts its root.
//! Where dockerd cannot start, [`engine`] says why and the tests skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::RwLock;

pub const IMAGE: &str = "rampart-test-httpd:1";

pub struct Engine {
    pub dir: PathBuf,
    pub socket: PathBuf,
    args: Vec<String>,
    child: Mutex<Option<Child>>,
}

/// Held by tests that use the engine; the restart test takes it exclusively.
pub static USE: RwLock<()> = RwLock::const_new(());

static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();

/// The shared engine, started on first use; `Err` says why it cannot run.
pub fn engine() -> Result<&'static Engine, String> {
    ENGINE.get_or_init(start).as_ref().map_err(Clone::clone)
}

/// Print why a test skips, in a line CI logs show.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: no Docker engine: {why}");
}

fn start() -> Result<Engine, String> {
    if uid() != 0 {
        return Err("dockerd needs root".into());
    }
    for bin in ["dockerd", "docker", "busybox"] {
        if which(bin).is_none() {
            return Err(format!("{bin} not found (scripts/test installs docker.io and busybox-static)"));
        }
    }
    // A temp dir that lives until the watchdog removes it.
    let dir = tempfile::Builder::new().prefix("rampart-dockerd-").tempdir().map_err(|e| e.to_string())?.keep();
    let socket = dir.join("docker.sock");
    let args: Vec<String> = vec![
        "--iptables=false".into(),
        "--ip6tables=false".into(),
        "--ip-forward=false".into(),
        "--live-restore".into(),
        format!("--data-root={}", dir.join("data").display()),
        format!("--exec-root={}", dir.join("exec").display()),
        format!("--pidfile={}", dir.join("dockerd.pid").display()),
        format!("--host=unix://{}", socket.display()),
    ];
    let engine = Engine { dir: dir.clone(), socket, args, child: Mutex::new(None) };
    watchdog(&engine)?;
    engine.launch()?;
    if let Err(first) = engine.wait_ready(Duration::from_secs(60)) {
        // Fall back to the vfs storage driver (no overlay mounts needed).
        engine.stop();
        let mut e = engine;
        e.args.push("--storage-driver=vfs".into());
        e.launch()?;
        e.wait_ready(Duration::from_secs(60)).map_err(|second| format!("{first}; with vfs: {second}"))?;
        e.import_image()?;
        return Ok(e);
    }
    engine.import_image()?;
    Ok(engine)
}

/// The real user id, from /proc (no libc call).
fn uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(u32::MAX)
}

fn which(bin: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.exists())
}

/// Cleans up after the test process, however it ends.
fn watchdog(e: &Engine) -> Result<(), String> {
    let script = format!(
        r#"while kill -0 {parent} 2>/dev/null; do sleep 1; done
ids=$(docker -H unix://{sock} ps -aq 2>/dev/null); [ -n "$ids" ] && docker -H unix://{sock} rm -f $ids >/dev/null 2>&1
pid=$(cat {dir}/dockerd.pid 2>/dev/null); [ -n "$pid" ] && kill $pid 2>/dev/null
for i in $(seq 1 30); do [ -n "$pid" ] && kill -0 $pid 2>/dev/null || break; sleep 1; done
umount -l {dir}/data 2>/dev/null; umount -l {dir}/exec 2>/dev/null
rm -rf {dir}"#,
        parent = std::process::id(),
        sock = e.socket.display(),
        dir = e.dir.display(),
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|e| format!("watchdog: {e}"))
}

impl Engine {
    fn launch(&self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        // Its own process group: the test harness's signals stay with it.
        use std::os::unix::process::CommandExt;
        let child = Command::new(which("dockerd").unwrap_or_else(|| "dockerd".into()))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("dockerd {}: {e}", self.args.join(" ")))?;
        *self.child.lock().unwrap() = Some(child);
        Ok(())
    }

    fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if self.docker(&["version", "--format", "{{.Server.Version}}"]).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                return Err(format!(
                    "dockerd {} did not answer within {within:?}; its log ends:\n{}",
                    self.args.join(" "),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM dockerd and wait for it to exit (containers stay: live-restore).
    pub fn stop(&self) {
        let Some(mut child) = self.child.lock().unwrap().take() else { return };
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Start dockerd again after [`stop`](Self::stop).
    pub fn restart(&self) -> Result<(), String> {
        self.launch()?;
        self.wait_ready(Duration::from_secs(60))
    }

    /// Run the docker CLI against this engine; stdout on success.
    pub fn docker(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(which("docker").unwrap_or_else(|| "docker".into()))
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    fn import_image(&self) -> Result<(), String> {
        let root = self.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(root.join("www")).map_err(|e| e.to_string())?;
        std::fs::copy(which("busybox").ok_or("busybox")?, root.join("bin/busybox")).map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).map_err(|e| e.to_string())?;
        std::fs::write(root.join("www/index.html"), "image\n").map_err(|e| e.to_string())?;
        let tar = self.dir.join("rootfs.tar");
        let ok = Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").status();
        if !ok.is_ok_and(|s| s.success()) {
            return Err("tar of the rootfs failed".into());
        }
        self.docker(&[
            "import",
            "--change",
            r#"CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]"#,
            &tar.display().to_string(),
            IMAGE,
        ])
        .map(drop)
    }

    /// `docker run -d --init` of the test image with these labels and
    /// extra arguments; `www` (a host dir) is served as the site. Returns
    /// the container's id.
    pub fn run(&self, name: &str, www: &Path, labels: &[(&str, &str)], extra: &[&str]) -> Result<String, String> {
        let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--init".into(), "--name".into(), name.into()];
        args.push("-v".into());
        args.push(format!("{}:/www", www.display()));
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(IMAGE.into());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.docker(&refs)
    }

    pub fn remove(&self, names: &[&str]) {
        let mut args = vec!["rm", "-f"];
        args.extend_from_slice(names);
        let _ = self.docker(&args);
    }
}

/// A directory served by one container: `index.html` says `body`.
pub fn site(body: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("index.html"), body).unwrap();
    d
}
