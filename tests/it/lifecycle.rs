//! Start, drain and exit.

use std::time::Duration;

use http::Response;

use crate::util::*;

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let up = Upstream::start(|_req| async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Response::new(full("finished"))
    })
    .await;
    let mut p =
        Proxy::start(&format!("[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n", up.addr));
    let url = p.url("/slow");
    let slow = tokio::spawn(async move { get(&url, "x").await });
    assert!(eventually(Duration::from_secs(10), || up.hits() == 1).await);
    p.signal("TERM");
    let a = slow.await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "finished");
    let code = tokio::task::spawn_blocking(move || p.wait_exit(Duration::from_secs(20))).await.unwrap();
    assert_eq!(code, Some(0));
}

/// SIGUSR1 and SIGUSR2 (nginx's log reopening and binary upgrade: a
/// logrotate `postrotate` written for nginx sends USR1) leave the proxy
/// serving, where their default action ended it with every request in
/// flight; SIGQUIT is a graceful stop, as nginx's.
#[tokio::test]
async fn nginx_signals_leave_the_proxy_serving_and_sigquit_drains() {
    let up = Upstream::start(|req: http::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        Response::new(full("finished"))
    })
    .await;
    let mut p =
        Proxy::start(&format!("[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n", up.addr));
    for sig in ["USR1", "USR2"] {
        p.signal(sig);
        let name = format!("SIG{sig}");
        assert!(eventually(Duration::from_secs(5), || !p.log_lines(&[&name]).is_empty()).await, "{sig} not logged");
        assert_eq!(get(&p.url("/"), "x").await.text(), "finished", "after SIG{sig}");
    }
    let url = p.url("/slow");
    let slow = tokio::spawn(async move { get(&url, "x").await });
    assert!(eventually(Duration::from_secs(10), || up.hits() == 3).await);
    p.signal("QUIT");
    let a = slow.await.unwrap();
    assert_eq!((a.status.as_u16(), a.text().as_str()), (200, "finished"));
    let code = tokio::task::spawn_blocking(move || p.wait_exit(Duration::from_secs(20))).await.unwrap();
    assert_eq!(code, Some(0));
}

/// A proxy whose upstream holds every request for a minute, with one
/// request to `path` in flight there, and `shutdown_timeout` as given.
async fn a_request_held_upstream(shutdown_timeout: &str, path: &str) -> (Upstream, Proxy) {
    let up = Upstream::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Response::new(full("too late"))
    })
    .await;
    let p = Proxy::start(&format!(
        "[server]\nshutdown_timeout = \"{shutdown_timeout}\"\n[upstreams.app]\nservers = [\"{}\"]\nresponse_timeout = \"90s\"\n[[routes]]\nupstream = \"app\"\n",
        up.addr
    ));
    let req = http::Request::get(p.url(path)).header("host", "x").body(full("")).unwrap();
    tokio::spawn(async move { client().request(req).await.map(|r| r.status()) });
    assert!(eventually(Duration::from_secs(10), || up.hits() == 1).await);
    (up, p)
}

/// A second SIGTERM while draining stops waiting for what is in flight.
#[tokio::test]
async fn a_second_sigterm_ends_the_drain() {
    let (_up, mut p) = a_request_held_upstream("60s", "/slow").await;
    p.signal("TERM");
    assert!(eventually(Duration::from_secs(10), || !p.log_lines(&["draining"]).is_empty()).await);
    p.signal("TERM");
    let code = tokio::task::spawn_blocking(move || p.wait_exit(Duration::from_secs(20))).await.unwrap();
    assert!(code.is_some(), "still draining 20 s after the second SIGTERM");
}

/// Requests a drain's `shutdown_timeout` cuts off are logged (499, the
/// client's answer never came) before the process exits, not lost with it.
#[tokio::test]
async fn requests_cut_off_by_the_shutdown_timeout_are_logged() {
    let (_up, mut p) = a_request_held_upstream("500ms", "/cut").await;
    p.signal("TERM");
    let (code, p) = tokio::task::spawn_blocking(move || (p.wait_exit(Duration::from_secs(20)), p)).await.unwrap();
    assert_eq!(code, Some(0));
    // The reader threads collect the last lines after the exit.
    let logged = || p.access_log().iter().any(|l| l["path"] == "/cut" && l["status"] == 499);
    assert!(eventually(Duration::from_secs(5), logged).await, "{:?}", p.access_log());
}

#[tokio::test]
async fn readyz_and_healthz() {
    let up = Upstream::named("x").await;
    let p = Proxy::start(&format!("[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n", up.addr));
    assert_eq!(get(&p.admin_url("/healthz"), "admin").await.status, 200);
    assert_eq!(get(&p.admin_url("/readyz"), "admin").await.status, 200);
    let out =
        std::process::Command::new(binary()).args(["healthcheck", "--url", &p.admin_url("/healthz")]).output().unwrap();
    assert!(out.status.success());
}

/// An HTTP/2 connection to `addr` whose sender can be cloned per stream.
async fn h2c_connection(addr: std::net::SocketAddr) -> hyper::client::conn::http2::SendRequest<BoxBody> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

/// An upstream that answers after `delay` with the request's path and the
/// size of its body.
async fn slow_echo(delay: Duration) -> Upstream {
    Upstream::start(move |req: http::Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_string();
        let n = http_body_util::BodyExt::collect(req.into_body()).await.map(|b| b.to_bytes().len()).unwrap_or(0);
        tokio::time::sleep(delay).await;
        Response::new(full(format!("{path} {n}")))
    })
    .await
}

#[tokio::test]
async fn hundreds_of_concurrent_http2_streams_on_one_connection_all_complete() {
    let up = slow_echo(Duration::from_millis(200)).await;
    let p = Proxy::start(&format!("[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n", up.addr));
    let sender = h2c_connection(p.http).await;
    let mut streams = tokio::task::JoinSet::new();
    for i in 0..300usize {
        let mut sender = sender.clone();
        let uri = format!("http://x:{}/s{i}", p.http.port());
        streams.spawn(async move {
            // Every third stream uploads a body, streamed through the proxy.
            let body = if i % 3 == 0 { full(vec![b'x'; 10_000 + i]) } else { full("") };
            let method = if i % 3 == 0 { "POST" } else { "GET" };
            let req = http::Request::builder().method(method).uri(uri).body(body).unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status();
            let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
            (i, status, String::from_utf8_lossy(&body).into_owned())
        });
    }
    let mut done = 0;
    while let Some(r) = streams.join_next().await {
        let (i, status, body) = r.unwrap();
        let expected_len = if i % 3 == 0 { 10_000 + i } else { 0 };
        assert_eq!((status.as_u16(), body), (200, format!("/s{i} {expected_len}")));
        done += 1;
    }
    assert_eq!(done, 300);
}

#[tokio::test]
async fn sigterm_drains_in_flight_http2_streams() {
    let up = slow_echo(Duration::from_millis(1500)).await;
    let mut p =
        Proxy::start(&format!("[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n", up.addr));
    let mut sender = h2c_connection(p.http).await;
    let uri = format!("http://x:{}/slow", p.http.port());
    let slow = tokio::spawn(async move {
        let resp = sender.send_request(http::Request::get(uri).body(full("")).unwrap()).await.unwrap();
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
        (status, body)
    });
    assert!(eventually(Duration::from_secs(10), || up.hits() == 1).await);
    p.signal("TERM");
    let (status, body) = slow.await.unwrap();
    assert_eq!((status.as_u16(), &body[..]), (200, &b"/slow 0"[..]));
    let code = tokio::task::spawn_blocking(move || p.wait_exit(Duration::from_secs(20))).await.unwrap();
    assert_eq!(code, Some(0));
}

/// CPU time (clock ticks, user + system) of each thread of process `pid`,
/// by thread id (Linux `/proc/PID/task/TID/stat`).
fn thread_cpu_ticks(pid: u32) -> Vec<(u32, u64)> {
    let mut ticks = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        // After the parenthesised name (which may hold spaces): state is field 3,
        // utime and stime are fields 14 and 15.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let t = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        ticks.push((tid, t(14) + t(15)));
    }
    ticks
}

#[tokio::test]
async fn one_worker_serves_everything_on_the_main_thread_and_drains() {
    // `workers = 1` runs the current-thread scheduler on the main thread:
    // the proxying happens there, and everything (HTTP/1.1, HTTP/2 streams,
    // the parking lot, the drain) works on that one thread.
    let up = slow_echo(Duration::from_millis(1)).await;
    let mut p = Proxy::start(&format!(
        "[server]\nworkers = 1\naccess_log = false\n[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n",
        up.addr
    ));
    let pid = p.child.id();
    let before = thread_cpu_ticks(pid);
    let sender = h2c_connection(p.http).await;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..2000usize {
        let mut sender = sender.clone();
        let uri = format!("http://x:{}/h2/{i}", p.http.port());
        requests.spawn(async move {
            let resp = sender.send_request(http::Request::get(uri).body(full("")).unwrap()).await.unwrap();
            let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
            (format!("/h2/{i} 0"), String::from_utf8_lossy(&body).into_owned())
        });
        if i < 50 {
            let url = p.url(&format!("/h1/{i}"));
            requests.spawn(async move { (format!("/h1/{i} 0"), get(&url, "x").await.text()) });
        }
    }
    let mut done = 0;
    while let Some(r) = requests.join_next().await {
        let (expected, got) = r.unwrap();
        assert_eq!(got, expected);
        done += 1;
    }
    assert_eq!(done, 2050);
    let after = thread_cpu_ticks(pid);
    let spent = |tid: Option<u32>| -> u64 {
        after
            .iter()
            .filter(|(t, _)| tid.is_none_or(|id| id == *t))
            .map(|(t, v)| v - before.iter().find(|(b, _)| b == t).map_or(0, |(_, v)| *v))
            .sum()
    };
    let (main, all) = (spent(Some(pid)), spent(None));
    assert!(all > 0 && main * 2 > all, "the main thread did {main} of {all} ticks of work");
    let url = p.url("/last");
    let last = tokio::spawn(async move { get(&url, "x").await.text() });
    assert!(eventually(Duration::from_secs(10), || up.hits() == 2051).await);
    p.signal("TERM");
    assert_eq!(last.await.unwrap(), "/last 0");
    let code = tokio::task::spawn_blocking(move || p.wait_exit(Duration::from_secs(20))).await.unwrap();
    assert_eq!(code, Some(0));
}

/// `busy_poll` keeps the worker polling while requests come and lets it
/// sleep once they stop: an idle proxy does not keep burning a core.
#[tokio::test]
async fn a_busy_polling_proxy_serves_then_sleeps_when_idle() {
    let up = Upstream::named("x").await;
    let p = Proxy::start(&format!(
        "[server]\nworkers = 1\nbusy_poll = \"1ms\"\n[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n",
        up.addr
    ));
    for i in 0..50 {
        assert_eq!(get(&p.url(&format!("/{i}")), "x").await.text(), "x");
    }
    let ticks = || thread_cpu_ticks(p.child.id()).iter().map(|(_, t)| t).sum::<u64>();
    let before = ticks();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = ticks() - before;
    // A worker that kept spinning would spend the whole two seconds (200
    // ticks on an idle machine); the timer wake-ups cost a few.
    assert!(spent < 40, "the idle proxy spent {spent} ticks in two seconds");
}

#[tokio::test]
async fn a_drain_waits_for_a_half_sent_head_no_longer_than_the_header_timeout() {
    let up = Upstream::named("x").await;
    let mut p = Proxy::start(&format!(
        "[server]\nclient_header_timeout = \"1s\"\nshutdown_timeout = \"60s\"\n[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n",
        up.addr
    ));
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Let the proxy read it: the head is then in progress.
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.signal("TERM");
    // Well before shutdown_timeout: the head had client_header_timeout.
    let code = tokio::task::spawn_blocking(move || p.wait_exit(Duration::from_secs(20))).await.unwrap();
    assert_eq!(code, Some(0));
    drop(s);
}
