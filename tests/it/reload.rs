//! Hot reload through the real binary: file edits (in place, by rename like
//! vim, by a ConfigMap symlink swap), SIGHUP and `POST /api/reload`, under
//! continuous load, with broken edits, and with a WebSocket open.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::Request;

use crate::util::*;

/// Generous bound for "the change is served"; the issue asks for a second,
/// which the debounce (250 ms) leaves plenty of room for on a quiet machine.
const APPLY_BOUND: Duration = Duration::from_secs(10);

fn cfg(body: &str) -> String {
    format!("{LISTEN}\n{body}")
}

fn route(path: &str, upstream: &str) -> String {
    format!(
        "[[routes]]\nname = \"{upstream}{}\"\nhost = \"*\"\npath = \"{path}\"\nupstream = \"{upstream}\"\n",
        path.replace('/', "-")
    )
}

fn pools(ups: &[(&str, &Upstream)]) -> String {
    ups.iter().map(|(n, u)| format!("[upstreams.{n}]\nservers = [\"{}\"]\n", u.addr)).collect()
}

/// Save like `echo > file`: truncate and write the same inode.
fn write_in_place(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Save like vim: move the old file aside, write a new file under the
/// name, delete the backup (the name is briefly missing).
fn write_like_vim(path: &Path, text: &str) {
    let backup = path.with_extension("toml~");
    std::fs::rename(path, &backup).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::remove_file(&backup).unwrap();
}

/// Save like VS Code and most "atomic save" libraries: write a temp file
/// beside it and rename it over the name.
fn write_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Value of `rampart_config_reloads_total{result=...}`.
async fn reloads(p: &Proxy, result: &str) -> u64 {
    let text = get(&p.admin_url("/metrics"), "admin").await.text();
    let key = format!("rampart_config_reloads_total{{result=\"{result}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Bounded background load on `path`: a few tasks, each on its own
/// keep-alive client, looping GETs until stopped (or a hard cap), counting
/// anything that is not a 200 from `want`.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(p: &Proxy, path: &str, want: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let tasks = (0..3)
            .map(|_| {
                let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
                let url = p.url(path);
                tokio::spawn(async move {
                    let c = client();
                    let mut problems = Vec::new();
                    let deadline = Instant::now() + Duration::from_secs(60);
                    for _ in 0..20_000 {
                        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                            break;
                        }
                        let req = Request::get(&url).header("host", "x").body(full("")).unwrap();
                        let answer = tokio::time::timeout(Duration::from_secs(10), c.request(req)).await;
                        let problem = match answer {
                            Err(_) => Some("timeout".to_string()),
                            Ok(Err(e)) => Some(format!("error: {e}")),
                            Ok(Ok(resp)) => {
                                let status = resp.status();
                                let body =
                                    http_body_util::BodyExt::collect(resp.into_body()).await.map(|b| b.to_bytes());
                                match body {
                                    Ok(b) if status == 200 && b == want => None,
                                    Ok(b) => Some(format!("{status} {b:?}")),
                                    Err(e) => Some(format!("body error: {e}")),
                                }
                            }
                        };
                        match problem {
                            None => ok.fetch_add(1, Ordering::SeqCst),
                            Some(p) => {
                                problems.push(p);
                                failed.fetch_add(1, Ordering::SeqCst)
                            }
                        };
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    problems
                })
            })
            .collect();
        Load { stop, ok, failed, tasks }
    }

    /// Stop the load; returns (ok, failed, sample of problems).
    async fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut problems = Vec::new();
        for t in self.tasks {
            problems.extend(t.await.unwrap().into_iter().take(5));
        }
        (self.ok.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst), problems)
    }
}

/// Wait until `path` answers 200 with `want`; returns how long it took.
async fn served(p: &Proxy, path: &str, want: &str) -> Option<Duration> {
    let t0 = Instant::now();
    eventually_async(APPLY_BOUND, || async { get(&p.url(path), "x").await.text() == want }).await.then(|| t0.elapsed())
}

#[tokio::test]
async fn reload_adds_routes_under_load_with_zero_failed_requests() {
    let (a, b, c) = (Upstream::named("a").await, Upstream::named("b").await, Upstream::named("c").await);
    let all = pools(&[("a", &a), ("b", &b), ("c", &c)]);
    let p = Proxy::start(&cfg(&format!("{all}{}", route("/a", "a"))));
    let path = p.config_path();
    let load = Load::start(&p, "/a", "a");
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(get(&p.url("/b"), "x").await.status, 404);
    write_in_place(&path, &cfg(&format!("{all}{}{}", route("/a", "a"), route("/b", "b"))));
    let took_b = served(&p, "/b", "b").await.expect("in-place edit was not applied");

    write_like_vim(&path, &cfg(&format!("{all}{}{}{}", route("/a", "a"), route("/b", "b"), route("/c", "c"))));
    let took_c = served(&p, "/c", "c").await.expect("vim-style (rename) save was not applied");

    write_by_rename(&path, &cfg(&format!("{all}{}{}", route("/a", "a"), route("/c", "c"))));
    assert!(
        eventually_async(APPLY_BOUND, || async { get(&p.url("/b"), "x").await.status == 404 }).await,
        "atomic-rename save (route removed) was not applied"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (ok, failed, problems) = load.finish().await;
    eprintln!("new routes served after {took_b:?} (in place) and {took_c:?} (vim); load: {ok} ok, {failed} failed");
    assert!(ok > 0, "the load ran no requests");
    assert_eq!(failed, 0, "requests failed during reloads: {problems:?}");
    assert_eq!(reloads(&p, "success").await, 3);
    assert_eq!(reloads(&p, "failure").await, 0);
}

#[tokio::test]
async fn a_broken_edit_keeps_the_old_config_and_reports_file_line_col() {
    let (a, b) = (Upstream::named("a").await, Upstream::named("b").await);
    let all = pools(&[("a", &a), ("b", &b)]);
    let p = Proxy::start(&cfg(&format!("{all}{}", route("/a", "a"))));
    let path = p.config_path();
    let load = Load::start(&p, "/a", "a");

    // A route pointing at an upstream that does not exist.
    let broken = cfg(&format!("{all}{}{}", route("/a", "a"), route("/b", "nope")));
    let bad_line = broken.lines().position(|l| l.contains("upstream = \"nope\"")).unwrap() + 1;
    write_in_place(&path, &broken);
    assert!(
        eventually_async(APPLY_BOUND, || async { reloads(&p, "failure").await == 1 }).await,
        "a broken edit must count as a failed reload"
    );
    let st = status(&p).await;
    assert_eq!(st["last_reload"]["ok"], false, "{st}");
    let errors = st["last_reload"]["errors"].to_string();
    let want = format!("{}:{bad_line}:", path.display());
    assert!(errors.contains(&want) && errors.contains("nope"), "want {want}… in {errors}");
    // The same error as a log line.
    let log = p.stderr.lock().unwrap().join("\n");
    assert!(log.contains(&want), "reload failure not logged with file:line:col: {log}");
    // The old config still serves.
    assert_eq!(get(&p.url("/a"), "x").await.text(), "a");
    assert_eq!(get(&p.url("/b"), "x").await.status, 404);
    assert_eq!(status(&p).await["routes"].as_array().unwrap().len(), 1);

    // A syntax error is reported the same way, and the watcher survives it.
    write_like_vim(&path, &format!("{broken}\n[[routes]\n"));
    assert!(eventually_async(APPLY_BOUND, || async { reloads(&p, "failure").await == 2 }).await);

    // The next good edit applies.
    write_in_place(&path, &cfg(&format!("{all}{}{}", route("/a", "a"), route("/b", "b"))));
    served(&p, "/b", "b").await.expect("the good edit after a broken one was not applied");
    assert_eq!(status(&p).await["last_reload"]["ok"], true);
    assert_eq!(reloads(&p, "success").await, 1);

    let (ok, failed, problems) = load.finish().await;
    assert!(ok > 0);
    assert_eq!(failed, 0, "requests failed around a broken reload: {problems:?}");
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn echo(ws: &mut Ws, text: &str) {
    ws.send(tokio_tungstenite::tungstenite::Message::text(text)).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(m.into_text().unwrap().as_str(), text);
}

#[tokio::test]
async fn an_open_websocket_on_an_untouched_route_survives_a_reload() {
    let ws_addr = ws_echo_upstream().await;
    let b = Upstream::named("b").await;
    let ws_pool = format!("[upstreams.ws]\nservers = [\"{ws_addr}\"]\n");
    let p = Proxy::start(&cfg(&format!("{ws_pool}{}", route("/ws", "ws"))));
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", p.http)).await.unwrap();
    assert_eq!(resp.status(), 101);
    echo(&mut ws, "before").await;

    write_by_rename(
        &p.config_path(),
        &cfg(&format!("{ws_pool}{}{}{}", pools(&[("b", &b)]), route("/ws", "ws"), route("/b", "b"))),
    );
    served(&p, "/b", "b").await.expect("reload not applied");
    for i in 0..5 {
        echo(&mut ws, &format!("after {i}")).await;
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn sighup_and_post_reload_count_success_and_failure_alike() {
    let a = Upstream::named("a").await;
    let good = cfg(&format!("{}{}", pools(&[("a", &a)]), route("/a", "a")));
    let p = Proxy::start(&good);
    // No file change, so the watcher stays quiet: only the signal reloads.
    p.signal("HUP");
    assert!(
        eventually_async(APPLY_BOUND, || async { reloads(&p, "success").await == 1 }).await,
        "SIGHUP did not reload"
    );
    let r = post_reload(&p).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(reloads(&p, "success").await, 2);

    // A broken file: the watcher's failure first, then SIGHUP's and POST's.
    write_in_place(&p.config_path(), &format!("{good}\nbogus_key = 1\n"));
    assert!(eventually_async(APPLY_BOUND, || async { reloads(&p, "failure").await == 1 }).await);
    p.signal("HUP");
    assert!(
        eventually_async(APPLY_BOUND, || async { reloads(&p, "failure").await == 2 }).await,
        "SIGHUP failure not counted"
    );
    let r = post_reload(&p).await;
    assert_eq!(r.status, 422);
    assert!(r.text().contains("rampart.toml:"), "{}", r.text());
    assert_eq!(reloads(&p, "failure").await, 3);
    assert_eq!(get(&p.url("/a"), "x").await.text(), "a", "the old config keeps serving");
    let log = p.stderr.lock().unwrap().join("\n");
    assert!(log.contains("SIGHUP: reloading config"), "{log}");
}

#[tokio::test]
async fn a_configmap_symlink_swap_triggers_a_reload() {
    let (a, b) = (Upstream::named("a").await, Upstream::named("b").await);
    let all = pools(&[("a", &a), ("b", &b)]);
    // The layout kubelet makes for a ConfigMap volume.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..2026_01_01_00_00_00.1")).unwrap();
    std::fs::write(d.join("..2026_01_01_00_00_00.1/rampart.toml"), "").unwrap();
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/rampart.toml", d.join("rampart.toml")).unwrap();
    let p = Proxy::start_in(dir, &cfg(&format!("{all}{}", route("/a", "a"))));
    assert_eq!(get(&p.url("/b"), "x").await.status, 404);

    // kubelet's update: new timestamped dir, new link, atomic rename over ..data.
    let d = p.dir.path();
    std::fs::create_dir(d.join("..2026_01_01_00_05_00.2")).unwrap();
    std::fs::write(
        d.join("..2026_01_01_00_05_00.2/rampart.toml"),
        cfg(&format!("{all}{}{}", route("/a", "a"), route("/b", "b"))),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_01_01_00_05_00.2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..2026_01_01_00_00_00.1")).unwrap();

    served(&p, "/b", "b").await.expect("ConfigMap swap was not applied");
    assert_eq!(get(&p.url("/a"), "x").await.text(), "a");
}

#[tokio::test]
async fn the_watcher_survives_the_file_going_missing() {
    let (a, b) = (Upstream::named("a").await, Upstream::named("b").await);
    let all = pools(&[("a", &a), ("b", &b)]);
    let p = Proxy::start(&cfg(&format!("{all}{}", route("/a", "a"))));
    let path = p.config_path();
    std::fs::remove_file(&path).unwrap();
    // Gone for good (not just mid-rename): reported as a failed reload.
    assert!(eventually_async(APPLY_BOUND, || async { reloads(&p, "failure").await == 1 }).await);
    let errors = status(&p).await["last_reload"]["errors"].to_string();
    assert!(errors.contains("cannot read config file"), "{errors}");
    assert_eq!(get(&p.url("/a"), "x").await.text(), "a", "the old config keeps serving");
    // Back, with a change: applied.
    write_in_place(&path, &cfg(&format!("{all}{}{}", route("/a", "a"), route("/b", "b"))));
    served(&p, "/b", "b").await.expect("the recreated file was not applied");
}

/// A SIGHUP while the file was away fails; the same file put back must
/// clear that failure, though its text is what the watcher last applied.
#[tokio::test]
async fn the_same_file_put_back_after_a_failed_reload_is_applied_again() {
    let a = Upstream::named("a").await;
    let p = Proxy::start(&cfg(&format!("{}{}", pools(&[("a", &a)]), route("/a", "a"))));
    let path = p.config_path();
    let aside = path.with_extension("aside");
    std::fs::rename(&path, &aside).unwrap();
    p.signal("HUP");
    assert!(
        eventually_async(APPLY_BOUND, || async { status(&p).await["last_reload"]["ok"] == false }).await,
        "the reload without a file did not fail"
    );
    std::fs::rename(&aside, &path).unwrap();
    assert!(
        eventually_async(APPLY_BOUND, || async { status(&p).await["last_reload"]["ok"] == true }).await,
        "the file put back left the failure standing: {}",
        status(&p).await
    );
}
