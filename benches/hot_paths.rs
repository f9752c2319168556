//! Criterion micro-benchmarks for the per-request hot paths: router lookup,
//! balancer pick, header rewriting and access-log formatting. They use only
//! the library's public API, so they measure what the proxy calls.
//!
//! Run: `cargo bench --bench hot_paths` (add `-- --quick` for a short pass).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use rampart::access_log::{rfc3339_now, AccessRecord};
use rampart::config::{Balance, HostPattern, UpstreamAddr};
use rampart::proxy::headers::{add_forwarded, strip_hop_by_hop, Forwarded};
use rampart::router::{normalize_path, Router};
use rampart::upstream::{Balancer, Server};

/// Paths each host gets: a root and a few deep prefixes, as a real site has.
const PREFIXES: [&str; 5] = ["/", "/api/", "/api/v2/users/", "/static/assets/img/", "/a/b/c/d/e/f/g/"];

fn router_with(hosts: usize) -> Router<usize> {
    let mut r = Router::default();
    let mut n = 0;
    for h in 0..hosts {
        let host = HostPattern::Exact(format!("app{h}.example.com"));
        for p in PREFIXES {
            r.insert(&host, p, n);
            n += 1;
        }
    }
    // Wildcards and a catch-all, so the miss paths are realistic too.
    r.insert(&HostPattern::Wildcard(".example.org".into()), "/", n);
    r.insert(&HostPattern::Any, "/", n + 1);
    r
}

fn bench_router(c: &mut Criterion) {
    let mut g = c.benchmark_group("router_lookup");
    g.throughput(Throughput::Elements(1));
    for hosts in [10usize, 1_000, 10_000] {
        let r = router_with(hosts);
        // The last host added, mixed case and with a port, as clients send it.
        let host = format!("App{}.Example.com:443", hosts - 1);
        let cases = [
            ("root", "/"),
            ("deep_hit", "/api/v2/users/42/orders/7/items?x=1"),
            ("deepest_prefix", "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z"),
            ("fallback_to_root", "/no/such/prefix/anywhere/at/all/here"),
        ];
        for (name, path) in cases {
            g.bench_with_input(BenchmarkId::new(name, hosts), &(), |b, _| {
                b.iter(|| {
                    let p = normalize_path(black_box(path)).unwrap();
                    black_box(r.lookup(black_box(&host), &p).map(|m| *m.value))
                })
            });
        }
        g.bench_with_input(BenchmarkId::new("wildcard_host", hosts), &(), |b, _| {
            b.iter(|| black_box(r.lookup(black_box("a.b.c.example.org"), "/x").is_some()))
        });
    }
    g.bench_function("normalize_path_dirty", |b| {
        b.iter(|| black_box(normalize_path(black_box("/static//assets/./img/../css/%2e/x.css"))))
    });
    g.finish();
}

fn servers(n: usize) -> Vec<Arc<Server>> {
    (0..n)
        .map(|i| {
            let addr = UpstreamAddr(format!("127.0.0.1:{}", 7000 + i));
            Arc::new(Server::new(&Arc::from("bench"), addr, 1 + (i % 3) as u32).unwrap())
        })
        .collect()
}

fn bench_balancer(c: &mut Criterion) {
    let mut g = c.benchmark_group("balancer_pick");
    g.throughput(Throughput::Elements(1));
    for n in [3usize, 50] {
        let s = servers(n);
        for (name, kind) in [("round_robin", Balance::RoundRobin), ("least_conn", Balance::LeastConn)] {
            let b = Balancer::new(kind, n);
            g.bench_with_input(BenchmarkId::new(name, n), &(), |bench, _| {
                bench.iter(|| black_box(b.pick(black_box(&s), &[])))
            });
        }
    }
    g.finish();
}

/// What Chrome sends for a page load, plus what a CDN in front would add.
fn browser_headers() -> HeaderMap {
    let pairs: &[(&str, &str)] = &[
        ("host", "app.example.com"),
        ("connection", "keep-alive"),
        ("cache-control", "max-age=0"),
        ("sec-ch-ua", "\"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\""),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", "\"Linux\""),
        ("upgrade-insecure-requests", "1"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"),
        ("sec-fetch-site", "none"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-user", "?1"),
        ("sec-fetch-dest", "document"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-GB,en;q=0.9,de;q=0.8"),
        ("cookie", "session=3f2a9c1e8b7d4f60a1b2c3d4e5f60718; theme=dark; _ga=GA1.1.123456789.1700000000"),
        ("x-forwarded-for", "203.0.113.9"),
    ];
    let mut h = HeaderMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        h.append(HeaderName::from_static(k), HeaderValue::from_str(v).unwrap());
    }
    h
}

fn bench_headers(c: &mut Criterion) {
    let mut g = c.benchmark_group("header_rewrite");
    g.throughput(Throughput::Elements(1));
    let template = browser_headers();
    let client_ip = rampart::proxy::headers::ip_header_value("192.0.2.7".parse().unwrap());
    g.bench_function("clone_only_baseline", |b| b.iter(|| black_box(template.clone())));
    g.bench_function("strip_hop_by_hop", |b| {
        b.iter(|| {
            let mut h = template.clone();
            black_box(strip_hop_by_hop(&mut h));
            h
        })
    });
    g.bench_function("strip_and_add_forwarded", |b| {
        b.iter(|| {
            let mut h = template.clone();
            strip_hop_by_hop(&mut h);
            add_forwarded(
                &mut h,
                &Forwarded {
                    client_ip: &client_ip,
                    proto: "https",
                    host_header: &http::HeaderValue::from_static("app.example.com"),
                    trusted: false,
                },
            );
            h
        })
    });
    g.finish();
}

fn bench_access_log(c: &mut Criterion) {
    let mut g = c.benchmark_group("access_log");
    g.throughput(Throughput::Elements(1));
    let time = rfc3339_now();
    let record = AccessRecord {
        time: &time,
        client_ip: "192.0.2.7".parse().unwrap(),
        method: "GET",
        host: "app.example.com",
        path: "/api/v2/users/42/orders?page=3&sort=desc",
        status: 200,
        bytes: 1024,
        duration_ms: 0.734,
        upstream: Some("127.0.0.1:7600"),
        request_id: "01HZX5J8Q4R7T2W9Y3B6C1D0EF",
        route: Some("app.example.com/api/"),
    };
    g.bench_function("rfc3339_now", |b| b.iter(|| black_box(rfc3339_now())));
    g.bench_function("serde_json_line", |b| {
        b.iter(|| {
            // What AccessLog::log does before the channel send.
            let mut line = Vec::with_capacity(256);
            serde_json::to_writer(&mut line, black_box(&record)).unwrap();
            line.push(b'\n');
            line
        })
    });
    g.bench_function("time_and_line", |b| {
        b.iter(|| {
            let time = rfc3339_now();
            let r = AccessRecord { time: &time, ..record };
            let mut line = Vec::with_capacity(256);
            serde_json::to_writer(&mut line, &r).unwrap();
            line.push(b'\n');
            line
        })
    });
    g.finish();
}

criterion_group!(benches, bench_router, bench_balancer, bench_headers, bench_access_log);
criterion_main!(benches);
