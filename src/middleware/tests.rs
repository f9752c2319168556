//! The chain's bookkeeping: which response phases a request is owed, in
//! which order, and what an early answer skips. Built through the real
//! config parse and registry.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use http::{Request, Response};

use super::*;
use crate::config::Config;
use crate::state::Snapshot;

fn snapshot(middleware: &str, names: &str) -> Snapshot {
    let text = format!(
        "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n{middleware}\n[[routes]]\nupstream = \"a\"\nmiddleware = [{names}]\n"
    );
    Snapshot::compile(Config::parse(Path::new("rampart.toml"), &text).unwrap(), None).unwrap()
}

const DEFS: &str = "[middleware.secure]\ntype = \"security_headers\"\n\
    [middleware.open]\ntype = \"ip_deny\"\ndeny = [\"10.0.0.0/8\"]\n\
    [middleware.closed]\ntype = \"ip_allow\"\nallow = [\"10.0.0.0/8\"]\n\
    [middleware.request-only]\ntype = \"headers\"\nrequest_set = { \"x-a\" = \"1\" }\n\
    [middleware.response]\ntype = \"headers\"\nresponse_set = { \"x-b\" = \"2\" }\n";

/// Runs the route's request phase; returns the request as the upstream
/// would see it, the number of response phases owed, and the answer after
/// them (the early one, or a bare 200 standing in for the upstream's).
async fn run(s: &Snapshot) -> (Request<RequestBody>, usize, Response<ResponseBody>) {
    let route = &s.routes[0];
    let metrics = Metrics::new();
    let pq = http::uri::PathAndQuery::from_static("/");
    let ctx = Ctx {
        metrics: &metrics,
        route: &route.name,
        route_metrics: &route.metrics,
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        tls: false,
        https: false,
        pool: &route.pool,
        upstream_pq: &pq,
        preserve_host: true,
        forwarding: super::Forwarding::done(),
    };
    let mut req = Request::builder().uri("/").body(RequestBody::empty()).unwrap();
    let (owed, early) = route.middleware.on_request(&mut req, &ctx).await;
    let owed_len = owed.len();
    let resp = owed.on_response(early.unwrap_or_else(|| Response::new(ResponseBody::empty())));
    (req, owed_len, resp)
}

#[tokio::test]
async fn only_items_with_a_response_phase_are_owed_one() {
    let s = snapshot(DEFS, "\"secure\", \"open\", \"request-only\", \"response\"");
    let (req, owed, resp) = run(&s).await;
    assert_eq!(owed, 2, "security_headers and the response rules; not ip_deny or request-only rules");
    assert_eq!(req.headers()["x-a"], "1");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert_eq!(resp.headers()["x-b"], "2");
    assert!(!resp.headers().contains_key("strict-transport-security"), "HSTS only over TLS");
}

#[tokio::test]
async fn an_early_answer_passes_back_through_the_items_before_it_only() {
    let s = snapshot(DEFS, "\"secure\", \"closed\", \"response\", \"request-only\"");
    let (req, owed, resp) = run(&s).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(owed, 1);
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert!(!resp.headers().contains_key("x-b"), "the item after the answer never ran");
    assert!(!req.headers().contains_key("x-a"));
}

#[tokio::test]
async fn response_phases_run_last_to_first() {
    let defs = "[middleware.one]\ntype = \"headers\"\nresponse_add = { \"x-order\" = \"one\" }\n\
                [middleware.two]\ntype = \"headers\"\nresponse_add = { \"x-order\" = \"two\" }\n";
    let s = snapshot(defs, "\"one\", \"two\"");
    let (_, owed, resp) = run(&s).await;
    assert_eq!(owed, 2);
    let order: Vec<_> = resp.headers().get_all("x-order").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    assert_eq!(order, ["two", "one"]);
}

#[test]
fn the_status_page_finds_a_cache_by_its_type() {
    let s = snapshot("[middleware.c]\ntype = \"cache\"\n[middleware.secure]\ntype = \"security_headers\"\n", "\"c\"");
    let found: Vec<_> =
        s.middleware.iter().filter(|(_, c)| c.middleware.downcast_ref::<cache::CacheMiddleware>().is_some()).collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "c");
}

#[test]
fn a_reload_keeps_unchanged_definitions_but_reads_an_htpasswd_file_again() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("users.htpasswd");
    std::fs::write(&htpasswd, format!("ops:{}\n", bcrypt::hash("pw", 4).unwrap())).unwrap();
    let defs = format!(
        "[middleware.limit]\ntype = \"rate_limit\"\naverage = 5\n\
         [middleware.auth]\ntype = \"basic_auth\"\nhtpasswd = \"{}\"\n",
        htpasswd.display()
    );
    let text =
        format!("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n{defs}[[routes]]\nupstream = \"a\"\nmiddleware = [\"limit\", \"auth\"]\n");
    let parse = || Config::parse(Path::new("rampart.toml"), &text).unwrap();
    let first = Snapshot::compile(parse(), None).unwrap();
    let second = Snapshot::compile(parse(), Some(&first)).unwrap();
    let same = |name: &str| Arc::ptr_eq(&first.middleware[name].middleware, &second.middleware[name].middleware);
    assert!(same("limit"), "an unchanged rate limit keeps its buckets");
    assert!(!same("auth"), "basic_auth reads its file again");
}
