//! Route matching cost: the shipped proxy.toml and a generated 200-route table.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gateway_config::{HostMatch, PathMatch, Route, Timeouts};
use gateway_routing::RouteTable;
use std::path::Path;
use std::time::Duration;

fn shipped() -> RouteTable {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proxy.toml");
    let cfg = gateway_config::load_with_env(&path, &|_| None).expect("shipped proxy.toml is valid");
    RouteTable::new(&cfg.routes)
}

fn generated(n: usize) -> RouteTable {
    let t = Duration::from_secs(60);
    let routes: Vec<Route> = (0..n)
        .map(|i| Route {
            name: format!("r{i}"),
            host: (i % 4 == 0).then(|| HostMatch::Exact(format!("h{}.example.com", i % 10))),
            path: if i % 5 == 0 {
                PathMatch::Exact(format!("/svc{i}/exact"))
            } else {
                PathMatch::Prefix(format!("/svc{i}/v{}/", i % 3))
            },
            upstream: "u".into(),
            rewrite: (i % 2 == 0).then(|| "/".to_string()),
            websocket: true,
            compress: true,
            max_body: 1,
            timeouts: Timeouts {
                connect: t,
                read: t,
                write: t,
                idle: t,
            },
            response_headers: vec![],
            policies: vec![],
            maintenance: false,
        })
        .collect();
    RouteTable::new(&routes)
}

fn bench(c: &mut Criterion) {
    let t = shipped();
    let mut g = c.benchmark_group("shipped");
    for target in [
        "/api/v1/devices/42/telemetry?from=0",
        "/n8n/rest/push",
        "/health",
        "/assets/app.js",
        "/api/../n8n/x",
    ] {
        g.bench_function(target, |b| {
            b.iter(|| black_box(t.decide(Some("example.com"), black_box(target))))
        });
    }
    g.finish();
    let t = generated(200);
    let mut g = c.benchmark_group("generated_200");
    for target in [
        "/svc199/v1/deep/path/here",
        "/svc100/exact",
        "/nothing/here/at/all",
    ] {
        g.bench_function(target, |b| {
            b.iter(|| black_box(t.decide(Some("h3.example.com"), black_box(target))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
