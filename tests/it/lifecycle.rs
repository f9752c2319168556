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
