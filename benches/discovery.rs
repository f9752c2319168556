//! Discovery cost: a Docker resync of 500 running containers (100 services
//! of 5 replicas, each service with a labelled route and middleware) read
//! from their labels, merged into the file's config and compiled into a
//! snapshot, as `App::update_discovered` does when one container changed.
//! Target: under 50 ms. The request path is untouched by discovery (it
//! reads the snapshot as before), so it has no bench here.
//!
//! `cargo bench --bench discovery`
//!
//! Release profile (fat LTO), 2026-12-06 at `adb26de`, on the project's
//! shared 2-core machine: 1.83 ms (criterion's interval 1.80-1.86 ms).

use std::collections::BTreeMap;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rampart::config::{Config, Container, Discovered};
use rampart::state::Snapshot;

const SERVICES: usize = 100;
const REPLICAS: usize = 5;

fn file() -> Config {
    let text = "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
        [providers.docker]\n\
        [upstreams.s0]\nbalance = \"least_conn\"\n\
        [middleware.gzip]\ntype = \"compress\"\n\
        [middleware.limit]\ntype = \"rate_limit\"\naverage = 100\nburst = 50\n";
    Config::parse(Path::new("bench.toml"), text).expect("bench config is valid")
}

fn containers(skip_last: bool) -> Vec<Container> {
    let mut out = Vec::with_capacity(SERVICES * REPLICAS);
    for s in 0..SERVICES {
        for r in 0..REPLICAS {
            let i = s * REPLICAS + r;
            if skip_last && i == SERVICES * REPLICAS - 1 {
                continue;
            }
            let labels: BTreeMap<String, String> = [
                ("rampart.enable", "true".to_string()),
                ("rampart.port", "8080".to_string()),
                ("com.docker.compose.service", format!("s{s}")),
                ("com.docker.compose.project", "bench".to_string()),
                ("rampart.routes.r{s}.host", format!("s{s}.example.com")),
                ("rampart.routes.r{s}.path", "/api/".to_string()),
                ("rampart.routes.r{s}.strip_prefix", "true".to_string()),
                ("rampart.routes.r{s}.middleware", "limit,gzip".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.replace("{s}", &s.to_string()), v))
            .collect();
            out.push(Container {
                id: format!("{i:064x}"),
                name: format!("bench-s{s}-{r}"),
                labels,
                networks: [(
                    "bench_default".to_string(),
                    Some(format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256).parse().unwrap()),
                )]
                .into(),
                exposed_ports: vec![8080],
                ready: true,
                created: 0,
            });
        }
    }
    out
}

fn bench_resync(c: &mut Criterion) {
    let file = file();
    let before = Discovered { containers: Some(containers(true)), ..Default::default() };
    let previous = Snapshot::compile(file.merged(&before).0, None).expect("compiles");
    let after = Discovered { containers: Some(containers(false)), ..Default::default() };
    let (check, docker) = file.merged(&after);
    assert!(docker.skipped.is_empty(), "{:?}", docker.skipped);
    assert_eq!((docker.taking_part, check.routes.len()), (SERVICES * REPLICAS, SERVICES));
    let mut group = c.benchmark_group("discovery");
    group.throughput(Throughput::Elements((SERVICES * REPLICAS) as u64));
    group.bench_function("resync_500_containers_merge_compile", |b| {
        b.iter(|| {
            let (merged, _) = file.merged(&after);
            Snapshot::compile(merged, Some(&previous)).expect("compiles")
        })
    });
    group.finish();
}

criterion_group!(benches, bench_resync);
criterion_main!(benches);
