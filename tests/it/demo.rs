//! `rampart demo` starts, prints curl commands, and those commands work.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn demo_prints_curl_commands_that_work() {
    let mut child = Command::new(binary())
        .args(["demo", "--http", "127.0.0.1:0", "--https", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _guard = Kill(child);
    let mut commands = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.trim_start().starts_with("curl ") {
            commands.push(line.split('#').next().unwrap().trim().to_string());
        }
        if line.starts_with("Press Ctrl-C") || Instant::now() > deadline {
            break;
        }
    }
    assert!(commands.len() >= 6, "{commands:?}");
    let mut apps = Vec::new();
    for cmd in &commands {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{cmd} -s -o /dev/stdout -w '\\n%{{http_code}}'"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let code = text.lines().last().unwrap_or("").to_string();
        if cmd.contains("unknown.example") {
            assert!(text.contains("404"), "{cmd}: {text}");
        } else {
            assert_eq!(code, "200", "{cmd}: {text}");
        }
        if let Some(app) = text.lines().find(|l| l.contains("\"app\"")) {
            apps.push(app.trim().to_string());
        }
    }
    // All three demo apps answered through the proxy.
    for app in ["\"api\"", "\"frontend\"", "\"admin-frontend\""] {
        assert!(apps.iter().any(|a| a.contains(app)), "{app} not reached: {apps:?}");
    }
}
