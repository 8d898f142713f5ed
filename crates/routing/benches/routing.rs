//! Route matching cost: the shipped proxy.toml and a generated 200-route table.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gateway_config::{HostMatch, PathMatch, Route};
use gateway_routing::RouteTable;
use std::path::Path;

#[path = "../tests/support/route.rs"]
mod support;

fn shipped() -> RouteTable {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proxy.toml");
    let cfg = gateway_config::load_with_env(&path, &|_| None).expect("shipped proxy.toml is valid");
    RouteTable::new(&cfg.routes)
}

fn generated(n: usize) -> RouteTable {
    let routes: Vec<Route> = (0..n)
        .map(|i| {
            let host = (i % 4 == 0).then(|| HostMatch::Exact(format!("h{}.example.com", i % 10)));
            let path = if i % 5 == 0 {
                PathMatch::Exact(format!("/svc{i}/exact"))
            } else {
                PathMatch::Prefix(format!("/svc{i}/v{}/", i % 3))
            };
            let rewrite = (i % 2 == 0).then_some("/");
            Route {
                max_body: 1,
                ..support::route(&format!("r{i}"), host, path, "u", rewrite)
            }
        })
        .collect();
    RouteTable::new(&routes)
}

/// One benchmark per target: `t.decide` for `host` and the target, in the group `group`.
fn decide_each(c: &mut Criterion, group: &str, t: &RouteTable, host: &str, targets: &[&str]) {
    let mut g = c.benchmark_group(group);
    for &target in targets {
        g.bench_function(target, |b| {
            b.iter(|| black_box(t.decide(Some(host), black_box(target))))
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    let shipped_targets = [
        "/api/v1/devices/42/telemetry?from=0",
        "/n8n/rest/push",
        "/health",
        "/assets/app.js",
        "/api/../n8n/x",
    ];
    decide_each(c, "shipped", &shipped(), "example.com", &shipped_targets);
    let generated_targets = [
        "/svc199/v1/deep/path/here",
        "/svc100/exact",
        "/nothing/here/at/all",
    ];
    decide_each(
        c,
        "generated_200",
        &generated(200),
        "h3.example.com",
        &generated_targets,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
