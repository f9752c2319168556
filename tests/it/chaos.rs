//! Fault injection: an upstream that resets, closes mid-body, stalls,
//! drips, answers garbage or more than it declared. The client always gets
//! a clean 502/504 or a cleanly truncated answer (the connection closed
//! before the declared end), the proxy never panics, and its open file
//! descriptors come back to where they were after each case.

use std::time::Duration;

use crate::chaos_util::*;
use crate::util::*;

/// Two pools on the same chaos server: `/slow/...` waits 3 s between
/// reads, everything else 500 ms. Passive ejection is off, so each case
/// meets the server again.
fn config(up: &ChaosUpstream) -> String {
    format!(
        "[upstreams.fast]\nservers = [\"{a}\"]\nresponse_timeout = \"500ms\"\nmax_fails = 0\n\
         [upstreams.slow]\nservers = [\"{a}\"]\nresponse_timeout = \"3s\"\nmax_fails = 0\n\
         [[routes]]\npath = \"/slow/\"\nupstream = \"slow\"\n\
         [[routes]]\npath = \"/\"\nupstream = \"fast\"\n",
        a = up.addr
    )
}

/// What a case must give the client.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Status(u16),
    /// A 200 whose body stops short of what its head promised, and the
    /// connection closed.
    Truncated,
    /// A 200 with exactly this body.
    Body(&'static str),
}

fn check(case: &str, expect: Expect, a: &RawAnswer) -> Result<(), String> {
    let text = a.text();
    let short = || text.chars().take(300).collect::<String>();
    if !a.closed {
        return Err(format!("{case}: the proxy kept the client waiting: {}", short()));
    }
    match expect {
        Expect::Status(code) if a.status() == code => Ok(()),
        Expect::Body(body) if a.status() == 200 && a.body() == body.as_bytes() => Ok(()),
        Expect::Truncated if a.status() == 200 => {
            let chunked = text.to_ascii_lowercase().contains("transfer-encoding: chunked");
            let complete = match a.content_length() {
                Some(n) => a.body().len() >= n,
                None => !chunked || a.body().ends_with(b"0\r\n\r\n"),
            };
            if complete {
                Err(format!("{case}: a broken answer reached the client as complete: {}", short()))
            } else {
                Ok(())
            }
        }
        _ => Err(format!("{case}: expected {expect:?}, got: {}", short())),
    }
}

const CASES: [(&str, Expect); 17] = [
    ("/reset", Expect::Status(502)),
    ("/close-before-answer", Expect::Status(502)),
    ("/close-mid-head", Expect::Status(502)),
    ("/garbage", Expect::Status(502)),
    ("/bad-status", Expect::Status(502)),
    ("/huge-head", Expect::Status(502)),
    ("/many-headers", Expect::Status(502)),
    ("/conflicting-length", Expect::Status(502)),
    ("/gzip-chunked", Expect::Status(502)),
    ("/stall", Expect::Status(504)),
    ("/drip-head", Expect::Status(504)),
    ("/close-mid-body", Expect::Truncated),
    ("/close-mid-chunked", Expect::Truncated),
    ("/reset-mid-body", Expect::Truncated),
    ("/bad-chunk", Expect::Truncated),
    ("/stall-mid-body", Expect::Truncated),
    ("/longer-than-declared", Expect::Body("hello")),
];

#[tokio::test]
async fn a_misbehaving_upstream_gives_clean_errors_or_truncation_and_leaks_no_descriptors() {
    let up = ChaosUpstream::start().await;
    let mut p = Proxy::start(&config(&up));
    // Warm up (lazily opened descriptors, if any), then take the baseline.
    let a = raw_get(p.http, "/ok", Duration::from_secs(10)).await;
    check("/ok", Expect::Body("ok"), &a).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = fd_count(&p);
    let mut failures = Vec::new();
    for (path, expect) in CASES {
        let a = raw_get(p.http, path, Duration::from_secs(20)).await;
        if let Err(e) = check(path, expect, &a) {
            failures.push(e);
        }
        // The proxy still serves, over a fresh upstream connection.
        let ok = raw_get(p.http, "/ok", Duration::from_secs(10)).await;
        if let Err(e) = check(&format!("/ok after {path}"), Expect::Body("ok"), &ok) {
            failures.push(e);
        }
        if !eventually(Duration::from_secs(10), || fd_count(&p) <= baseline).await {
            failures.push(format!("{path}: {} descriptors open, {baseline} before: {:?}", fd_count(&p), fd_list(&p)));
        }
        if let Err(e) = alive_without_panics(&mut p) {
            failures.push(e);
            break;
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn a_dripping_upstream_is_passed_on_while_it_keeps_moving() {
    // One byte a second is slower than nobody likes but within the 3 s
    // the route allows between reads: the whole answer arrives.
    let up = ChaosUpstream::start().await;
    let mut p = Proxy::start(&config(&up));
    let baseline = {
        check("/ok", Expect::Body("ok"), &raw_get(p.http, "/ok", Duration::from_secs(10)).await).unwrap();
        fd_count(&p)
    };
    let a = raw_get(p.http, "/slow/drip-body", Duration::from_secs(30)).await;
    // The chaos server keeps the connection open after the last byte; the
    // answer is complete by its length, so the client gets all of it.
    assert_eq!((a.status(), a.body()), (200, &b"drip"[..]), "{}", a.text());
    assert!(
        eventually(Duration::from_secs(10), || fd_count(&p) <= baseline + 1).await,
        "{} descriptors open, {baseline} before: {:?}",
        fd_count(&p),
        fd_list(&p)
    );
    alive_without_panics(&mut p).unwrap();
}

#[tokio::test]
async fn http2_clients_see_a_reset_stream_when_the_upstream_breaks_mid_body() {
    // Over HTTP/2 a truncated answer must end in RST_STREAM, never in an
    // END_STREAM that makes it look complete; the connection's other
    // streams go on.
    let up = ChaosUpstream::start().await;
    let mut p = Proxy::start(&config(&up));
    let stream = tokio::net::TcpStream::connect(p.http).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for case in ["/close-mid-body", "/reset-mid-body", "/bad-chunk", "/stall-mid-body"] {
        let req = http::Request::get(format!("http://chaos{case}")).body(full("")).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{case}");
        let body = tokio::time::timeout(Duration::from_secs(20), http_body_util::BodyExt::collect(resp.into_body()))
            .await
            .unwrap_or_else(|_| panic!("{case}: the stream was left hanging"));
        assert!(body.is_err(), "{case}: a truncated answer ended as if complete");
        let req = http::Request::get("http://chaos/ok").body(full("")).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok", "after {case}");
    }
    alive_without_panics(&mut p).unwrap();
}

/// The proxy answers in its own version (RFC 9110 6.2): an HTTP/1.0
/// upstream's close-delimited answer reaches an HTTP/1.1 client as
/// HTTP/1.1, chunked, as nginx sends it. A status code with no standard
/// reason keeps the upstream's phrase.
#[tokio::test]
async fn answers_are_in_the_proxys_version_and_keep_a_nonstandard_reason() {
    let up = ChaosUpstream::start().await;
    let p = Proxy::start(&config(&up));
    let a = raw_get(p.http, "/http10", Duration::from_secs(5)).await;
    let text = a.text();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{text}");
    assert!(text.contains("an old server"), "{text}");
    let a = raw_get(p.http, "/reason-520", Duration::from_secs(5)).await;
    assert!(a.text().starts_with("HTTP/1.1 520 Origin Error\r\n"), "{}", a.text());
}
