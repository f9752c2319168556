//! Host and path routing through the real binary.

use crate::util::*;

fn config(api: &Upstream, front: &Upstream, wild: &Upstream, any: &Upstream) -> String {
    format!(
        r#"
[upstreams.api]
servers = ["{}"]
[upstreams.front]
servers = ["{}"]
[upstreams.wild]
servers = ["{}"]
[upstreams.any]
servers = ["{}"]

[[routes]]
host = "logen.example.com"
path = "/api/"
strip_prefix = true
upstream = "api"

[[routes]]
host = "logen.example.com"
path = "/customer/"
upstream = "api"

[[routes]]
host = "logen.example.com"
path = "/"
upstream = "front"

[[routes]]
host = "*.example.com"
path = "/"
upstream = "wild"

[[routes]]
host = "*"
path = "/public"
upstream = "any"
"#,
        api.addr, front.addr, wild.addr, any.addr
    )
}

/// The proxy on the routing table above, and the upstreams it needs alive.
async fn start() -> (Proxy, [Upstream; 4]) {
    let ups = [
        Upstream::echo().await,
        Upstream::named("front").await,
        Upstream::named("wild").await,
        Upstream::named("any").await,
    ];
    let p = Proxy::start(&config(&ups[0], &ups[1], &ups[2], &ups[3]));
    (p, ups)
}

#[tokio::test]
async fn host_and_path_choose_the_route() {
    let (p, _upstreams) = start().await;

    // exact host beats wildcard beats any; case and port are ignored
    assert_eq!(get(&p.url("/x"), "logen.example.com").await.text(), "front");
    assert_eq!(get(&p.url("/x"), "LOGEN.Example.COM:8080").await.text(), "front");
    assert_eq!(get(&p.url("/x"), "shop.example.com").await.text(), "wild");
    assert_eq!(get(&p.url("/public/a"), "other.org").await.text(), "any");
    // no match: 404
    let a = get(&p.url("/elsewhere"), "other.org").await;
    assert_eq!(a.status, 404);
    assert!(a.text().contains("no route"));
    // prefix on segment boundaries
    assert_eq!(get(&p.url("/apix"), "logen.example.com").await.text(), "front");
    assert_eq!(get(&p.url("/publicity"), "other.org").await.status, 404);
}

#[tokio::test]
async fn strip_prefix_behaves_like_nginx_proxy_pass_with_slash() {
    let (p, _upstreams) = start().await;
    let uri = |a: Answer| a.json()["uri"].as_str().unwrap().to_string();
    assert_eq!(uri(get(&p.url("/api/users?page=2&q=a%20b"), "logen.example.com").await), "/users?page=2&q=a%20b");
    assert_eq!(uri(get(&p.url("/api"), "logen.example.com").await), "/");
    assert_eq!(uri(get(&p.url("/api/?x=1"), "logen.example.com").await), "/?x=1");
    // without strip_prefix the path is kept whole
    assert_eq!(uri(get(&p.url("/customer/42?x=1"), "logen.example.com").await), "/customer/42?x=1");
    // dot segments are resolved before matching and forwarding
    assert_eq!(uri(get(&p.url("/customer/../api/v1"), "logen.example.com").await), "/v1");
    assert_eq!(get(&p.url("/../etc/passwd"), "logen.example.com").await.status, 400);
}

#[tokio::test]
async fn http2_prior_knowledge_routes_by_authority() {
    let (p, _upstreams) = start().await;
    let a = h2c_get(p.http, &format!("http://logen.example.com:{}/api/h2?x=1", p.http.port())).await;
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(v["uri"], "/h2?x=1");
    // Upstreams speak HTTP/1.1 and get a Host header built from :authority.
    assert_eq!(v["version"], "HTTP/1.1");
    assert_eq!(v["headers"]["host"][0], format!("logen.example.com:{}", p.http.port()));
    assert_eq!(h2c_get(p.http, &format!("http://SHOP.example.com:{}/", p.http.port())).await.text(), "wild");
}
