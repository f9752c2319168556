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

/// A middleware definition's problems are at the key they are about, and
/// are printed with the file's other problems, not only once those are
/// fixed: a bad value found where the definition is built, a value of
/// the wrong type, and an unknown key, beside a route and a server error.
#[test]
fn check_places_middleware_problems_at_their_keys_among_the_others() {
    let (code, _, err) = check(
        r#"[server]
workers = 0

[upstreams.api]
servers = ["127.0.0.1:7600"]

[middleware.gzip]
type = "compress"
# fast enough
level = 99

[[routes]]
host = "a.example.com"
path = "/"
upstream = "apii"
middleware = ["gzip"]
"#,
    );
    assert_eq!(code, 1);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "PATH:2:11: error: workers must be between 1 and 1024, got 0",
            "PATH:10:1: error: middleware \"gzip\": level must be between 1 and 11, got 99",
            "PATH:15:12: error: route names unknown upstream \"apii\"",
        ],
        "{err}"
    );

    let (code, _, err) = check(
        r#"[upstreams.api]
servers = ["127.0.0.1:7600"]

[middleware.limit]
type = "rate_limit"
burst = 5
average = "100"

[middleware.secure]
type = "security_headers"
frame_options = "DENY"
hsst = "max-age=60"
"#,
    );
    assert_eq!(code, 1);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert_eq!(
        lines[0], "PATH:7:11: error: middleware \"limit\": average: invalid type: string \"100\", expected a number",
        "{err}"
    );
    assert!(lines[1].starts_with("PATH:12:1: error: middleware \"secure\": hsst: unknown field `hsst`"), "{err}");
}

/// Every problem of a table, not only its first: serde stops at one, so
/// each is read with the keys before it blanked; a required key blanked so
/// is not reported missing.
#[test]
fn check_lists_every_bad_value_of_one_table() {
    let (code, _, err) = check(
        r#"[server]
workers = "two"
shutdown_timeout = 5
idle_timeout = "5 parsecs"

[upstreams.app]
servers = ["127.0.0.1:9"]
connect_timeout = "x"
response_timeout = "y"

[middleware.rl]
type = "rate_limit"
average = "100"
burst = -3
"#,
    );
    assert_eq!(code, 1);
    let at: Vec<&str> = err.lines().map(|l| l.split(": error: ").next().unwrap_or(l)).collect();
    assert_eq!(
        at,
        ["PATH:2:11", "PATH:3:20", "PATH:4:16", "PATH:8:19", "PATH:9:20", "PATH:13:11", "PATH:14:9"],
        "{err}"
    );
    assert!(err.contains("PATH:4:16: error: invalid duration \"5 parsecs\" (unknown unit \"parsecs\")"), "{err}");
    assert!(err.contains("PATH:14:9: error: middleware \"rl\": burst: invalid value: integer `-3`"), "{err}");
    assert!(!err.contains("missing field"), "{err}");
}

/// `rampart check` beside a running instance with a disk cache: the
/// directory is judged (a file there is an error) but not opened, so a
/// response the instance is writing (a `.tmp` file, removed as a leftover
/// when a cache opens the directory) stays.
#[test]
fn check_leaves_a_cache_directory_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let writing = cache.join(".tmp-being-written");
    std::fs::write(&writing, b"half a response").unwrap();
    let config = format!(
        "[upstreams.api]\nservers = [\"127.0.0.1:7600\"]\n\n[middleware.c]\ntype = \"cache\"\ndir = {:?}\n",
        cache.display().to_string()
    );
    let (code, out, err) = check(&config);
    assert_eq!((code, out.trim()), (0, "ok: 0 routes, 1 upstreams, 1 middleware"), "{err}");
    assert!(writing.exists(), "check removed a file of the cache directory");

    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let config = config.replace(&cache.display().to_string(), &file.display().to_string());
    let (code, _, err) = check(&config);
    assert_eq!(code, 1);
    assert!(err.starts_with("PATH:6:1: error: middleware \"c\": cache dir "), "{err}");
    assert!(err.contains("is not a directory"), "{err}");
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
        (
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[upstreams.a.health]\ninterval = \"5s\"\npath = \"healthz\"\n",
            "PATH:5:1: error: health path must start with '/', got \"healthz\"",
        ),
        (
            "[middleware.c]\ntype = \"cors\"\nallow_origins = [\"*\"]\nallow_methods = [\"GET\", \"NOT A METHOD\"]\n",
            "PATH:4:1: error: middleware \"c\": invalid method \"NOT A METHOD\"",
        ),
        ("[acme]\nemail = \"not-an-email\"\n", "PATH:2:1: error: email must be an address like ops@example.com"),
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

/// An admin endpoint that accepts and never answers is reported as such,
/// not as the read's EAGAIN ("Resource temporarily unavailable").
#[test]
fn healthcheck_names_a_silent_endpoint() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/healthz", silent.local_addr().unwrap());
    let out = Command::new(binary()).args(["healthcheck", "--url", &url]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("unhealthy: {url} did not answer within 3s")), "{err}");
    drop(silent);
}
