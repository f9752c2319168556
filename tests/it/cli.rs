//! `rampart check` and friends, run as a user runs them.

use std::process::Command;

use crate::util::*;

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rampart.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(binary()).args(["check", "--config"]).arg(&path).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "PATH"),
    )
}

#[test]
fn check_prints_the_summary() {
    let (code, out, _) = check(
        r#"
[upstreams.api]
servers = ["127.0.0.1:7600"]
[middleware.gzip]
type = "compress"
[[routes]]
host = "a.example.com"
upstream = "api"
middleware = ["gzip"]
"#,
    );
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "ok: 1 routes, 1 upstreams, 1 middleware");
}

#[test]
fn check_lists_every_problem_with_file_line_col() {
    let (code, _, err) = check(
        r#"[upstreams.api]
servers = ["127.0.0.1:7600"]

[[routes]]
host = "a.example.com"
path = "/"
upstream = "apii"
middleware = ["nope"]

[[routes]]
host = "a.example.com"
path = "/"
upstream = "api"
"#,
    );
    assert_eq!(code, 1);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines.contains(&"PATH:7:12: error: route names unknown upstream \"apii\""), "{err}");
    assert!(lines.contains(&"PATH:8:15: error: route names unknown middleware \"nope\""), "{err}");
    assert!(lines.iter().any(|l| l.starts_with("PATH:10:1: error: duplicate route")), "{err}");
}

#[test]
fn check_rejects_bad_values_without_panicking() {
    for (text, expect) in [
        ("[server]\nbogus = 1\n", "PATH:2:1: error: unknown field `bogus`"),
        ("[listen]\nhttp = \"nowhere\"\n", "PATH:2:8: error: invalid listen address"),
        ("[server]\nidle_timeout = \"5 parsecs\"\n", "PATH:2:16: error: invalid duration"),
        ("[upstreams.a]\nservers = []\n", "PATH:2:11: error: upstream \"a\" has no servers"),
        ("[upstreams.a]\nservers = [\"x\"]\n", "PATH:2:12: error: invalid server address"),
        ("this is not toml", "PATH:1:6: error:"),
    ] {
        let (code, _, err) = check(text);
        assert_eq!(code, 1, "{text}");
        assert!(err.starts_with(expect), "for {text:?} got {err}");
        assert!(!err.contains("panicked"));
    }
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = Command::new(binary()).args(["check", "--config", "/nonexistent/rampart.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/rampart.toml:1:1: error: cannot read config file")
    );
}

#[test]
fn run_reports_a_broken_config_as_check_does() {
    // One `PATH:LINE:COL: error:` per problem, not wrapped in another error.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rampart.toml");
    std::fs::write(&path, "[server]\nidle_timeout = \"5 parsecs\"\n").unwrap();
    let out = Command::new(binary()).arg("run").arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!("{}:2:16: error: invalid duration", path.display());
    assert!(err.lines().any(|l| l.starts_with(&want)), "{err}");
}

#[test]
fn shipped_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/rampart.toml");
    let out = Command::new(binary()).args(["check", "--config", path]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
