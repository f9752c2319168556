//! The `cache` middleware end to end: the real binary in front of real
//! upstreams that count the requests they get.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::util::*;

fn config(upstream: std::net::SocketAddr, cache: &str) -> String {
    format!(
        "[upstreams.app]\nservers = [\"{upstream}\"]\n\n[middleware.edge]\ntype = \"cache\"\n{cache}\n\n\
         [[routes]]\nname = \"site\"\nhost = \"*\"\npath = \"/\"\nupstream = \"app\"\nmiddleware = [\"edge\"]\n"
    )
}

fn reply(status: u16, headers: &[(&str, String)], body: impl Into<bytes::Bytes>) -> Response<BoxBody> {
    let mut r = Response::new(full(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        r.headers_mut().append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    r
}

/// An upstream answering by path, numbering its answers ("n=1", "n=2" ...).
async fn origin() -> Upstream {
    let n = Arc::new(AtomicUsize::new(0));
    Upstream::start(move |req: Request<Incoming>| {
        let n = n.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let body = format!("n={n} path={}", req.uri().path());
            let cc = |v: &str| ("cache-control", v.to_string());
            match req.uri().path() {
                "/private" => reply(200, &[cc("private, max-age=60")], body),
                "/no-store" => reply(200, &[cc("no-store")], body),
                "/cookie" => reply(200, &[cc("max-age=60"), ("set-cookie", "session=abc".into())], body),
                "/public-cookie" => reply(200, &[cc("public, max-age=60"), ("set-cookie", "s=1".into())], body),
                "/vary-star" => reply(200, &[cc("max-age=60"), ("vary", "*".into())], body),
                "/lang" => {
                    let lang = req.headers().get("accept-language").map(|v| v.to_str().unwrap().to_string());
                    reply(200, &[cc("max-age=60"), ("vary", "Accept-Language".into())], format!("{body} lang={lang:?}"))
                }
                "/big" => reply(200, &[cc("max-age=60")], vec![b'x'; 64 * 1024]),
                "/none" => reply(200, &[], body),
                // The answer depends on the request's preconditions and
                // range, and says it may be kept all the same.
                "/conditional" if req.headers().contains_key("if-match") => reply(412, &[cc("max-age=600")], ""),
                "/conditional" if req.headers().contains_key("range") => {
                    reply(416, &[cc("max-age=600"), ("content-range", "bytes */100".into())], "")
                }
                _ => reply(200, &[cc("max-age=60")], body),
            }
        }
    })
    .await
}

async fn get_h(url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = Request::get(url).header("host", "site.test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(&client(), b.body(full("")).unwrap()).await
}

fn cache_status(a: &Answer) -> String {
    a.headers.get_all("cache-status").iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>().join(", ")
}

#[tokio::test]
async fn hits_are_served_from_the_cache_with_age_cache_status_and_metrics() {
    let up = origin().await;
    let p = Proxy::start(&config(up.addr, ""));
    let first = get_h(&p.url("/page?x=1"), &[]).await;
    assert_eq!(first.text(), "n=1 path=/page");
    assert!(cache_status(&first).contains("fwd=uri-miss"), "{}", cache_status(&first));
    assert!(cache_status(&first).contains("stored"));
    let second = get_h(&p.url("/page?x=1"), &[]).await;
    assert_eq!(second.text(), "n=1 path=/page");
    assert!(cache_status(&second).starts_with("Rampart; hit; ttl="), "{}", cache_status(&second));
    assert!(second.headers.contains_key("age"));
    // Another query is another key.
    assert_eq!(get_h(&p.url("/page?x=2"), &[]).await.text(), "n=2 path=/page");
    // HEAD from the stored GET: headers, no body, no upstream request.
    let head =
        send(&client(), Request::head(p.url("/page?x=1")).header("host", "site.test").body(full("")).unwrap()).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.headers["content-length"], "14");
    assert!(cache_status(&head).contains("hit"));
    // The client's own validator against the stored response (its Date:
    // no Last-Modified); one later than now is no date and is ignored.
    let now = httpdate::fmt_http_date(std::time::SystemTime::now());
    let etagless = get_h(&p.url("/page?x=1"), &[("if-modified-since", &now)]).await;
    assert_eq!(etagless.status, 304);
    let future = get_h(&p.url("/page?x=1"), &[("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT")]).await;
    assert_eq!(future.status, 200);
    assert_eq!(up.hits(), 2);
    let metrics = get(&p.admin_url("/metrics"), "admin").await.text();
    assert!(metrics.contains("rampart_cache_requests_total{route=\"site\",result=\"hit\"} 4"), "{metrics}");
    assert!(metrics.contains("rampart_cache_requests_total{route=\"site\",result=\"miss\"} 2"), "{metrics}");
    let bytes_line = metrics.lines().find(|l| l.starts_with("rampart_cache_bytes{tier=\"memory\"}")).unwrap();
    assert!(!bytes_line.ends_with(" 0"), "{bytes_line}");
    let status = status(&p).await;
    assert_eq!(status["cache"]["edge"]["entries"], 2, "{status}");
}

#[tokio::test]
async fn one_requests_412_or_416_is_never_stored_for_the_url() {
    let up = origin().await;
    let p = Proxy::start(&config(up.addr, ""));
    let url = p.url("/conditional");
    for (header, status) in [(("if-match", "\"stale\""), 412), (("range", "bytes=999-"), 416)] {
        let a = get_h(&url, &[header]).await;
        assert_eq!(a.status.as_u16(), status);
        assert!(!cache_status(&a).contains("stored"), "{}", cache_status(&a));
        let plain = get_h(&url, &[]).await;
        assert_eq!(plain.status.as_u16(), 200, "a plain GET after a {status}: {}", cache_status(&plain));
    }
    let hit = get_h(&url, &[]).await;
    assert_eq!((hit.status.as_u16(), cache_status(&hit).starts_with("Rampart; hit")), (200, true));
}

#[tokio::test]
async fn private_data_stays_private() {
    let up = origin().await;
    let p = Proxy::start(&config(up.addr, ""));
    for path in ["/private", "/no-store", "/cookie", "/vary-star", "/none"] {
        let before = up.hits();
        let a = get_h(&p.url(path), &[]).await;
        let b = get_h(&p.url(path), &[]).await;
        assert_ne!(a.text(), b.text(), "{path} was served from the cache");
        assert_eq!(up.hits(), before + 2, "{path}");
        assert!(cache_status(&b).contains("fwd=uri-miss") && !cache_status(&b).contains("stored"), "{path}");
    }
    // A request with Authorization: its answer is not stored (max-age only).
    let a = get_h(&p.url("/auth"), &[("authorization", "Bearer x")]).await;
    let b = get_h(&p.url("/auth"), &[("authorization", "Bearer x")]).await;
    assert_ne!(a.text(), b.text());
    // `public` allows storing a response that sets a cookie; the cookie was
    // for the client that caused the fetch, so stored copies lack it.
    let a = get_h(&p.url("/public-cookie"), &[]).await;
    let b = get_h(&p.url("/public-cookie"), &[]).await;
    assert_eq!(a.text(), b.text());
    assert!(a.headers.contains_key("set-cookie"));
    assert!(!b.headers.contains_key("set-cookie"));
}

#[tokio::test]
async fn vary_keeps_one_entry_per_variant() {
    let up = origin().await;
    let p = Proxy::start(&config(up.addr, ""));
    let en1 = get_h(&p.url("/lang"), &[("accept-language", "en")]).await.text();
    let de1 = get_h(&p.url("/lang"), &[("accept-language", "de")]).await.text();
    let none1 = get_h(&p.url("/lang"), &[]).await.text();
    assert!(en1.contains("Some(\"en\")") && de1.contains("Some(\"de\")") && none1.contains("None"));
    assert_eq!(get_h(&p.url("/lang"), &[("accept-language", "en")]).await.text(), en1);
    assert_eq!(get_h(&p.url("/lang"), &[("accept-language", "de")]).await.text(), de1);
    assert_eq!(get_h(&p.url("/lang"), &[]).await.text(), none1);
    assert_eq!(up.hits(), 3);
}

/// An upstream that answers "slow and shared", cacheable, after `delay`.
async fn slow_and_shared(delay: Duration) -> Upstream {
    Upstream::start(move |_req| async move {
        tokio::time::sleep(delay).await;
        reply(200, &[("cache-control", "max-age=60".into())], "slow and shared")
    })
    .await
}

/// `n` concurrent GETs of `url`, each on its own task.
fn spawn_gets(url: &str, n: usize) -> Vec<tokio::task::JoinHandle<Answer>> {
    (0..n)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move { get_h(&url, &[]).await })
        })
        .collect()
}

#[tokio::test]
async fn a_burst_of_concurrent_misses_makes_one_upstream_request() {
    let up = slow_and_shared(Duration::from_millis(300)).await;
    let p = Proxy::start(&config(up.addr, "lock_timeout = \"20s\""));
    for t in spawn_gets(&p.url("/burst"), 100) {
        let a = t.await.unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.text(), "slow and shared");
    }
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn waiters_give_up_after_lock_timeout_and_go_upstream() {
    let release = Arc::new(tokio::sync::Notify::new());
    let r2 = Arc::clone(&release);
    let up = Upstream::start(move |req: Request<Incoming>| {
        let r = Arc::clone(&r2);
        async move {
            if req.headers().contains_key("x-first") {
                r.notified().await;
            }
            reply(200, &[("cache-control", "max-age=60".into())], "answer")
        }
    })
    .await;
    let p = Proxy::start(&config(up.addr, "lock_timeout = \"200ms\""));
    let url = p.url("/held");
    let first = tokio::spawn({
        let url = url.clone();
        async move { get_h(&url, &[("x-first", "1")]).await }
    });
    assert!(eventually(Duration::from_secs(10), || up.hits() == 1).await);
    // The leader is stuck; a follower waits lock_timeout, then goes itself.
    assert_eq!(get_h(&url, &[]).await.text(), "answer");
    assert_eq!(up.hits(), 2);
    release.notify_one();
    assert_eq!(first.await.unwrap().text(), "answer");
}

/// An upstream whose answers are already stale (Age past max-age), with an
/// ETag it answers 304 for; it records the If-None-Match it is sent.
async fn stale_origin(cc: &'static str, failing: Arc<AtomicBool>, seen: Arc<Mutex<Vec<String>>>) -> Upstream {
    Upstream::start(move |req: Request<Incoming>| {
        let failing = Arc::clone(&failing);
        let seen = Arc::clone(&seen);
        async move {
            let inm = req.headers().get("if-none-match").map(|v| v.to_str().unwrap().to_string());
            seen.lock().unwrap().push(inm.clone().unwrap_or_default());
            if failing.load(Ordering::SeqCst) {
                return reply(503, &[], "down");
            }
            if inm.as_deref() == Some("\"v1\"") {
                return reply(304, &[("etag", "\"v1\"".into()), ("cache-control", "max-age=60".into())], "");
            }
            reply(200, &[("cache-control", cc.into()), ("age", "61".into()), ("etag", "\"v1\"".into())], "version one")
        }
    })
    .await
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_revalidates_in_the_background() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let up =
        stale_origin("max-age=60, stale-while-revalidate=600", Arc::new(AtomicBool::new(false)), Arc::clone(&seen))
            .await;
    let p = Proxy::start(&config(up.addr, ""));
    assert_eq!(get_h(&p.url("/swr"), &[]).await.text(), "version one");
    let stale = get_h(&p.url("/swr"), &[]).await;
    assert_eq!(stale.text(), "version one");
    assert!(cache_status(&stale).contains("detail=stale-while-revalidate"), "{}", cache_status(&stale));
    // The background request is conditional; its 304 makes the entry fresh.
    assert!(eventually(Duration::from_secs(10), || seen.lock().unwrap().iter().any(|s| s == "\"v1\"")).await);
    // Fresh again for max-age=60: a hit with most of that left (a slow
    // machine may take seconds to ask, so not exactly 60).
    let fresh_ttl = |status: String| {
        status
            .strip_prefix("Rampart; hit; ttl=")
            .and_then(|t| t.parse::<i64>().ok())
            .is_some_and(|t| (30..=60).contains(&t))
    };
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            fresh_ttl(cache_status(&get_h(&p.url("/swr"), &[]).await))
        })
        .await
    );
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn stale_if_error_covers_5xx_and_a_dead_upstream() {
    let failing = Arc::new(AtomicBool::new(false));
    let up = stale_origin("max-age=60, stale-if-error=600", Arc::clone(&failing), Arc::new(Mutex::new(vec![]))).await;
    let p = Proxy::start(&config(up.addr, ""));
    assert_eq!(get_h(&p.url("/sie"), &[]).await.text(), "version one");
    failing.store(true, Ordering::SeqCst);
    let a = get_h(&p.url("/sie"), &[]).await;
    assert_eq!((a.status, a.text()), (StatusCode::OK, "version one".to_string()));
    assert!(cache_status(&a).contains("fwd-status=503; detail=stale-if-error"), "{}", cache_status(&a));
    up.stop();
    let b = get_h(&p.url("/sie"), &[]).await;
    assert_eq!((b.status, b.text()), (StatusCode::OK, "version one".to_string()));
    assert!(cache_status(&b).contains("fwd-status=502"), "{}", cache_status(&b));
}

#[tokio::test]
async fn without_stale_if_error_an_error_is_passed_on() {
    let failing = Arc::new(AtomicBool::new(false));
    let up = stale_origin("max-age=60", Arc::clone(&failing), Arc::new(Mutex::new(vec![]))).await;
    let p = Proxy::start(&config(up.addr, ""));
    assert_eq!(get_h(&p.url("/x"), &[]).await.text(), "version one");
    failing.store(true, Ordering::SeqCst);
    assert_eq!(get_h(&p.url("/x"), &[]).await.status, 503);
}

#[tokio::test]
async fn a_stale_entry_is_revalidated_with_its_etag() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let up = stale_origin("max-age=60", Arc::new(AtomicBool::new(false)), Arc::clone(&seen)).await;
    let p = Proxy::start(&config(up.addr, ""));
    assert_eq!(get_h(&p.url("/r"), &[]).await.text(), "version one");
    let again = get_h(&p.url("/r"), &[]).await;
    assert_eq!((again.status, again.text()), (StatusCode::OK, "version one".to_string()));
    assert!(cache_status(&again).contains("fwd=stale; fwd-status=304"), "{}", cache_status(&again));
    assert_eq!(seen.lock().unwrap().as_slice(), ["", "\"v1\""]);
    // Refreshed by the 304: a plain hit now.
    assert!(cache_status(&get_h(&p.url("/r"), &[]).await).contains("hit"));
    assert_eq!(up.hits(), 2);
    let metrics = get(&p.admin_url("/metrics"), "admin").await.text();
    assert!(metrics.contains("rampart_cache_requests_total{route=\"site\",result=\"revalidated\"} 1"), "{metrics}");
}

#[tokio::test]
async fn large_objects_stream_through_uncached() {
    let up = origin().await;
    let p = Proxy::start(&config(up.addr, "max_object_size = \"16KiB\""));
    for _ in 0..2 {
        let a = get_h(&p.url("/big"), &[]).await;
        assert_eq!(a.body.len(), 64 * 1024);
    }
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn unsafe_methods_invalidate_and_bypass() {
    let up = origin().await;
    let p = Proxy::start(&config(up.addr, ""));
    assert_eq!(get_h(&p.url("/doc"), &[]).await.text(), "n=1 path=/doc");
    assert_eq!(get_h(&p.url("/doc"), &[]).await.text(), "n=1 path=/doc");
    let post = send(&client(), Request::post(p.url("/doc")).header("host", "site.test").body(full("x")).unwrap()).await;
    assert!(cache_status(&post).contains("fwd=method"));
    assert_eq!(get_h(&p.url("/doc"), &[]).await.text(), "n=3 path=/doc");
}

#[tokio::test]
async fn purge_by_host_and_prefix_and_reload_keeps_the_cache() {
    let up = origin().await;
    let p = Proxy::start(&config(up.addr, ""));
    for path in ["/assets/a", "/assets/b", "/other"] {
        get_h(&p.url(path), &[]).await;
    }
    assert_eq!(up.hits(), 3);
    // A reload with a changed definition keeps what is stored.
    std::fs::write(p.config_path(), format!("{LISTEN}\n{}", config(up.addr, "default_ttl = \"1s\""))).unwrap();
    assert_eq!(post_reload(&p).await.status, 200);
    assert_eq!(get_h(&p.url("/assets/a"), &[]).await.text(), "n=1 path=/assets/a");
    let c = client();
    let purge = |body: &'static str| send(&c, Request::post(p.admin_url("/api/cache/purge")).body(full(body)).unwrap());
    assert_eq!(purge(r#"{"host": "elsewhere.test", "path_prefix": "/assets/"}"#).await.json()["purged"], 0);
    assert_eq!(purge(r#"{"host": "site.test", "path_prefix": "/assets/"}"#).await.json()["purged"], 2);
    assert_eq!(purge(r#"{"nonsense": 1}"#).await.status, 400);
    assert_eq!(get_h(&p.url("/assets/a"), &[]).await.text(), "n=4 path=/assets/a");
    assert_eq!(get_h(&p.url("/other"), &[]).await.text(), "n=3 path=/other");
}

#[tokio::test]
async fn the_disk_tier_survives_a_restart_and_drops_corrupt_files() {
    let up = origin().await;
    let cache_dir = tempfile::tempdir().unwrap();
    let junk = cache_dir.path().join("0123456789abcdef0123456789abcdef");
    std::fs::write(&junk, b"not a cache file").unwrap();
    let cfg = config(up.addr, &format!("dir = \"{}\"", cache_dir.path().display()));
    let p = Proxy::start(&cfg);
    assert!(!junk.exists(), "a corrupt file is removed at start");
    assert_eq!(get_h(&p.url("/kept"), &[]).await.text(), "n=1 path=/kept");
    // Written in the background: a temporary file first, then renamed.
    let files = || {
        std::fs::read_dir(cache_dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count()
    };
    assert!(eventually(Duration::from_secs(10), || files() == 1).await);
    drop(p);
    let p = Proxy::start(&cfg);
    let a = get_h(&p.url("/kept"), &[]).await;
    assert_eq!(a.text(), "n=1 path=/kept");
    assert!(cache_status(&a).contains("hit"));
    assert_eq!(up.hits(), 1);
    let metrics = get(&p.admin_url("/metrics"), "admin").await.text();
    let disk = metrics.lines().find(|l| l.starts_with("rampart_cache_bytes{tier=\"disk\"}")).unwrap();
    assert!(!disk.ends_with(" 0"), "{disk}");
}

#[tokio::test]
async fn compress_before_cache_compresses_hits_per_client_from_one_stored_body() {
    let up = Upstream::start(|_req| async {
        reply(
            200,
            &[("cache-control", "max-age=60".into()), ("content-type", "text/plain".into())],
            "abc ".repeat(1000),
        )
    })
    .await;
    let cfg = config(up.addr, "").replace("middleware = [\"edge\"]", "middleware = [\"gzip\", \"edge\"]")
        + "\n[middleware.gzip]\ntype = \"compress\"\nalgorithms = [\"gzip\"]\n";
    let p = Proxy::start(&cfg);
    let gz = get_h(&p.url("/text"), &[("accept-encoding", "gzip")]).await;
    assert_eq!(gz.headers["content-encoding"], "gzip");
    assert!(gz.body.len() < 4000);
    let plain = get_h(&p.url("/text"), &[]).await;
    assert!(!plain.headers.contains_key("content-encoding"));
    assert_eq!(plain.text(), "abc ".repeat(1000));
    assert!(cache_status(&plain).contains("hit"), "{}", cache_status(&plain));
    let gz_hit = get_h(&p.url("/text"), &[("accept-encoding", "gzip")]).await;
    assert_eq!(gz_hit.headers["content-encoding"], "gzip");
    assert!(cache_status(&gz_hit).contains("hit"));
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn a_cacheable_body_streams_to_the_client_while_it_is_captured() {
    use http_body_util::BodyExt;
    let go_on = Arc::new(tokio::sync::Notify::new());
    let g2 = Arc::clone(&go_on);
    let up = Upstream::start(move |_req| {
        let go_on = Arc::clone(&g2);
        async move {
            let chunks = futures_util::stream::unfold(0, move |i| {
                let go_on = Arc::clone(&go_on);
                async move {
                    match i {
                        0 => Some((Ok(http_body::Frame::data(bytes::Bytes::from_static(b"first,"))), 1)),
                        1 => {
                            // The rest only once the client has the first part.
                            go_on.notified().await;
                            Some((Ok(http_body::Frame::data(bytes::Bytes::from_static(b"second"))), 2))
                        }
                        _ => None,
                    }
                }
            });
            let body: BoxBody = http_body_util::StreamBody::new(chunks).boxed();
            let mut r = Response::new(body);
            r.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
            r
        }
    })
    .await;
    let p = Proxy::start(&config(up.addr, ""));
    let req = Request::get(p.url("/stream")).header("host", "site.test").body(full("")).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client().request(req)).await.unwrap().unwrap();
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame()).await.expect("first part streamed");
    assert_eq!(&first.unwrap().unwrap().into_data().unwrap()[..], b"first,");
    go_on.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"second");
    // And the whole body was stored.
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            get_h(&p.url("/stream"), &[]).await.text() == "first,second"
        })
        .await
    );
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn memory_stays_within_max_size_by_evicting() {
    let up =
        Upstream::start(|_req| async { reply(200, &[("cache-control", "max-age=60".into())], vec![b'y'; 8 * 1024]) })
            .await;
    let p = Proxy::start(&config(up.addr, "max_size = \"64KiB\"\nmax_object_size = \"16KiB\""));
    for i in 0..40 {
        assert_eq!(get_h(&p.url(&format!("/obj/{i}")), &[]).await.body.len(), 8 * 1024);
    }
    let status = status(&p).await;
    let cache = &status["cache"]["edge"];
    assert!(cache["memory_bytes"].as_u64().unwrap() <= 64 * 1024, "{cache}");
    let entries = cache["entries"].as_u64().unwrap();
    assert!((1..40).contains(&entries), "{cache}");
    assert_eq!(up.hits(), 40);
}

#[tokio::test]
async fn vary_values_that_differ_only_in_non_utf8_bytes_are_two_variants() {
    let up = Upstream::start(|req: Request<Incoming>| async move {
        let cookie = req.headers().get("cookie").map(|v| v.as_bytes().to_vec()).unwrap_or_default();
        let body = format!("for {cookie:?}");
        reply(200, &[("cache-control", "max-age=60".into()), ("vary", "Cookie".into())], body)
    })
    .await;
    let p = Proxy::start(&config(up.addr, ""));
    let with_cookie = |value: &'static [u8]| {
        let req = Request::get(p.url("/v"))
            .header("host", "site.test")
            .header("cookie", http::HeaderValue::from_bytes(value).unwrap())
            .body(full(""))
            .unwrap();
        async move { send(&client(), req).await }
    };
    let a = with_cookie(b"token=\xe9\xe9\xe9").await;
    let b = with_cookie(b"token=\xe8\xe7\xe6").await;
    assert_ne!(a.text(), b.text(), "one client's variant served to another");
    assert_eq!(up.hits(), 2);
    // Each is still a hit for its own value.
    assert_eq!(with_cookie(b"token=\xe9\xe9\xe9").await.text(), a.text());
    assert_eq!(with_cookie(b"token=\xe8\xe7\xe6").await.text(), b.text());
    assert_eq!(up.hits(), 2);
}

/// An upstream whose first answer is stale with an ETag, and whose 304 to
/// the revalidation adds `extra` (a `Cache-Control`, a cookie).
async fn revalidated_with(extra: &'static [(&'static str, &'static str)]) -> Upstream {
    Upstream::start(move |req: Request<Incoming>| async move {
        if req.headers().get("if-none-match").is_some_and(|v| v == "\"v1\"") {
            let mut headers = vec![("etag", "\"v1\"".to_string())];
            headers.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
            return reply(304, &headers, "");
        }
        let headers = [("cache-control", "max-age=60".into()), ("age", "61".into()), ("etag", "\"v1\"".into())];
        reply(200, &headers, "version one")
    })
    .await
}

#[tokio::test]
async fn a_304_that_makes_the_response_private_ends_its_reuse() {
    for (what, extra) in [
        ("private", &[("cache-control", "private, max-age=60")][..]),
        ("no-store", &[("cache-control", "no-store")][..]),
        ("a cookie", &[("cache-control", "max-age=60"), ("set-cookie", "sid=new")][..]),
    ] {
        let up = revalidated_with(extra).await;
        let p = Proxy::start(&config(up.addr, ""));
        assert_eq!(get_h(&p.url("/r"), &[]).await.text(), "version one");
        // The revalidating client gets the refreshed answer, and the 304's
        // cookie with it: the 304 answered its request.
        let refreshed = get_h(&p.url("/r"), &[]).await;
        assert_eq!(refreshed.text(), "version one", "{what}");
        assert!(cache_status(&refreshed).contains("fwd-status=304"), "{what}: {}", cache_status(&refreshed));
        assert!(!cache_status(&refreshed).contains("stored"), "{what}: {}", cache_status(&refreshed));
        let cookie = refreshed.headers.get("set-cookie");
        assert_eq!(cookie.is_some(), what == "a cookie", "{what}: {cookie:?}");
        // Nobody else is answered from it: the next request goes upstream.
        let next = get_h(&p.url("/r"), &[]).await;
        assert!(!cache_status(&next).contains("hit"), "{what}: {}", cache_status(&next));
        assert!(next.headers.get("set-cookie").is_none(), "{what}");
        assert_eq!(up.hits(), 3, "{what}");
    }
}

#[tokio::test]
async fn a_304_cookie_goes_to_its_client_and_is_not_stored() {
    let up = revalidated_with(&[("cache-control", "public, max-age=60"), ("set-cookie", "sid=new")]).await;
    let p = Proxy::start(&config(up.addr, ""));
    assert_eq!(get_h(&p.url("/r"), &[]).await.text(), "version one");
    let refreshed = get_h(&p.url("/r"), &[]).await;
    assert_eq!(refreshed.headers.get("set-cookie").map(|v| v.to_str().unwrap()), Some("sid=new"));
    assert!(cache_status(&refreshed).contains("fwd-status=304; stored"), "{}", cache_status(&refreshed));
    // `public` keeps it stored; the cookie stays with the client it was for.
    let hit = get_h(&p.url("/r"), &[]).await;
    assert!(cache_status(&hit).starts_with("Rampart; hit"), "{}", cache_status(&hit));
    assert!(hit.headers.get("set-cookie").is_none());
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn when_the_leading_client_leaves_one_waiter_takes_over() {
    let up = slow_and_shared(Duration::from_millis(1500)).await;
    let p = Proxy::start(&config(up.addr, "lock_timeout = \"20s\""));
    let url = p.url("/lead");
    // The leader's client gives up while its answer is on the way.
    let leader = tokio::spawn({
        let url = url.clone();
        async move { tokio::time::timeout(Duration::from_millis(700), get_h(&url, &[])).await.is_err() }
    });
    assert!(eventually(Duration::from_secs(10), || up.hits() == 1).await);
    let waiters = spawn_gets(&url, 20);
    assert!(leader.await.unwrap(), "the leading client was meant to leave first");
    for w in waiters {
        let a = w.await.unwrap();
        assert_eq!((a.status, a.text()), (StatusCode::OK, "slow and shared".to_string()));
    }
    // The first fetch, and one more by the waiter that took over: not one
    // per waiter.
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn a_small_max_size_alone_caps_the_object_size() {
    let up = origin().await;
    // max_object_size's default (8 MiB) follows a smaller max_size.
    let p = Proxy::start(&config(up.addr, "max_size = \"1MiB\""));
    assert_eq!(get_h(&p.url("/page"), &[]).await.text(), "n=1 path=/page");
    assert!(cache_status(&get_h(&p.url("/page"), &[]).await).starts_with("Rampart; hit"));
}

#[tokio::test]
async fn a_range_of_a_stored_answer_is_cut_from_the_cache() {
    let up = Upstream::start(|_req| async {
        let headers = [
            ("cache-control", "max-age=60".to_string()),
            ("etag", "\"e1\"".to_string()),
            ("last-modified", "Mon, 07 Dec 2026 10:00:00 GMT".to_string()),
        ];
        reply(200, &headers, "0123456789")
    })
    .await;
    let p = Proxy::start(&config(up.addr, ""));
    assert_eq!(get_h(&p.url("/v"), &[]).await.text(), "0123456789");
    let part = get_h(&p.url("/v"), &[("range", "bytes=2-5")]).await;
    assert_eq!((part.status, part.text()), (StatusCode::PARTIAL_CONTENT, "2345".to_string()));
    assert_eq!(part.headers["content-range"], "bytes 2-5/10");
    assert_eq!(part.headers["content-length"], "4");
    assert!(cache_status(&part).starts_with("Rampart; hit"), "{}", cache_status(&part));
    let tail = get_h(&p.url("/v"), &[("range", "bytes=-3")]).await;
    assert_eq!((tail.status, tail.text()), (StatusCode::PARTIAL_CONTENT, "789".to_string()));
    let past = get_h(&p.url("/v"), &[("range", "bytes=10-")]).await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(past.headers["content-range"], "bytes */10");
    // If-Range naming the stored version keeps the range; another gets it all.
    for (if_range, want) in [
        ("\"e1\"", StatusCode::PARTIAL_CONTENT),
        ("Mon, 07 Dec 2026 10:00:00 GMT", StatusCode::PARTIAL_CONTENT),
        ("\"e0\"", StatusCode::OK),
        ("W/\"e1\"", StatusCode::OK),
    ] {
        let a = get_h(&p.url("/v"), &[("range", "bytes=0-0"), ("if-range", if_range)]).await;
        assert_eq!(a.status, want, "If-Range: {if_range}");
    }
    // Several ranges, or another unit: the whole answer, as nginx does.
    for range in ["bytes=0-1,4-5", "items=0-1"] {
        let a = get_h(&p.url("/v"), &[("range", range)]).await;
        assert_eq!((a.status, a.text()), (StatusCode::OK, "0123456789".to_string()), "{range}");
    }
    // HEAD ignores Range.
    let head = send(
        &client(),
        Request::head(p.url("/v")).header("host", "site.test").header("range", "bytes=2-5").body(full("")).unwrap(),
    )
    .await;
    assert_eq!((head.status, head.headers["content-length"].to_str().unwrap()), (StatusCode::OK, "10"));
    assert_eq!(up.hits(), 1);
}

/// `Surrogate-Control` is the origin's word to this cache: over
/// `Cache-Control` here, targeted `;rampart` over untargeted, and never
/// passed on to clients; the origin hears this cache announce itself.
#[tokio::test]
async fn surrogate_control_rules_this_cache_and_stops_here() {
    let capabilities = Arc::new(Mutex::new(Vec::new()));
    let n = Arc::new(AtomicUsize::new(0));
    let up = Upstream::start({
        let capabilities = Arc::clone(&capabilities);
        move |req: Request<Incoming>| {
            let n = n.fetch_add(1, Ordering::SeqCst) + 1;
            let seen = req.headers().get("surrogate-capability").map(|v| v.to_str().unwrap().to_string());
            capabilities.lock().unwrap().push(seen);
            async move {
                let h = |cc: &str, sc: &str| [("cache-control", cc.to_string()), ("surrogate-control", sc.to_string())];
                let body = format!("n={n}");
                match req.uri().path() {
                    // For browsers: never store; for the edge: a minute.
                    "/edge-only" => reply(200, &h("no-store", "max-age=60"), body),
                    "/not-at-edge" => reply(200, &h("max-age=600", "no-store"), body),
                    "/targeted" => reply(200, &h("max-age=600", "no-store, max-age=60;rampart"), body),
                    _ => reply(200, &h("no-store", "max-age=60;other"), body),
                }
            }
        }
    })
    .await;
    let p = Proxy::start(&config(up.addr, ""));
    let twice = |path: &'static str| {
        let url = p.url(path);
        async move { (get_h(&url, &[]).await, get_h(&url, &[]).await) }
    };
    let (a, b) = twice("/edge-only").await;
    assert_eq!((a.text(), b.text()), ("n=1".to_string(), "n=1".to_string()), "stored despite no-store");
    assert_eq!(b.headers["cache-control"], "no-store", "the browsers' directive is passed on");
    for answer in [&a, &b] {
        assert!(!answer.headers.contains_key("surrogate-control"), "{:?}", answer.headers);
    }
    let (a, b) = twice("/not-at-edge").await;
    assert_ne!(a.text(), b.text(), "stored despite Surrogate-Control: no-store");
    assert!(!a.headers.contains_key("surrogate-control"));
    // Targeted at this cache: over the untargeted no-store.
    let (a, b) = twice("/targeted").await;
    assert_eq!(a.text(), b.text(), "the rampart-targeted max-age did not count");
    // Targeted at another device: Cache-Control's no-store rules.
    let (a, b) = twice("/other").await;
    assert_ne!(a.text(), b.text(), "a max-age for another device counted");
    assert_eq!(up.hits(), 6);
    let seen = capabilities.lock().unwrap().clone();
    assert!(seen.iter().all(|c| c.as_deref() == Some("rampart=\"Surrogate/1.0\"")), "{seen:?}");
}

/// An upstream for the cases below: by path, after `delay`,
/// counting its requests; echoes the `Accept-Encoding` and `X-User` it got.
async fn probe_origin(delay: Duration) -> Upstream {
    Upstream::start(move |req: Request<Incoming>| async move {
        tokio::time::sleep(delay).await;
        let h = |n: &str| req.headers().get(n).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let body = format!("ae={} user={} text {}", h("accept-encoding"), h("x-user"), "x".repeat(1200));
        let cc = ("cache-control", "public, max-age=60".to_string());
        match req.uri().path() {
            "/vary-ae" => reply(200, &[cc, ("vary", "Accept-Encoding".into())], body),
            "/vary-user" => reply(200, &[cc, ("vary", "X-User".into())], body),
            "/cookie2" => {
                reply(200, &[("cache-control", "max-age=60".into()), ("set-cookie2", "s=ALICE".into())], body)
            }
            _ => reply(200, &[cc, ("etag", "\"e1\"".into()), ("content-type", "text/plain".into())], body),
        }
    })
    .await
}

/// Concurrent misses of a URL whose answer varies: one upstream request per
/// variant, not one per waiter of another variant than the first fetch's.
#[tokio::test]
async fn concurrent_misses_of_several_variants_make_one_request_each() {
    let up = probe_origin(Duration::from_millis(400)).await;
    let p = Proxy::start(&config(up.addr, "lock_timeout = \"20s\""));
    let url = p.url("/vary-ae");
    let gets: Vec<_> = (0..40)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let ae = if i % 2 == 0 { "gzip" } else { "br" };
                (ae, get_h(&url, &[("accept-encoding", ae)]).await)
            })
        })
        .collect();
    for g in gets {
        let (ae, a) = g.await.unwrap();
        assert!(a.text().starts_with(&format!("ae={ae} ")), "{ae}: {}", &a.text()[..20]);
    }
    assert_eq!(up.hits(), 2, "one fetch per variant");
}

/// Variants of quoted values, `Set-Cookie2`, and a host with a trailing dot
/// under a purge.
#[tokio::test]
async fn variants_purges_and_cookies_as_the_second_probe_found() {
    let up = probe_origin(Duration::ZERO).await;
    let p = Proxy::start(&config(up.addr, ""));
    // A comma inside a quoted string is the value's own: two variants.
    let a = get_h(&p.url("/vary-user"), &[("x-user", "\"a, b\"")]).await;
    let b = get_h(&p.url("/vary-user"), &[("x-user", "\"a,b\"")]).await;
    assert!(a.text().starts_with("ae= user=\"a, b\"") && b.text().starts_with("ae= user=\"a,b\""), "{}", b.text());
    // Set-Cookie2 sets a cookie too: not stored, never replayed.
    let first = get_h(&p.url("/cookie2"), &[]).await;
    let second = get_h(&p.url("/cookie2"), &[]).await;
    assert!(first.headers.contains_key("set-cookie2") && !cache_status(&second).contains("hit"));
    // A trailing dot is the same host, for the key and for a purge.
    get_h(&p.url("/page"), &[]).await;
    let dotted =
        send(&client(), Request::get(p.url("/page")).header("host", "site.test.").body(crate::util::full("")).unwrap())
            .await;
    assert!(cache_status(&dotted).contains("hit"), "{}", cache_status(&dotted));
    let purge = send(
        &client(),
        Request::post(p.admin_url("/api/cache/purge"))
            .body(crate::util::full("{\"host\": \"site.test\", \"path_prefix\": \"/page\"}"))
            .unwrap(),
    )
    .await;
    assert_eq!(purge.text(), "{\"purged\":1}");
}

/// A proxy with a cache whose upstream is fetching `/page` (slowly) for
/// one GET: the upstream, the proxy and that GET.
async fn fetch_under_way() -> (Upstream, Proxy, tokio::task::JoinHandle<Answer>) {
    let up = probe_origin(Duration::from_millis(800)).await;
    let p = Proxy::start(&config(up.addr, ""));
    let fetch = spawn_gets(&p.url("/page"), 1).pop().unwrap();
    assert!(eventually(Duration::from_secs(10), || up.hits() == 1).await);
    (up, p, fetch)
}

/// A purge while the key is being fetched: the fetch's answer goes to its
/// client but is not stored, so the purged content does not come back.
#[tokio::test]
async fn a_purge_during_a_fetch_is_not_undone_by_it() {
    let (up, p, fetch) = fetch_under_way().await;
    let purge = Request::post(p.admin_url("/api/cache/purge")).body(crate::util::full("{}")).unwrap();
    assert_eq!(send(&client(), purge).await.status, 200);
    assert_eq!(fetch.await.unwrap().status, 200);
    let after = get_h(&p.url("/page"), &[]).await;
    assert!(!cache_status(&after).contains("hit"), "{}", cache_status(&after));
    assert_eq!(up.hits(), 2);
}

/// A HEAD for a key a GET is fetching waits for it and is answered from
/// what it stores, as nginx converts HEAD to GET for the cache.
#[tokio::test]
async fn a_head_waits_for_the_get_that_is_fetching_its_key() {
    let (up, p, fetch) = fetch_under_way().await;
    let heads: Vec<_> = (0..10)
        .map(|_| {
            let url = p.url("/page");
            tokio::spawn(async move {
                send(&client(), Request::head(url).header("host", "site.test").body(crate::util::full("")).unwrap())
                    .await
            })
        })
        .collect();
    for h in heads {
        assert_eq!(h.await.unwrap().status, 200);
    }
    fetch.await.unwrap();
    assert_eq!(up.hits(), 1);
}

/// With compress around the cache: a ranged request's answer still says
/// `Vary: Accept-Encoding` (so it does not replace the compressed
/// variants), and a 304 from the cache carries the ETag and Vary the
/// compressed 200 has (RFC 9110 15.4.5).
#[tokio::test]
async fn compress_and_cache_agree_on_vary_and_validators() {
    let up = probe_origin(Duration::ZERO).await;
    let mw = "[middleware.gz]\ntype = \"compress\"\nmin_size = 10\n";
    let route = |order: &str| {
        format!(
            "[upstreams.app]\nservers = [\"{}\"]\n[middleware.edge]\ntype = \"cache\"\n{mw}\
             [[routes]]\nname = \"site\"\nhost = \"*\"\npath = \"/\"\nupstream = \"app\"\nmiddleware = [{order}]\n",
            up.addr
        )
    };
    // Cache first, compress after: the cache stores what compress made.
    let p = Proxy::start(&route("\"edge\", \"gz\""));
    let gz = get_h(&p.url("/page"), &[("accept-encoding", "gzip")]).await;
    assert_eq!(gz.headers["content-encoding"], "gzip");
    let ranged = get_h(&p.url("/page"), &[("range", "bytes=0-9")]).await;
    assert!(ranged.headers.get("vary").is_some_and(|v| v.to_str().unwrap().contains("accept-encoding")));
    let again = get_h(&p.url("/page"), &[("accept-encoding", "gzip")]).await;
    assert_eq!(again.headers.get("content-encoding").map(|v| v.to_str().unwrap()), Some("gzip"));
    // Compress first, cache after: hits are compressed per client, and so
    // are the validators of a 304.
    let p = Proxy::start(&route("\"gz\", \"edge\""));
    let ok = get_h(&p.url("/page"), &[("accept-encoding", "gzip")]).await;
    assert_eq!(ok.headers["etag"], "W/\"e1\"");
    let nm = get_h(&p.url("/page"), &[("accept-encoding", "gzip"), ("if-none-match", "W/\"e1\"")]).await;
    assert_eq!(nm.status, StatusCode::NOT_MODIFIED);
    assert_eq!(nm.headers["etag"], "W/\"e1\"");
    assert!(
        nm.headers.get("vary").is_some_and(|v| v.to_str().unwrap().contains("accept-encoding")),
        "{:?}",
        nm.headers
    );
}

/// The copies of responses being stored are bounded together by
/// `max_size`, not only each by `max_object_size`: 40 concurrent misses of
/// 4 MB bodies, half sent and then held by the upstream, made the proxy
/// hold each one's copy (80 MB here; 1.3 GB for 200 misses of 8 MB under a
/// 64 MiB cache). Past the bound a response streams through unstored.
#[tokio::test]
async fn concurrent_fills_are_bounded_by_max_size() {
    use http_body_util::BodyExt;
    const SIZE: usize = 4_000_000;
    const MISSES: usize = 40;
    let release = Arc::new(tokio::sync::Notify::new());
    let arrived = Arc::new(AtomicUsize::new(0));
    let (r, a) = (Arc::clone(&release), Arc::clone(&arrived));
    let up = Upstream::start(move |_req: Request<Incoming>| {
        let (release, arrived) = (Arc::clone(&r), Arc::clone(&a));
        async move {
            arrived.fetch_add(1, Ordering::SeqCst);
            let chunks = futures_util::stream::unfold(0, move |i| {
                let release = Arc::clone(&release);
                async move {
                    match i {
                        0 => Some((Ok(http_body::Frame::data(bytes::Bytes::from(vec![b'x'; SIZE / 2]))), 1)),
                        1 => {
                            release.notified().await;
                            Some((Ok(http_body::Frame::data(bytes::Bytes::from(vec![b'y'; SIZE / 2]))), 2))
                        }
                        _ => None,
                    }
                }
            });
            let mut r = Response::new(http_body_util::StreamBody::new(chunks).boxed());
            r.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
            r.headers_mut().insert("content-length", SIZE.into());
            r
        }
    })
    .await;
    let p = Proxy::start(&config(up.addr, "max_size = \"4MiB\"\nmax_object_size = \"4MiB\""));
    let before = p.rss_kib();
    let gets: Vec<_> = (0..MISSES)
        .map(|i| {
            let req = Request::get(p.url(&format!("/fill/{i}"))).header("host", "site.test").body(full("")).unwrap();
            tokio::spawn(async move {
                let resp = client().request(req).await.unwrap();
                resp.into_body().collect().await.unwrap().to_bytes().len()
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(20), || arrived.load(Ordering::SeqCst) == MISSES).await);
    // Let the first halves reach the clients (through the proxy).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = p.rss_kib();
    release.notify_waiters();
    for g in gets {
        assert_eq!(g.await.unwrap(), SIZE, "every client still gets the whole body");
    }
    let grown_mib = during.saturating_sub(before) / 1024;
    assert!(grown_mib < 40, "the proxy grew by {grown_mib} MiB holding {MISSES} half-copied responses");
}
