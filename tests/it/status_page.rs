//! The status page rendered by a real browser (headless Chromium) from
//! live `/api/status` data, with a screenshot kept for people to look at.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::*;

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn status_page_renders_live_state_in_a_browser() {
    let up = Upstream::named("ok").await;
    let dead = closed_port();
    let p = Proxy::start(&format!(
        "[upstreams.web]\nservers = [\"{}\"]\n[upstreams.api]\nservers = [\"{dead}\"]\n\
         [upstreams.api.health]\ninterval = \"500ms\"\ntimeout = \"200ms\"\nunhealthy_threshold = 3\n\
         [[routes]]\nname = \"website\"\nhost = \"logen.example.com\"\npath = \"/\"\nupstream = \"web\"\n\
         [[routes]]\nname = \"api-route\"\nhost = \"logen.example.com\"\npath = \"/api/\"\nstrip_prefix = true\nupstream = \"api\"\n",
        up.addr
    ));
    // The only api server is dead: 502 (asked before its probes, three
    // over at least a second, mark it down; live traffic never takes a
    // pool's only server out, as in nginx).
    assert_eq!(get(&p.url("/api/x"), "logen.example.com").await.status, 502);
    for _ in 0..5 {
        assert_eq!(get(&p.url("/"), "logen.example.com").await.status, 200);
    }
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            server_up(&status(&p).await, "api", dead) == Some(false)
        })
        .await
    );
    // A failed reload, so the page has an error to show.
    std::fs::write(p.config_path(), "[listen]\nhttp = 1\n").unwrap();
    assert!(
        eventually_async(Duration::from_secs(10), || async { status(&p).await["last_reload"]["ok"] == false }).await
    );

    let url = p.admin_url("/");
    let dom = tokio::task::spawn_blocking(move || chromium(&url, &["--dump-dom"])).await.unwrap();
    let html = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(dom.status.success(), "chromium failed: {}", String::from_utf8_lossy(&dom.stderr));
    let up_addr = up.addr.to_string();
    let dead_addr = dead.to_string();
    for want in ["website", "api-route", "logen.example.com", "/api/", up_addr.as_str(), dead_addr.as_str()] {
        assert!(html.contains(want), "rendered page lacks {want:?}:\n{html}");
    }
    // Health as rendered from live state: one server up, one down.
    assert!(html.contains(r#"<span class="pill up">up</span>"#), "{html}");
    assert!(html.contains(r#"<span class="pill down">down</span>"#), "{html}");
    assert!(html.contains("1 / 2"), "servers-up card: {html}");
    // The web server's row: nothing in flight, the one connection the five
    // requests shared waiting idle.
    assert!(html.contains(r#"<th class="num">idle conns</th>"#), "{html}");
    assert!(html.contains(r#"<td class="num">0</td><td class="num">1</td>"#), "in flight 0, idle 1: {html}");
    // The failed reload and its file:line:col.
    assert!(html.contains("failed") && html.contains("rampart.toml:2:"), "{html}");
    assert!(html.contains("no certificates"), "{html}");
    assert!(!html.contains("loading…"), "the page never rendered data: {html}");
    // Self-contained: the page as served references no other file or host.
    let page = get(&p.admin_url("/"), "admin").await.text();
    for external in ["src=", "href=", "<link", "url(", "@import", "http://", "https://"] {
        assert!(!page.contains(external), "status page references an external asset ({external})");
    }

    let shot = artifacts().join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let url = p.admin_url("/");
    let arg = format!("--screenshot={}", shot.display());
    let out =
        tokio::task::spawn_blocking(move || chromium(&url, &[&arg, "--window-size=1280,900", "--hide-scrollbars"]))
            .await
            .unwrap();
    assert!(out.status.success(), "chromium screenshot failed: {}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "screenshot at {} looks empty", shot.display());
    eprintln!("status page screenshot: {}", shot.display());
}
