//! Reload cost: parse + validate + compile a snapshot (what `App::reload`
//! does before the swap) for 10, 1,000 and 10,000 routes. The work is
//! single-threaded, so wall time here is also the CPU time of a reload.
//!
//! `cargo bench --bench reload`

use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use rampart::config::Config;
use rampart::state::Snapshot;

/// A config with `routes` routes over 10 upstreams of 2 servers each,
/// spread over 100 hosts with distinct path prefixes.
fn config_text(routes: usize) -> String {
    let mut s = String::from("[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n");
    for u in 0..10 {
        s += &format!(
            "[upstreams.u{u}]\nbalance = \"least_conn\"\nservers = [\"127.0.0.1:{}\", {{ addr = \"127.0.0.1:{}\", weight = 2 }}]\n\n",
            7000 + 2 * u,
            7001 + 2 * u
        );
    }
    for r in 0..routes {
        s += &format!(
            "[[routes]]\nhost = \"h{}.example.com\"\npath = \"/p{r}/\"\nstrip_prefix = {}\nupstream = \"u{}\"\n\n",
            r % 100,
            r % 2 == 0,
            r % 10
        );
    }
    s
}

fn bench_reload(c: &mut Criterion) {
    let path = Path::new("bench.toml");
    let mut group = c.benchmark_group("reload");
    for n in [10usize, 1_000, 10_000] {
        let text = config_text(n);
        let previous = Snapshot::compile(Config::parse(path, &text).expect("bench config is valid"), None)
            .expect("bench config compiles");
        group.throughput(Throughput::Elements(n as u64));
        if n >= 10_000 {
            group.sample_size(20).sampling_mode(SamplingMode::Flat);
        }
        group.bench_with_input(BenchmarkId::new("parse_validate", n), &text, |b, text| {
            b.iter(|| Config::parse(path, text).expect("valid"))
        });
        group.bench_with_input(BenchmarkId::new("parse_validate_compile", n), &text, |b, text| {
            b.iter(|| {
                let config = Config::parse(path, text).expect("valid");
                Snapshot::compile(config, Some(&previous)).expect("compiles")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_reload);
criterion_main!(benches);
