//! Parsing and validating the shipped proxy.toml (what `gateway check` and every reload do).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::path::Path;

fn bench(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proxy.toml");
    let src = std::fs::read_to_string(&path).expect("shipped proxy.toml");
    let env = |name: &str| (name == "DOMAIN").then(|| "example.com".to_string());
    c.bench_function("parse_and_validate_shipped", |b| {
        b.iter(|| gateway_config::parse(black_box(&src), &path, &env).expect("valid"))
    });
    let broken = src
        .replace("keepalive = 32", "keepalve = 32")
        .replace("upstream = \"n8n\"", "upstream = \"n9n\"");
    c.bench_function("report_errors_broken_file", |b| {
        b.iter(|| gateway_config::parse(black_box(&broken), &path, &env).expect_err("broken"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
