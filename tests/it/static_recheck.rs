//! `recheck_after` on a static upstream: the open-file cache trusts a file
//! that long after checking its path (nginx's `open_file_cache_valid`),
//! and without it every request checks (`static_files.rs`, "changes are
//! seen by the next request").

use std::process::Command;

use crate::static_files::{get, start, write};
use crate::util::*;

/// A proxy whose static upstream, with `recheck_after`, answered
/// `/app.js` once: "release one", read into the open-file cache, then
/// edited on disk to "release two".
async fn answered_then_edited(recheck_after: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("site"), "app.js", b"release one\n");
    let file = dir.path().join("site/app.js");
    let p = start(dir, &format!("recheck_after = \"{recheck_after}\""), "");
    assert_eq!(get(p.http, "/app.js").await.text(), "release one\n");
    std::fs::write(&file, b"release two\n").unwrap();
    p
}

/// Trusted for an hour: an edit is not seen by the requests after it.
#[tokio::test]
async fn a_file_is_trusted_for_recheck_after() {
    let p = answered_then_edited("1h").await;
    for _ in 0..3 {
        assert_eq!(get(p.http, "/app.js").await.text(), "release one\n", "trusted within recheck_after");
    }
}

/// Trusted for a second: the edit is seen once the path is checked again.
#[tokio::test]
async fn a_change_is_seen_once_recheck_after_has_passed() {
    let p = answered_then_edited("1s").await;
    // Requests a little apart, so the check falls due within bounded time.
    let mut seen = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if get(p.http, "/app.js").await.text() == "release two\n" {
            seen = true;
            break;
        }
    }
    assert!(seen, "the edit was not seen within 10 s of recheck_after = 1s");
}

#[test]
fn check_reports_recheck_after_on_a_proxied_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rampart.toml");
    std::fs::write(&path, "[upstreams.api]\nservers = [\"127.0.0.1:1\"]\nrecheck_after = \"1s\"\n").unwrap();
    let out = Command::new(binary()).args(["check", "--config"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("upstream \"api\": `recheck_after` needs `static = DIR`"), "{text}");
}
