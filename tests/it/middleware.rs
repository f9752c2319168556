//! Edge middleware through the real proxy: each type, the order of a chain,
//! and config errors.

use std::time::Duration;

use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::io::AsyncReadExt;

use crate::tls_util::curl;
use crate::util::*;

fn with_mw(up: &Upstream, defs: &str, chain: &str) -> String {
    format!("[upstreams.app]\nservers = [\"{}\"]\n{defs}\n[[routes]]\nname = \"r\"\nupstream = \"app\"\nmiddleware = [{chain}]\n", up.addr)
}

fn req(p: &Proxy, path: &str) -> http::request::Builder {
    Request::get(p.url(path)).header("host", "x")
}

#[tokio::test]
async fn rate_limit_answers_429_with_headers_and_counts_it() {
    let up = Upstream::named("ok").await;
    let p =
        Proxy::start(&with_mw(&up, "[middleware.limit]\ntype = \"rate_limit\"\naverage = 1\nburst = 3\n", "\"limit\""));
    let c = client();
    for i in 0..3 {
        let a = send(&c, req(&p, "/").body(full("")).unwrap()).await;
        assert_eq!(a.status, 200, "request {i}");
        // The bucket's size: what is left never exceeds it.
        assert_eq!(a.headers["ratelimit-limit"], "3");
        assert_eq!(a.headers["ratelimit-remaining"], (2 - i).to_string().as_str());
        // Until the bucket is full again: a second per token taken.
        assert_eq!(a.headers["ratelimit-reset"], (i + 1).to_string().as_str());
    }
    let a = send(&c, req(&p, "/").body(full("")).unwrap()).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after = a.headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(a.headers["ratelimit-remaining"], "0");
    let reset = a.headers["ratelimit-reset"].to_str().unwrap().parse::<u64>().unwrap();
    assert!(reset >= retry_after + 2 && reset <= 3, "reset {reset}, retry-after {retry_after}");
    assert_eq!(up.hits(), 3);
    let m = get(&p.admin_url("/metrics"), "a").await.text();
    assert!(m.contains("rampart_ratelimit_rejected_total{route=\"r\"} 1"), "{m}");
}

#[tokio::test]
async fn rate_limit_keys_by_header_or_by_forwarded_client() {
    let up = Upstream::named("ok").await;
    let p = Proxy::start(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n[upstreams.app]\nservers = [\"{}\"]\n\
         [middleware.by-key]\ntype = \"rate_limit\"\naverage = 1\nburst = 1\nkey_header = \"x-api-key\"\n\
         [middleware.by-ip]\ntype = \"rate_limit\"\naverage = 1\nburst = 1\ntrusted_proxies = [\"127.0.0.0/8\"]\n\
         [[routes]]\npath = \"/key\"\nupstream = \"app\"\nmiddleware = [\"by-key\"]\n\
         [[routes]]\npath = \"/ip\"\nupstream = \"app\"\nmiddleware = [\"by-ip\"]\n\
         [middleware.by-listener]\ntype = \"rate_limit\"\naverage = 1\nburst = 1\n\
         [[routes]]\npath = \"/listener\"\nupstream = \"app\"\nmiddleware = [\"by-listener\"]\n",
        up.addr
    ));
    let c = client();
    let with = |path: &str, h: &str, v: &str| req(&p, path).header(h, v).body(full("")).unwrap();
    assert_eq!(send(&c, with("/key", "x-api-key", "alpha")).await.status, 200);
    assert_eq!(send(&c, with("/key", "x-api-key", "alpha")).await.status, 429);
    assert_eq!(send(&c, with("/key", "x-api-key", "beta")).await.status, 200);
    // Behind a trusted proxy, each forwarded client has its own bucket.
    assert_eq!(send(&c, with("/ip", "x-forwarded-for", "198.51.100.1")).await.status, 200);
    assert_eq!(send(&c, with("/ip", "x-forwarded-for", "198.51.100.1")).await.status, 429);
    assert_eq!(send(&c, with("/ip", "x-forwarded-for", "198.51.100.2")).await.status, 200);
    // Without a list of its own, the limiter keys by the client the
    // listener's `[server] trusted_proxies` found, as `ip_allow` does:
    // clients behind the load balancer do not share one bucket.
    assert_eq!(send(&c, with("/listener", "x-forwarded-for", "198.51.100.1")).await.status, 200);
    assert_eq!(send(&c, with("/listener", "x-forwarded-for", "198.51.100.2")).await.status, 200);
    assert_eq!(send(&c, with("/listener", "x-forwarded-for", "198.51.100.1")).await.status, 429);
}

#[tokio::test]
async fn security_headers_defaults_overrides_and_stripping() {
    let up = Upstream::start(|_r| async {
        let mut r = Response::new(full("page"));
        r.headers_mut().insert("server", "Apache/2.4.1".parse().unwrap());
        r.headers_mut().insert("x-powered-by", "PHP/5".parse().unwrap());
        r
    })
    .await;
    let p = Proxy::start(&format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[tls]\ncerts_dir = \"certs\"\nredirect_http = false\n{}",
        with_mw(
            &up,
            "[middleware.secure]\ntype = \"security_headers\"\nframe_options = \"DENY\"\nreferrer_policy = \"\"\ncontent_security_policy = \"default-src 'self'\"\n",
            "\"secure\""
        )
    ));
    let a = get(&p.url("/"), "x").await;
    assert_eq!(a.headers["x-content-type-options"], "nosniff");
    assert_eq!(a.headers["x-frame-options"], "DENY");
    assert_eq!(a.headers["content-security-policy"], "default-src 'self'");
    assert!(a.headers.contains_key("permissions-policy"));
    assert!(!a.headers.contains_key("referrer-policy"), "removed by an empty string");
    assert!(!a.headers.contains_key("strict-transport-security"), "no HSTS over plain HTTP");
    assert!(!a.headers.contains_key("server") && !a.headers.contains_key("x-powered-by"));
    // Over HTTPS, HSTS is sent.
    let https = p.https.expect("https listener");
    let (ok, out, err) =
        curl(&["-k", "-D", "-", "-o", "/dev/null", &format!("https://localhost:{}/", https.port())]).await;
    assert!(ok, "{err}");
    assert!(
        out.to_ascii_lowercase().contains("strict-transport-security: max-age=31536000; includesubdomains"),
        "{out}"
    );
}

/// An application's own security headers stay (the defaults only fill
/// gaps, so its `DENY` or its short HSTS rollout is not weakened); a value
/// set in the config replaces the application's. HSTS goes on plain
/// requests a trusted proxy says came over HTTPS.
#[tokio::test]
async fn security_headers_keep_the_applications_own_unless_configured() {
    let up = Upstream::start(|_: Request<Incoming>| async move {
        let mut r = Response::new(full("page"));
        for (n, v) in [
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("strict-transport-security", "max-age=300"),
            ("x-content-type-options", "whatever"),
        ] {
            r.headers_mut().insert(n, v.parse().unwrap());
        }
        r
    })
    .await;
    let p = Proxy::start(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n{}",
        with_mw(
            &up,
            "[middleware.secure]\ntype = \"security_headers\"\ncontent_type_options = \"nosniff\"\n",
            "\"secure\""
        )
    ));
    let c = client();
    let a = send(&c, req(&p, "/").header("x-forwarded-proto", "https").body(full("")).unwrap()).await;
    assert_eq!(a.headers["x-frame-options"], "DENY");
    assert_eq!(a.headers["referrer-policy"], "no-referrer");
    assert_eq!(a.headers["strict-transport-security"], "max-age=300");
    assert_eq!(a.headers["x-content-type-options"], "nosniff", "configured: the edge's value");
    assert!(a.headers.contains_key("permissions-policy"), "a default fills a gap");
}

/// HSTS only for https: a trusted proxy's `X-Forwarded-Proto: https` counts,
/// the same header from anyone else does not.
#[tokio::test]
async fn hsts_follows_a_trusted_proxys_forwarded_proto() {
    let up = Upstream::named("ok").await;
    let mw = "[middleware.secure]\ntype = \"security_headers\"\n";
    let trusting =
        Proxy::start(&format!("[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n{}", with_mw(&up, mw, "\"secure\"")));
    let other = Proxy::start(&with_mw(&up, mw, "\"secure\""));
    let c = client();
    for (p, proto, hsts) in [(&trusting, "https", true), (&trusting, "http", false), (&other, "https", false)] {
        let a = send(&c, req(p, "/").header("x-forwarded-proto", proto).body(full("")).unwrap()).await;
        assert_eq!(a.headers.contains_key("strict-transport-security"), hsts, "{proto}: {:?}", a.headers);
    }
}

fn text_body(n: usize) -> String {
    (0..n).map(|i| ((i % 26) as u8 + b'a') as char).collect::<String>().replace("jkl", "<p>\n")
}

async fn decode(enc: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match enc {
        "gzip" => GzipDecoder::new(data).read_to_end(&mut out).await.unwrap(),
        "br" => BrotliDecoder::new(data).read_to_end(&mut out).await.unwrap(),
        "zstd" => ZstdDecoder::new(data).read_to_end(&mut out).await.unwrap(),
        other => panic!("unexpected encoding {other}"),
    };
    out
}

#[tokio::test]
async fn compression_negotiates_streams_and_stays_correct() {
    let page = text_body(100 * 1024);
    let page2 = page.clone();
    let up = Upstream::start(move |r: Request<Incoming>| {
        let page = page2.clone();
        async move {
            let path = r.uri().path().to_string();
            let mut resp = match path.as_str() {
                "/png" => {
                    let mut x = Response::new(full(vec![0u8; 4096]));
                    x.headers_mut().insert("content-type", "image/png".parse().unwrap());
                    x
                }
                "/small" => {
                    let mut x = Response::new(full("tiny"));
                    x.headers_mut().insert("content-type", "text/plain".parse().unwrap());
                    x
                }
                "/encoded" => {
                    let mut x = Response::new(full(page.clone()));
                    x.headers_mut().insert("content-encoding", "identity-ish".parse().unwrap());
                    x.headers_mut().insert("content-type", "text/html".parse().unwrap());
                    x
                }
                "/stream" => {
                    // Chunked, no length: streamed through the encoder.
                    let chunks: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> =
                        page.as_bytes().chunks(7000).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
                    let mut x = Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks))));
                    x.headers_mut().insert("content-type", "application/json".parse().unwrap());
                    x
                }
                _ => {
                    let mut x = Response::new(full(page.clone()));
                    x.headers_mut().insert("content-type", "text/html; charset=utf-8".parse().unwrap());
                    x.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
                    x.headers_mut().insert("accept-ranges", "bytes".parse().unwrap());
                    x
                }
            };
            resp.headers_mut().insert("x-up", "1".parse().unwrap());
            resp
        }
    })
    .await;
    let p = Proxy::start(&with_mw(&up, "[middleware.gzip]\ntype = \"compress\"\n", "\"gzip\""));
    let c = client();
    for (accept, expect) in [("gzip", "gzip"), ("gzip, deflate, br, zstd", "br"), ("zstd;q=1, gzip;q=0.5", "zstd")] {
        for path in ["/page", "/stream"] {
            let a = send(&c, req(&p, path).header("accept-encoding", accept).body(full("")).unwrap()).await;
            assert_eq!(a.status, 200);
            assert_eq!(a.headers["content-encoding"], expect, "{path} {accept}");
            assert!(!a.headers.contains_key("content-length"));
            assert_eq!(a.headers["vary"], "accept-encoding");
            assert!(a.body.len() < page.len() / 2, "{path}: {} bytes", a.body.len());
            assert_eq!(decode(expect, &a.body).await, page.as_bytes(), "{path} {accept}");
            if path == "/page" {
                assert_eq!(a.headers["etag"], "W/\"v1\"");
                assert!(!a.headers.contains_key("accept-ranges"));
            }
        }
    }
    // Not compressed: no Accept-Encoding, images, small bodies, already encoded, ranges.
    let plain = send(&c, req(&p, "/page").body(full("")).unwrap()).await;
    assert!(!plain.headers.contains_key("content-encoding"));
    assert_eq!(plain.headers["vary"], "accept-encoding");
    assert_eq!(plain.body, page.as_bytes());
    for path in ["/png", "/small", "/encoded"] {
        let a = send(&c, req(&p, path).header("accept-encoding", "gzip").body(full("")).unwrap()).await;
        assert_ne!(a.headers.get("content-encoding").map(|v| v.to_str().unwrap()), Some("gzip"), "{path}");
    }
    // HEAD gets the headers its GET would (RFC 9110 9.3.2), as with nginx,
    // also for a streamed answer whose length nobody knows.
    for path in ["/page", "/stream"] {
        let head = send(
            &c,
            Request::head(p.url(path)).header("host", "x").header("accept-encoding", "gzip").body(full("")).unwrap(),
        )
        .await;
        assert_eq!(head.headers.get("content-encoding").map(|v| v.to_str().unwrap()), Some("gzip"), "{path}");
        assert_eq!(head.headers.get("vary").map(|v| v.to_str().unwrap()), Some("accept-encoding"), "{path}");
        assert!(!head.headers.contains_key("content-length") && head.body.is_empty(), "{:?}", head.headers);
    }
    // Several Accept-Encoding lines are one list (RFC 9110 5.3).
    let lines = req(&p, "/page").header("accept-encoding", "deflate").header("accept-encoding", "gzip");
    let a = send(&c, lines.body(full("")).unwrap()).await;
    assert_eq!(a.headers.get("content-encoding").map(|v| v.to_str().unwrap()), Some("gzip"));
    let ranged = send(
        &c,
        req(&p, "/page").header("accept-encoding", "gzip").header("range", "bytes=0-10").body(full("")).unwrap(),
    )
    .await;
    assert!(!ranged.headers.contains_key("content-encoding"));
}

/// `Vary` stays one list without duplicates (cors adds `Origin` to an
/// upstream's `Vary: Origin` once), a 206 to a ranged request says it
/// varies by `Accept-Encoding` (its 200 would be compressed), and the
/// proxy's own short answers (a 429) are not compressed: under
/// `min_size` by their body's length, as nginx's `gzip_min_length`.
#[tokio::test]
async fn vary_lists_stay_single_and_short_own_answers_stay_plain() {
    let up = Upstream::start(|req: Request<Incoming>| async move {
        let mut r = Response::new(full("x".repeat(4000)));
        r.headers_mut().insert("content-type", "text/html".parse().unwrap());
        match req.uri().path() {
            "/ranged" => {
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                r.headers_mut().insert("content-range", "bytes 0-3999/8000".parse().unwrap());
            }
            "/varies" => {
                r.headers_mut().insert("vary", "Origin".parse().unwrap());
            }
            _ => {}
        }
        r
    })
    .await;
    let p = Proxy::start(&with_mw(
        &up,
        "[middleware.gzip]\ntype = \"compress\"\n\
         [middleware.cors]\ntype = \"cors\"\nallow_origins = [\"https://a.example\"]\n\
         [middleware.limit]\ntype = \"rate_limit\"\naverage = 1\nburst = 2\n",
        "\"gzip\", \"cors\", \"limit\"",
    ));
    let c = client();
    let tokens = |a: &Answer| -> Vec<String> {
        a.headers
            .get_all("vary")
            .iter()
            .flat_map(|v| v.to_str().unwrap().split(',').map(|t| t.trim().to_ascii_lowercase()).collect::<Vec<_>>())
            .collect()
    };
    let a = send(
        &c,
        req(&p, "/ranged").header("accept-encoding", "gzip").header("range", "bytes=0-3999").body(full("")).unwrap(),
    )
    .await;
    assert_eq!(a.status, 206);
    assert!(tokens(&a).contains(&"accept-encoding".to_string()), "{:?}", a.headers);
    let a = send(&c, req(&p, "/varies").header("origin", "https://a.example").body(full("")).unwrap()).await;
    assert_eq!(tokens(&a).iter().filter(|t| *t == "origin").count(), 1, "{:?}", a.headers);
    let a = send(&c, req(&p, "/").header("accept-encoding", "gzip").body(full("")).unwrap()).await;
    assert_eq!(a.status, 429);
    assert!(!a.headers.contains_key("content-encoding"), "{:?}", a.headers);
}

fn cors_config(up: &Upstream) -> String {
    with_mw(
        up,
        "[middleware.cors]\ntype = \"cors\"\nallow_origins = [\"https://logen.example.com\", \"https://*.example.org\"]\nallow_headers = [\"content-type\", \"x-custom\"]\nexpose_headers = [\"x-up\"]\nmax_age = \"10m\"\n",
        "\"cors\"",
    )
}

#[tokio::test]
async fn cors_preflight_is_answered_at_the_edge() {
    let up = Upstream::named("data").await;
    let p = Proxy::start(&cors_config(&up));
    let c = client();
    let preflight = |origin: &str| {
        Request::options(p.url("/api"))
            .header("host", "x")
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "x-custom")
            .body(full(""))
            .unwrap()
    };
    let a = send(&c, preflight("https://logen.example.com")).await;
    assert_eq!(a.status, 204);
    assert_eq!(a.headers["access-control-allow-origin"], "https://logen.example.com");
    assert!(a.headers["access-control-allow-methods"].to_str().unwrap().contains("PUT"));
    assert_eq!(a.headers["access-control-allow-headers"], "content-type, x-custom");
    assert_eq!(a.headers["access-control-max-age"], "600");
    assert!(a.headers["vary"].to_str().unwrap().contains("origin"));
    let a = send(&c, preflight("https://shop.example.org")).await;
    assert_eq!(a.status, 204);
    // Only a host may stand for the `*`: no path, query, fragment or escape.
    for bad in [
        "https://evil.com",
        "https://example.org",
        "http://shop.example.org",
        "https://example.org.evil.com",
        "https://evil.com/.example.org",
        "https://evil.com#.example.org",
        "https://evil.com?.example.org",
        "https://evil.com%2e.example.org",
    ] {
        let a = send(&c, preflight(bad)).await;
        assert_eq!(a.status, 403, "{bad}");
        assert!(!a.headers.contains_key("access-control-allow-origin"), "{bad}");
    }
    assert_eq!(up.hits(), 0, "preflights never reach the upstream");

    let simple = |origin: &str| req(&p, "/api").header("origin", origin).body(full("")).unwrap();
    let a = send(&c, simple("https://logen.example.com")).await;
    assert_eq!(a.text(), "data");
    assert_eq!(a.headers["access-control-allow-origin"], "https://logen.example.com");
    assert_eq!(a.headers["access-control-expose-headers"], "x-up");
    assert!(a.headers["vary"].to_str().unwrap().contains("origin"));
    let a = send(&c, simple("https://evil.com")).await;
    assert!(!a.headers.contains_key("access-control-allow-origin"));
    assert!(a.headers["vary"].to_str().unwrap().contains("origin"));
}

#[tokio::test]
async fn cors_in_a_real_browser() {
    let api = Upstream::named("secret-data").await;
    // Two page origins on loopback (different ports = different origins).
    let allowed_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let denied_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let allowed_port = allowed_l.local_addr().unwrap().port();
    let p = Proxy::start(&with_mw(
        &api,
        &format!("[middleware.cors]\ntype = \"cors\"\nallow_origins = [\"http://127.0.0.1:{allowed_port}\"]\n"),
        "\"cors\"",
    ));
    let target = format!("http://127.0.0.1:{}/api/data", p.http.port());
    let page = move |t: String| {
        format!(
            "<!doctype html><html><body><div id=\"out\">pending</div><script>\
             fetch('{t}', {{headers: {{'X-Custom': '1'}}}}).then(r => r.text())\
             .then(t => document.getElementById('out').textContent = 'read:' + t)\
             .catch(e => document.getElementById('out').textContent = 'blocked:' + e.name);\
             </script></body></html>"
        )
    };
    let html = page(target);
    let h1 = html.clone();
    let serve_page = move |_r: Request<Incoming>| {
        let h = h1.clone();
        async move {
            let mut r = Response::new(full(h));
            r.headers_mut().insert("content-type", "text/html".parse().unwrap());
            r
        }
    };
    let allowed = Upstream::serve_on(allowed_l, serve_page.clone());
    let denied = Upstream::serve_on(denied_l, serve_page);
    let read = |url: String| async move {
        let out = tokio::task::spawn_blocking(move || chromium(&url, &["--dump-dom"])).await.unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = read(format!("http://{}/", allowed.addr)).await;
    assert!(dom.contains("read:secret-data"), "allowed origin could not read: {dom}");
    let dom = read(format!("http://{}/", denied.addr)).await;
    assert!(dom.contains("blocked:TypeError"), "disallowed origin could read: {dom}");
    assert!(!dom.contains("secret-data"));
}

#[tokio::test]
async fn ip_allow_and_deny() {
    let up = Upstream::named("ok").await;
    let p = Proxy::start(&format!(
        "[upstreams.app]\nservers = [\"{}\"]\n\
         [middleware.office]\ntype = \"ip_allow\"\nallow = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n\
         [middleware.local]\ntype = \"ip_allow\"\nallow = [\"127.0.0.0/8\", \"::1\"]\n\
         [middleware.block]\ntype = \"ip_deny\"\ndeny = [\"127.0.0.1/32\"]\n\
         [[routes]]\npath = \"/office\"\nupstream = \"app\"\nmiddleware = [\"office\"]\n\
         [[routes]]\npath = \"/local\"\nupstream = \"app\"\nmiddleware = [\"local\"]\n\
         [[routes]]\npath = \"/blocked\"\nupstream = \"app\"\nmiddleware = [\"block\"]\n",
        up.addr
    ));
    assert_eq!(get(&p.url("/office"), "x").await.status, 403);
    assert_eq!(get(&p.url("/local"), "x").await.status, 200);
    assert_eq!(get(&p.url("/blocked"), "x").await.status, 403);
    assert_eq!(up.hits(), 1);
}

/// A network written in IPv4-mapped form (as a dual-stack socket shows an
/// IPv4 peer) judges IPv4 clients: the deny denies and the allow allows.
#[tokio::test]
async fn ip_rules_in_ipv4_mapped_form_judge_ipv4_clients() {
    let up = Upstream::named("ok").await;
    let p = Proxy::start(&format!(
        "[upstreams.app]\nservers = [\"{}\"]\n\
         [middleware.block]\ntype = \"ip_deny\"\ndeny = [\"::ffff:127.0.0.1\"]\n\
         [middleware.blocknet]\ntype = \"ip_deny\"\ndeny = [\"::ffff:0:0/96\"]\n\
         [middleware.local]\ntype = \"ip_allow\"\nallow = [\"::ffff:127.0.0.0/104\"]\n\
         [[routes]]\npath = \"/blocked\"\nupstream = \"app\"\nmiddleware = [\"block\"]\n\
         [[routes]]\npath = \"/blocknet\"\nupstream = \"app\"\nmiddleware = [\"blocknet\"]\n\
         [[routes]]\npath = \"/local\"\nupstream = \"app\"\nmiddleware = [\"local\"]\n",
        up.addr
    ));
    assert_eq!(get(&p.url("/blocked"), "x").await.status, 403);
    assert_eq!(get(&p.url("/blocknet"), "x").await.status, 403);
    assert_eq!(get(&p.url("/local"), "x").await.status, 200);
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn a_host_route_cannot_be_reached_through_another_routes_host() {
    // /office on app.test is for 10.0.0.0/8 only; every other host reaches
    // the same backend without a check. The backend must never be sent a
    // request for app.test/office from here.
    let up = Upstream::echo().await;
    let p = Proxy::start(&format!(
        "[upstreams.app]\nservers = [\"{}\"]\n\
         [middleware.office]\ntype = \"ip_allow\"\nallow = [\"10.0.0.0/8\"]\n\
         [[routes]]\nhost = \"app.test\"\npath = \"/office\"\nupstream = \"app\"\nmiddleware = [\"office\"]\n\
         [[routes]]\nupstream = \"app\"\n",
        up.addr
    ));
    assert_eq!(get(&p.url("/office"), "app.test").await.status, 403);

    // An absolute-form target names the host; Host is rewritten to match.
    let a =
        raw_exchange(p.http, b"GET http://other/office HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n").await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    assert!(a.contains(r#""host":["other"]"#), "{a}");
    let a =
        raw_exchange(p.http, b"GET http://app.test/office HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n").await;
    assert!(a.starts_with("HTTP/1.1 403"), "{a}");

    // Two Host headers, in either order: 400.
    for hosts in ["Host: other\r\nHost: app.test", "Host: app.test\r\nHost: other"] {
        let request = format!("GET /office HTTP/1.1\r\n{hosts}\r\nConnection: close\r\n\r\n");
        let a = raw_exchange(p.http, request.as_bytes()).await;
        assert!(a.starts_with("HTTP/1.1 400"), "{a}");
    }

    // HTTP/2: :authority wins over Host, which is rewritten to match.
    let stream = tokio::net::TcpStream::connect(p.http).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://other/office").header("host", "app.test").body(full("")).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains(r#""host":["other"]"#), "{body:?}");

    // Hosts that are not host names: 400, never forwarded.
    let hits = up.hits();
    for host in ["a@app.test", "app test", "app.test/x", "app.test:abc", "app..test", "app.test, other"] {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let a = raw_exchange(p.http, request.as_bytes()).await;
        assert!(a.starts_with("HTTP/1.1 400"), "{host}: {a}");
    }
    assert_eq!(up.hits(), hits, "a request with a malformed host reached the backend");
}

#[tokio::test]
async fn ip_allow_over_ipv6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        panic!("IPv6 loopback is needed for this test");
    }
    let up = Upstream::named("ok").await;
    let p = Proxy::start(&format!(
        "[listen]\nhttp = \"[::1]:0\"\nadmin = \"127.0.0.1:0\"\n[upstreams.app]\nservers = [\"{}\"]\n\
         [middleware.v6]\ntype = \"ip_allow\"\nallow = [\"::1/128\"]\n\
         [middleware.v4]\ntype = \"ip_allow\"\nallow = [\"127.0.0.1/32\"]\n\
         [[routes]]\npath = \"/v6\"\nupstream = \"app\"\nmiddleware = [\"v6\"]\n\
         [[routes]]\npath = \"/v4\"\nupstream = \"app\"\nmiddleware = [\"v4\"]\n",
        up.addr
    ));
    assert_eq!(get(&format!("http://{}/v6", p.http), "x").await.status, 200);
    assert_eq!(get(&format!("http://{}/v4", p.http), "x").await.status, 403);
}

#[tokio::test]
async fn basic_auth_with_bcrypt_htpasswd() {
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("s3cret!", 4).unwrap();
    std::fs::write(dir.path().join("users.htpasswd"), format!("# admins\nops:{hash}\n")).unwrap();
    let p = Proxy::start_in(
        dir,
        &with_mw(
            &up,
            "[middleware.auth]\ntype = \"basic_auth\"\nhtpasswd = \"users.htpasswd\"\nrealm = \"Admin portal\"\n",
            "\"auth\"",
        ),
    );
    let c = client();
    let a = send(&c, req(&p, "/").body(full("")).unwrap()).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.headers["www-authenticate"], "Basic realm=\"Admin portal\", charset=\"UTF-8\"");
    use base64::Engine;
    let basic =
        |u: &str, pw: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{pw}")));
    let a = send(&c, req(&p, "/").header("authorization", basic("ops", "wrong")).body(full("")).unwrap()).await;
    assert_eq!(a.status, 401);
    let a = send(&c, req(&p, "/").header("authorization", basic("nobody", "s3cret!")).body(full("")).unwrap()).await;
    assert_eq!(a.status, 401);
    for _ in 0..2 {
        let a = send(&c, req(&p, "/").header("authorization", basic("ops", "s3cret!")).body(full("")).unwrap()).await;
        assert_eq!(a.status, 200);
    }
    // The scheme in any case (RFC 9110 11.1).
    let shouting = basic("ops", "s3cret!").replace("Basic", "BASIC");
    assert_eq!(send(&c, req(&p, "/").header("authorization", shouting).body(full("")).unwrap()).await.status, 200);
    // Two credentials: one would be checked, the other maybe read upstream.
    let two = req(&p, "/")
        .header("authorization", basic("ops", "s3cret!"))
        .header("authorization", basic("mallory", "x"))
        .body(full(""))
        .unwrap();
    assert_eq!(send(&c, two).await.status, 400);
    assert_eq!(up.hits(), 3);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = p.stdout.lock().unwrap().join("\n") + &p.stderr.lock().unwrap().join("\n");
    assert!(!out.contains("s3cret") && !out.contains(&basic("ops", "s3cret!")[6..]), "credentials leaked into logs");
}

#[tokio::test]
async fn header_rules_set_add_and_remove() {
    let up = Upstream::echo().await;
    let p = Proxy::start(&with_mw(
        &up,
        "[middleware.h]\ntype = \"headers\"\nrequest_set = { \"x-env\" = \"prod\" }\nrequest_add = { \"x-tag\" = \"edge\" }\nrequest_remove = [\"cookie\"]\nresponse_set = { \"cache-control\" = \"no-store\" }\nresponse_remove = [\"x-upstream-private\"]\n",
        "\"h\"",
    ));
    let a = send(
        &client(),
        req(&p, "/").header("x-env", "dev").header("x-tag", "client").header("cookie", "a=b").body(full("")).unwrap(),
    )
    .await;
    let h = &a.json()["headers"];
    assert_eq!(h["x-env"], serde_json::json!(["prod"]));
    assert_eq!(h["x-tag"], serde_json::json!(["client", "edge"]));
    assert!(h.get("cookie").is_none());
    assert_eq!(a.headers["cache-control"], "no-store");
}

#[tokio::test]
async fn body_limit_declared_and_streamed() {
    let up = Upstream::echo().await;
    let p = Proxy::start(&with_mw(&up, "[middleware.small]\ntype = \"body_limit\"\nmax = \"1KiB\"\n", "\"small\""));
    let c = client();
    let post = |b: BoxBody| Request::post(p.url("/")).header("host", "x").body(b).unwrap();
    assert_eq!(send(&c, post(full(vec![b'a'; 1000]))).await.status, 200);
    let a = send(&c, post(full(vec![b'a'; 5000]))).await;
    assert_eq!(a.status, 413);
    assert_eq!(up.hits(), 1, "a declared oversize body never reaches the upstream");
    // Chunked, no Content-Length: cut off while streaming.
    let chunks: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> =
        (0..8).map(|_| Ok(Frame::data(Bytes::from(vec![b'b'; 512])))).collect();
    let a = send(&c, post(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks))))).await;
    assert_eq!(a.status, 413);
}

/// A client still writing an upload past `body_limit` reads its 413: the
/// connection discards the rest of the body before it closes, where a
/// close with the body still coming reset it under the client's writes
/// (and the client, its write failed, never read the answer).
#[tokio::test]
async fn a_client_still_uploading_reads_its_early_413() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::named("ok").await;
    let p = Proxy::start(&with_mw(&up, "[middleware.small]\ntype = \"body_limit\"\nmax = 1000\n", "\"small\""));
    let len = 32 << 20;
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    let head = format!("POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: {len}\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    // The 413 is sent (and the connection was closed) by then.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        s.write_all(&chunk).await.unwrap_or_else(|e| panic!("write failed after {sent} bytes: {e}"));
        sent += chunk.len();
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn an_early_answer_passes_back_through_earlier_middleware() {
    let up = Upstream::named("ok").await;
    let p = Proxy::start(&with_mw(
        &up,
        "[middleware.secure]\ntype = \"security_headers\"\n[middleware.deny]\ntype = \"ip_deny\"\ndeny = [\"127.0.0.0/8\"]\n[middleware.h]\ntype = \"headers\"\nresponse_set = { \"x-after\" = \"1\" }\n",
        "\"secure\", \"deny\", \"h\"",
    ));
    let a = get(&p.url("/"), "x").await;
    assert_eq!(a.status, 403);
    assert_eq!(a.headers["x-content-type-options"], "nosniff", "earlier item's response phase applies");
    assert!(!a.headers.contains_key("x-after"), "later item never ran");
}

#[test]
fn bad_middleware_definitions_are_config_errors_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rampart.toml");
    std::fs::write(
        &path,
        "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n\n[middleware.office]\ntype = \"ip_allow\"\nallow = [\"10.0.0.0/33\"]\n\n[middleware.cors]\ntype = \"cors\"\nallow_origins = [\"*\"]\nallow_credentials = true\n\n[middleware.auth]\ntype = \"basic_auth\"\nhtpasswd = \"missing.htpasswd\"\n\n[middleware.limit]\ntype = \"rate_limit\"\naverage = 0\n",
    )
    .unwrap();
    let out = std::process::Command::new(binary()).args(["check", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "PATH");
    assert!(err.contains("PATH:6:1: error: middleware \"office\": invalid CIDR \"10.0.0.0/33\""), "{err}");
    assert!(
        err.contains("PATH:11:1: error: middleware \"cors\": allow_credentials = true cannot be combined"),
        "{err}"
    );
    assert!(err.contains("PATH:15:1: error: middleware \"auth\": cannot read htpasswd file"), "{err}");
    assert!(err.contains("PATH:19:1: error: middleware \"limit\": average must be a positive number"), "{err}");
}
