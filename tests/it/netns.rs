//! A network namespace of the test's own, for what the host's loopback
//! cannot give a test: port 53 and the system resolver. Its loopback is up
//! (all of 127.0.0.0/8), and `/etc/netns/NAME/resolv.conf` is what `ip
//! netns exec` shows a program as `/etc/resolv.conf`. A test body runs on
//! a thread moved into it, with a runtime of its own, so every socket it
//! opens and every process it starts is inside. The namespace and its
//! `/etc/netns` entry are removed on drop (panics included); ones left by
//! a test process that was killed are removed by the next.
//!
//! Needs root (CAP_SYS_ADMIN), as CI runs, and iproute2's `ip`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

const PREFIX: &str = "rampart-it-";

pub struct NetNs {
    pub name: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn etc_dir(name: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(name)
}

/// Namespaces named after a test process that no longer runs.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()) else { continue };
        if !std::path::Path::new("/proc").join(pid).exists() {
            let _ = ip(&["netns", "del", &name]);
            let _ = std::fs::remove_dir_all(etc_dir(&name));
        }
    }
}

impl NetNs {
    /// A new namespace whose resolv.conf names `nameserver`.
    pub fn create(nameserver: IpAddr) -> NetNs {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        remove_stale();
        let name = format!("{PREFIX}{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        if let Err(e) = ip(&["netns", "add", &name]) {
            panic!("cannot create a network namespace (this test needs root, as CI runs): {e}");
        }
        let ns = NetNs { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]).unwrap();
        std::fs::create_dir_all(etc_dir(&ns.name)).unwrap();
        std::fs::write(etc_dir(&ns.name).join("resolv.conf"), format!("nameserver {nameserver}\n")).unwrap();
        ns
    }

    /// The command prefix that runs a program inside, with the
    /// namespace's resolv.conf (`ip netns exec` execs it in place).
    pub fn exec_prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", self.name.as_str()].map(String::from).to_vec()
    }

    /// Run `body` inside the namespace on a multi-thread runtime (two
    /// workers) made there; a panic in it is this caller's panic.
    pub fn run<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        use std::os::fd::AsRawFd;
        let path = PathBuf::from("/run/netns").join(&self.name);
        let thread = std::thread::spawn(move || {
            let handle = std::fs::File::open(&path).unwrap();
            // SAFETY: setns(2) on a descriptor we own; it moves only this
            // thread (and what it starts later) into the namespace.
            let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {}: {}", path.display(), std::io::Error::last_os_error());
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(body());
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("{e}");
        }
        let _ = std::fs::remove_dir_all(etc_dir(&self.name));
    }
}
