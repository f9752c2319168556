//! Static upstreams (`static = DIR`) through the real binary, asked with raw
//! HTTP/1.1 requests as curl sends them: methods, index files, the SPA
//! fallback, validators and 304/412, ranges, types, precompressed
//! siblings, `cache_control`, the directory's walls (`..`, symlinks,
//! dotfiles, encoded slashes, FIFOs), response middleware on top, and a
//! 1 GiB file streamed with flat memory.

use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::*;

/// An answer read off the wire.
pub(crate) struct Raw {
    pub(crate) status: u16,
    head: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `METHOD PATH HTTP/1.1` with `extra` header lines, on a new connection
/// that the server closes after answering.
pub(crate) async fn raw(addr: SocketAddr, method: &str, path: &str, extra: &[(&str, &str)]) -> Raw {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: site.test\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("answer within 10 s")
        .unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let head =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Raw { status, head, body: answer[split + 4..].to_vec() }
}

pub(crate) async fn get(addr: SocketAddr, path: &str) -> Raw {
    raw(addr, "GET", path, &[]).await
}

pub(crate) fn write(root: &Path, rel: &str, body: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

/// A temp dir holding `site/` (the static root) and, beside it, a file
/// that must never be served.
fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("site");
    write(&s, "index.html", b"<h1>home</h1>\n");
    write(&s, "docs/index.html", b"docs home\n");
    write(&s, "docs/guide.txt", b"the guide\n");
    write(&s, "empty/.keep", b"");
    write(&s, "assets/app.3f2a.js", b"console.log('identity')\n");
    write(&s, "assets/app.3f2a.js.br", b"BROTLI-BYTES");
    write(&s, "assets/app.3f2a.js.gz", b"GZIP-BYTES");
    write(&s, "assets/style.css", b"body{}\n");
    write(&s, "assets/logo.svg", b"<svg/>\n");
    write(&s, "assets/mod.wasm", b"\0asm");
    write(&s, "assets/data.bin", b"0123456789abcdefghij");
    write(&s, "README", b"no extension\n");
    write(&s, "space name.txt", b"spaced\n");
    write(&s, ".env", b"SECRET=1\n");
    write(&s, ".git/config", b"[core]\n");
    write(&s, ".well-known/security.txt", b"Contact: mailto:sec@example.com\n");
    write(dir.path(), "outside.txt", b"OUTSIDE\n");
    symlink(dir.path().join("outside.txt"), s.join("leak.txt")).unwrap();
    symlink(dir.path(), s.join("up")).unwrap();
    symlink(s.join("docs/guide.txt"), s.join("guide-link.txt")).unwrap();
    symlink("docs/guide.txt", s.join("guide-rel.txt")).unwrap();
    symlink("../outside.txt", s.join("leak-rel.txt")).unwrap();
    symlink("..", s.join("up-rel")).unwrap();
    dir
}

pub(crate) fn start(dir: tempfile::TempDir, upstream_extra: &str, rest: &str) -> Proxy {
    Proxy::start_in(
        dir,
        &format!("[upstreams.site]\nstatic = \"site\"\n{upstream_extra}\n{rest}\n[[routes]]\nupstream = \"site\"\n"),
    )
}

#[tokio::test]
async fn get_and_head_only_others_get_405_with_allow() {
    let p = start(site(), "", "");
    let a = get(p.http, "/").await;
    assert_eq!((a.status, a.text().as_str()), (200, "<h1>home</h1>\n"));
    assert_eq!(a.header("content-length"), Some("14"));
    let h = raw(p.http, "HEAD", "/", &[]).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("14"), "HEAD keeps the length");
    assert_eq!(h.header("etag"), a.header("etag"));
    assert!(h.body.is_empty(), "HEAD has no body: {:?}", h.text());
    for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = raw(p.http, m, "/index.html", &[("Content-Length", "0")]).await;
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{m}");
    }
}

#[tokio::test]
async fn directories_answer_with_their_index_or_404_never_a_listing() {
    let p = start(site(), "", "");
    let r = get(p.http, "/docs").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/docs/"));
    assert_eq!(get(p.http, "/docs?v=2").await.header("location"), Some("/docs/?v=2"));
    let r = get(p.http, "/docs/").await;
    assert_eq!((r.status, r.text().as_str()), (200, "docs home\n"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let r = get(p.http, "/empty/").await;
    assert_eq!(r.status, 404, "no index, no listing: {}", r.text());
    assert!(!r.text().contains(".keep"));
    assert_eq!(get(p.http, "/missing.html").await.status, 404);
    assert_eq!(get(p.http, "/docs/missing/").await.status, 404);
    // A file named as a directory is none (ENOTDIR; nginx answers 404), not
    // the file under a type and `cache_control` rules of another name.
    // (The file answered first: its open-file cache entry is not reused.)
    assert_eq!(get(p.http, "/docs/guide.txt").await.status, 200);
    assert_eq!(get(p.http, "/docs/guide.txt/").await.status, 404);
    assert_eq!(get(p.http, "/space%20name.txt").await.text(), "spaced\n");

    // Another index list: the first file that exists answers.
    let dir = site();
    write(&dir.path().join("site"), "docs/default.htm", b"default\n");
    let p = start(dir, "index = [\"default.htm\", \"index.html\"]", "");
    assert_eq!(get(p.http, "/docs/").await.text(), "default\n");
    assert_eq!(get(p.http, "/").await.text(), "<h1>home</h1>\n");
}

#[tokio::test]
async fn a_spa_fallback_answers_unknown_paths_with_its_rules() {
    let p = start(
        site(),
        "fallback = \"/index.html\"\ncache_control = [{ path = \"/assets/\", value = \"public, max-age=31536000, immutable\" }, { path = \"*.html\", value = \"no-cache\" }]",
        "",
    );
    for path in ["/app/settings/profile", "/empty/", "/assets/gone.9b1c.js", "/assets/style.css/"] {
        let r = get(p.http, path).await;
        assert_eq!((r.status, r.text().as_str()), (200, "<h1>home</h1>\n"), "{path}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"), "{path}");
        // The rules of the file served, never `immutable` for the fallback.
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
    }
    let r = get(p.http, "/assets/style.css").await;
    assert_eq!(r.header("cache-control"), Some("public, max-age=31536000, immutable"));
    assert_eq!(get(p.http, "/docs/guide.txt").await.header("cache-control"), None);
    // What is refused stays refused: no fallback for a dotfile or a way out.
    assert_eq!(get(p.http, "/.env").await.status, 404);
    assert_eq!(get(p.http, "/%2e%2e/outside.txt").await.status, 400);
    assert_eq!(raw(p.http, "POST", "/app", &[("Content-Length", "0")]).await.status, 405);
}

#[tokio::test]
async fn validators_give_304_and_412() {
    let dir = site();
    let file = dir.path().join("site/docs/guide.txt");
    let p = start(dir, "", "");
    let a = get(p.http, "/docs/guide.txt").await;
    let etag = a.header("etag").unwrap().to_string();
    let lm = a.header("last-modified").unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with("-a\""), "{etag}");
    let r = raw(p.http, "GET", "/docs/guide.txt", &[("If-None-Match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = raw(p.http, "GET", "/docs/guide.txt", &[("If-None-Match", &format!("\"x\", W/{etag}"))]).await;
    assert_eq!(r.status, 304, "weak comparison");
    assert_eq!(raw(p.http, "HEAD", "/docs/guide.txt", &[("If-None-Match", &etag)]).await.status, 304);
    assert_eq!(raw(p.http, "GET", "/docs/guide.txt", &[("If-Modified-Since", &lm)]).await.status, 304);
    let r = raw(p.http, "GET", "/docs/guide.txt", &[("If-None-Match", "\"old\""), ("If-Modified-Since", &lm)]).await;
    assert_eq!(r.status, 200, "If-None-Match decides when present");
    let r = raw(p.http, "GET", "/docs/guide.txt", &[("If-Modified-Since", "Thu, 01 Jan 1998 00:00:00 GMT")]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "the guide\n"));
    assert_eq!(raw(p.http, "GET", "/docs/guide.txt", &[("If-Match", "\"other\"")]).await.status, 412);
    assert_eq!(raw(p.http, "GET", "/docs/guide.txt", &[("If-Match", &etag)]).await.status, 200);

    // A new version has a new validator: the old one no longer matches.
    std::fs::write(&file, b"the guide, second edition\n").unwrap();
    let r = raw(p.http, "GET", "/docs/guide.txt", &[("If-None-Match", &etag)]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "the guide, second edition\n"));
    assert_ne!(r.header("etag"), Some(etag.as_str()));
}

#[tokio::test]
async fn single_ranges_get_206_or_416_and_several_get_the_whole_file() {
    let p = start(site(), "", "");
    let addr = p.http;
    let range = |r: &'static str| async move { raw(addr, "GET", "/assets/data.bin", &[("Range", r)]).await };
    let r = range("bytes=0-3").await;
    assert_eq!((r.status, r.text().as_str()), (206, "0123"));
    assert_eq!(r.header("content-range"), Some("bytes 0-3/20"));
    assert_eq!(r.header("content-length"), Some("4"));
    let r = range("bytes=-5").await;
    assert_eq!((r.status, r.text().as_str(), r.header("content-range")), (206, "fghij", Some("bytes 15-19/20")));
    let r = range("bytes=18-").await;
    assert_eq!((r.status, r.text().as_str()), (206, "ij"));
    let r = range("bytes=10-999").await;
    assert_eq!((r.status, r.header("content-range")), (206, Some("bytes 10-19/20")));
    let r = range("bytes=20-").await;
    assert_eq!((r.status, r.header("content-range")), (416, Some("bytes */20")));
    let r = range("bytes=0-1,4-5").await;
    assert_eq!((r.status, r.text().as_str()), (200, "0123456789abcdefghij"));
    let r = range("bytes=oops").await;
    assert_eq!(r.status, 200);
    assert_eq!(get(p.http, "/assets/data.bin").await.header("accept-ranges"), Some("bytes"));
    let etag = get(p.http, "/assets/data.bin").await.header("etag").unwrap().to_string();
    let r = raw(p.http, "GET", "/assets/data.bin", &[("Range", "bytes=0-1"), ("If-Range", &etag)]).await;
    assert_eq!((r.status, r.text().as_str()), (206, "01"));
    let r = raw(p.http, "GET", "/assets/data.bin", &[("Range", "bytes=0-1"), ("If-Range", "\"stale\"")]).await;
    assert_eq!(r.status, 200, "a stale If-Range gets the whole file");
}

#[tokio::test]
async fn content_type_comes_from_the_extension() {
    let p = start(site(), "", "");
    for (path, ct) in [
        ("/index.html", "text/html; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
        ("/assets/app.3f2a.js", "text/javascript; charset=utf-8"),
        ("/assets/logo.svg", "image/svg+xml"),
        ("/assets/mod.wasm", "application/wasm"),
        ("/README", "application/octet-stream"),
    ] {
        assert_eq!(get(p.http, path).await.header("content-type"), Some(ct), "{path}");
    }
}

#[tokio::test]
async fn precompressed_siblings_follow_accept_encoding_with_vary() {
    let p = start(site(), "", "");
    let js = "/assets/app.3f2a.js";
    let addr = p.http;
    let with = |ae: &'static str| async move { raw(addr, "GET", js, &[("Accept-Encoding", ae)]).await };
    let r = with("gzip, deflate, br, zstd").await;
    assert_eq!((r.status, r.text().as_str()), (200, "BROTLI-BYTES"));
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.header("content-type"), Some("text/javascript; charset=utf-8"), "the original's type");
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    let br_etag = r.header("etag").unwrap().to_string();
    assert!(br_etag.ends_with("-br\""), "{br_etag}");
    let r = with("gzip").await;
    assert_eq!((r.text().as_str(), r.header("content-encoding")), ("GZIP-BYTES", Some("gzip")));
    let r = with("br;q=0.5, gzip;q=0.9").await;
    assert_eq!(r.header("content-encoding"), Some("gzip"), "q-values first");
    let r = with("zstd").await;
    assert_eq!((r.text().as_str(), r.header("content-encoding")), ("console.log('identity')\n", None), "no .zst");
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    let r = get(p.http, js).await;
    assert_eq!((r.text().as_str(), r.header("content-encoding")), ("console.log('identity')\n", None));
    let r = raw(p.http, "GET", js, &[("Accept-Encoding", "br"), ("If-None-Match", &br_etag)]).await;
    assert_eq!(r.status, 304, "each variant has its own validator");
    assert_eq!(raw(p.http, "GET", js, &[("Accept-Encoding", "gzip"), ("If-None-Match", &br_etag)]).await.status, 200);

    let p = start(site(), "precompressed = false", "");
    let r = raw(p.http, "GET", js, &[("Accept-Encoding", "br, gzip")]).await;
    assert_eq!(
        (r.text().as_str(), r.header("content-encoding"), r.header("vary")),
        ("console.log('identity')\n", None, None)
    );
}

#[tokio::test]
async fn cache_control_rules_by_prefix_or_suffix_first_match_wins() {
    let p = start(
        site(),
        "cache_control = [{ path = \"/assets/app.\", value = \"public, max-age=31536000, immutable\" }, { path = \"/assets/\", value = \"public, max-age=3600\" }, { path = \"*.txt\", value = \"no-store\" }]",
        "",
    );
    let addr = p.http;
    let cc = |path: &'static str| async move { get(addr, path).await.header("cache-control").map(str::to_string) };
    assert_eq!(cc("/assets/app.3f2a.js").await.as_deref(), Some("public, max-age=31536000, immutable"));
    assert_eq!(cc("/assets/style.css").await.as_deref(), Some("public, max-age=3600"));
    assert_eq!(cc("/docs/guide.txt").await.as_deref(), Some("no-store"));
    assert_eq!(cc("/docs/").await, None, "the index's path /docs/index.html has no rule");
    let lm = get(p.http, "/assets/style.css").await.header("etag").unwrap().to_string();
    let r = raw(p.http, "GET", "/assets/style.css", &[("If-None-Match", &lm)]).await;
    assert_eq!((r.status, r.header("cache-control")), (304, Some("public, max-age=3600")), "a 304 keeps it");
    // A 412 or 416 answers one request's conditions, not the file: no rule
    // a cache or browser would keep it by (nginx's `expires` skips them).
    let r = raw(p.http, "GET", "/assets/style.css", &[("If-Match", "\"other\"")]).await;
    assert_eq!((r.status, r.header("cache-control")), (412, None));
    let r = raw(p.http, "GET", "/assets/style.css", &[("Range", "bytes=999-")]).await;
    assert_eq!((r.status, r.header("cache-control")), (416, None));
}

#[tokio::test]
async fn a_cache_in_front_never_keeps_one_requests_412_or_416() {
    // The README's own rule: hashed assets immutable for a year.
    let p = start(
        site(),
        "cache_control = [{ path = \"/assets/\", value = \"public, max-age=31536000, immutable\" }]",
        "[middleware.edge]\ntype = \"cache\"\n[[routes]]\npath = \"/cached/\"\nstrip_prefix = true\n\
         upstream = \"site\"\nmiddleware = [\"edge\"]",
    );
    let r = raw(p.http, "GET", "/cached/assets/style.css", &[("If-Match", "\"other\"")]).await;
    assert_eq!(r.status, 412);
    let r = raw(p.http, "GET", "/cached/assets/data.bin", &[("Range", "bytes=999-")]).await;
    assert_eq!(r.status, 416);
    // Anyone's next plain GET gets the file, not the stored error.
    for (path, body) in [("/cached/assets/style.css", "body{}\n"), ("/cached/assets/data.bin", "0123456789abcdefghij")]
    {
        let r = get(p.http, path).await;
        assert_eq!((r.status, r.text().as_str()), (200, body), "{path}: {:?}", r.header("cache-status"));
        assert!(r.header("cache-status").is_some_and(|s| s.contains("stored")), "{path}: the 200 is what is kept");
        let r = get(p.http, path).await;
        assert_eq!((r.status, r.text().as_str()), (200, body), "{path}, then from the cache");
    }
}

#[tokio::test]
async fn paths_never_leave_the_directory() {
    let dir = site();
    let fifo = dir.path().join("site/pipe.txt");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let p = start(dir, "", "");
    for path in ["/../outside.txt", "/%2e%2e/outside.txt", "/docs/%2E%2E/%2e%2e/outside.txt", "/.%2e/outside.txt"] {
        let r = get(p.http, path).await;
        assert!(r.status == 400 || r.status == 404, "{path}: {}", r.status);
        assert!(!r.text().contains("OUTSIDE"), "{path}");
    }
    // A symlink out, absolute or relative, or through a linked directory,
    // is not followed.
    for path in ["/leak.txt", "/leak-rel.txt", "/up/outside.txt", "/up-rel/outside.txt"] {
        assert_eq!(get(p.http, path).await.status, 404, "{path}");
    }
    // One that stays inside is served, absolute or relative.
    assert_eq!(get(p.http, "/guide-link.txt").await.text(), "the guide\n");
    assert_eq!(get(p.http, "/guide-rel.txt").await.text(), "the guide\n");
    // Dotfiles are hidden, however the dot is written, but /.well-known/.
    for path in ["/.env", "/.git/config", "/%2egit/config", "/%2Eenv", "/.git/"] {
        assert_eq!(get(p.http, path).await.status, 404, "{path}");
    }
    assert_eq!(get(p.http, "/.well-known/security.txt").await.status, 200);
    // Encoded separators and NUL never reach the file system.
    for path in ["/docs%2Fguide.txt", "/docs%5Cguide.txt", "/index.html%00.txt"] {
        let r = get(p.http, path).await;
        assert!(r.status == 400 || r.status == 404, "{path}: {}", r.status);
    }
    // A FIFO is not a file: no hang, no answer from it.
    assert_eq!(get(p.http, "/pipe.txt").await.status, 404);

    let p = start(site(), "follow_symlinks = true\nallow_dotfiles = true", "");
    assert_eq!(get(p.http, "/leak.txt").await.text(), "OUTSIDE\n");
    assert_eq!(get(p.http, "/up/outside.txt").await.text(), "OUTSIDE\n");
    assert_eq!(get(p.http, "/leak-rel.txt").await.text(), "OUTSIDE\n");
    assert_eq!(get(p.http, "/.env").await.text(), "SECRET=1\n");
    assert_eq!(get(p.http, "/%2e%2e/outside.txt").await.status, 400, "`..` stays out even so");
}

#[tokio::test]
async fn response_middleware_applies_to_static_answers() {
    let dir = site();
    let big = "let x = 1;\n".repeat(400);
    write(&dir.path().join("site"), "assets/big.js", big.as_bytes());
    let p = start(
        dir,
        "",
        "[middleware.gzip]\ntype = \"compress\"\n[middleware.secure]\ntype = \"security_headers\"\n\
         [[routes]]\npath = \"/mw/\"\nstrip_prefix = true\nupstream = \"site\"\nmiddleware = [\"secure\", \"gzip\"]",
    );
    // No sibling: compressed on the fly, its validator weakened.
    let r = raw(p.http, "GET", "/mw/assets/big.js", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let weak = r.header("etag").unwrap().to_string();
    assert!(weak.starts_with("W/"), "{weak}");
    let r = raw(p.http, "GET", "/mw/assets/big.js", &[("Accept-Encoding", "gzip"), ("If-None-Match", &weak)]).await;
    assert_eq!(r.status, 304);
    // A precompressed sibling passes through as it is, not compressed twice.
    let r = raw(p.http, "GET", "/mw/assets/app.3f2a.js", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!((r.text().as_str(), r.header("content-encoding")), ("GZIP-BYTES", Some("gzip")));
    // strip_prefix: the redirect names the client's own path.
    assert_eq!(get(p.http, "/mw/docs").await.header("location"), Some("/mw/docs/"));
    assert_eq!(get(p.http, "/mw/docs/").await.text(), "docs home\n");
}

#[tokio::test]
async fn http2_streams_a_large_file_with_its_length() {
    let dir = site();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    write(&dir.path().join("site"), "assets/blob.bin", &body);
    let p = start(dir, "", "");
    let a = h2c_get(p.http, "http://site.test/assets/blob.bin").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-length"], "300000");
    assert!(a.body == body, "the same 300000 bytes over HTTP/2 ({} came)", a.body.len());
    let a = h2c_get(p.http, "http://site.test/docs").await;
    assert_eq!((a.status.as_u16(), a.headers["location"].to_str().unwrap()), (301, "/docs/"));
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_1_gib_file_streams_in_flat_memory() {
    const GIB: u64 = 1 << 30;
    let dir = site();
    // Sparse: no disk blocks, but every byte is read and sent.
    let f = std::fs::File::create(dir.path().join("site/big.iso")).unwrap();
    f.set_len(GIB).unwrap();
    drop(f);
    let p = start(dir, "", "");
    let before = peak_rss_kib(p.child.id());

    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET /big.iso HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got: Vec<u8> = Vec::new();
    let mut total = 0u64;
    let mut head_len = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        assert!(std::time::Instant::now() < deadline, "1 GiB within 5 minutes");
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        if head_len.is_none() {
            got.extend_from_slice(&buf[..n]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..i]).to_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                assert!(head.contains(&format!("content-length: {GIB}")), "{head}");
                head_len = Some(i + 4);
                total = (got.len() - (i + 4)) as u64;
                got = Vec::new();
            }
        } else {
            total += n as u64;
        }
    }
    assert_eq!(total, GIB, "every byte arrived");
    let after = peak_rss_kib(p.child.id());
    eprintln!("peak RSS before {before} KiB, after 1 GiB streamed {after} KiB");
    assert!(after < before + 64 * 1024, "peak RSS grew from {before} KiB to {after} KiB for a 1 GiB file");

    // A range far into it is a seek, not a read from the start.
    let r = raw(p.http, "GET", "/big.iso", &[("Range", "bytes=1073741000-")]).await;
    assert_eq!((r.status, r.body.len()), (206, 824));
    assert_eq!(r.header("content-range"), Some("bytes 1073741000-1073741823/1073741824"));
}

#[test]
fn check_reports_static_and_servers_both_or_neither_at_the_line() {
    let dir = site();
    let path = dir.path().join("rampart.toml");
    std::fs::write(
        &path,
        "[upstreams.both]\nservers = [\"127.0.0.1:1\"]\nstatic = \"site\"\n\n[upstreams.neither]\nbalance = \"least_conn\"\n\n\
         [upstreams.gone]\nstatic = \"no-such-dir\"\n",
    )
    .unwrap();
    let out = Command::new(binary()).args(["check", "--config"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let p = path.display();
    assert!(text.contains(&format!("{p}:3:10: error: upstream \"both\" has both `static` and `servers`")), "{text}");
    assert!(text.contains(&format!("{p}:5:1: error: upstream \"neither\" needs `servers`")), "{text}");
    assert!(text.contains(&format!("{p}:9:10: error: static directory")), "{text}");
}

/// Answers come from memory once a file was read (the open-file cache),
/// but never for a file that changed: an edit in place, a replacement, a
/// removal and a `current -> releases/N` switch are each seen by the very
/// next request.
#[tokio::test]
async fn changes_are_seen_by_the_next_request_though_answers_come_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("releases/1"), "app.js", b"release one\n");
    write(&dir.path().join("releases/2"), "app.js", b"release two\n");
    symlink("releases/1", dir.path().join("site")).unwrap();
    let root = dir.path().to_path_buf();
    let p = start(dir, "", "");
    let body = |addr| async move { get(addr, "/app.js").await.text() };
    for _ in 0..3 {
        assert_eq!(body(p.http).await, "release one\n");
    }
    let next = root.join("site.next");
    symlink("releases/2", &next).unwrap();
    std::fs::rename(&next, root.join("site")).unwrap();
    assert_eq!(body(p.http).await, "release two\n", "the switch");
    assert_eq!(body(p.http).await, "release two\n");

    let file = root.join("releases/2/app.js");
    std::fs::write(&file, b"release two, edited\n").unwrap();
    assert_eq!(body(p.http).await, "release two, edited\n", "an edit in place");
    let r = raw(p.http, "GET", "/app.js", &[("Range", "bytes=8-10")]).await;
    assert_eq!((r.status, r.text().as_str()), (206, "two"), "a range of the cached bytes");

    let tmp = root.join("releases/2/app.js.tmp");
    std::fs::write(&tmp, b"release two, replaced\n").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    assert_eq!(body(p.http).await, "release two, replaced\n", "a replacement");

    std::fs::remove_file(&file).unwrap();
    assert_eq!(get(p.http, "/app.js").await.status, 404, "a removal");
}

/// Edge cases answered as nginx and the RFC answer them: ranges of an
/// empty file, a future `If-Modified-Since`, lists over several lines, and
/// the root of a `strip_prefix` route without its slash.
#[tokio::test]
async fn edge_cases_answer_as_nginx_and_the_rfc_do() {
    let dir = site();
    write(&dir.path().join("site"), "empty.txt", b"");
    let p = Proxy::start_in(
        dir,
        "[upstreams.site]\nstatic = \"site\"\n\
         [[routes]]\nhost = \"*\"\npath = \"/w/\"\nstrip_prefix = true\nupstream = \"site\"\n\
         [[routes]]\nhost = \"*\"\npath = \"/\"\nupstream = \"site\"\n",
    );
    // Any range of an empty file: the whole (empty) file, as nginx answers
    // media players' `bytes=0-`.
    for range in ["bytes=0-", "bytes=0-0", "bytes=-1"] {
        let r = raw(p.http, "GET", "/empty.txt", &[("Range", range)]).await;
        assert_eq!((r.status, r.body.len()), (200, 0), "{range}");
    }
    // An If-Modified-Since later than now is no date the server sent.
    let r = raw(p.http, "GET", "/docs/guide.txt", &[("If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT")]).await;
    assert_eq!(r.status, 200);
    // A list over several lines is one list.
    let etag = get(p.http, "/docs/guide.txt").await.header("etag").unwrap().to_string();
    let r = raw(p.http, "GET", "/docs/guide.txt", &[("If-None-Match", "\"a\""), ("If-None-Match", &etag)]).await;
    assert_eq!(r.status, 304);
    let r = raw(p.http, "GET", "/docs/guide.txt", &[("If-Match", "\"a\""), ("If-Match", &etag)]).await;
    assert_eq!(r.status, 200);
    let r =
        raw(p.http, "GET", "/assets/app.3f2a.js", &[("Accept-Encoding", "identity"), ("Accept-Encoding", "br")]).await;
    assert_eq!(r.header("content-encoding"), Some("br"));
    // The root of a strip_prefix route without its slash: 301, as a
    // directory, so the page's relative links stay under /w/.
    let r = get(p.http, "/w").await;
    assert_eq!((r.status, r.header("location")), (301, Some("/w/")));
    assert_eq!(get(p.http, "/w?x=1").await.header("location"), Some("/w/?x=1"));
    assert_eq!(get(p.http, "/w/").await.text(), "<h1>home</h1>\n");
}

/// The directory replaced by a file while serving: 404 as missing, as
/// nginx answers, not 500.
#[tokio::test]
async fn a_directory_replaced_by_a_file_is_missing() {
    let dir = site();
    let root = dir.path().join("site");
    let p = start(dir, "", "");
    assert_eq!(get(p.http, "/docs/guide.txt").await.status, 200);
    std::fs::rename(&root, root.with_extension("away")).unwrap();
    std::fs::write(&root, b"a file now").unwrap();
    assert_eq!(get(p.http, "/index.html").await.status, 404);
    assert_eq!(get(p.http, "/docs/guide.txt").await.status, 404);
}
