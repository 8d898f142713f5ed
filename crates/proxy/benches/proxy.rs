//! Per-request work outside Pingora: header rewriting toward the upstream, and compression
//! cost per KB at the configured level.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gateway_config::{Algorithm, Forwarding, HostHeader};
use gateway_proxy::compress::{negotiate, Encoder};
use gateway_proxy::headers;
use pingora_http::RequestHeader;

fn request() -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/api/v1/devices/42/telemetry?from=0", None).unwrap();
    for (n, v) in [
        ("Host", "example.com"),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0",
        ),
        ("Accept", "application/json, text/plain, */*"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Accept-Language", "en-US,en;q=0.9"),
        ("Cookie", "session=abcdef0123456789; theme=dark"),
        ("Connection", "keep-alive"),
        ("X-Forwarded-For", "203.0.113.9"),
    ] {
        r.append_header(n, v).unwrap();
    }
    r
}

fn html(kb: usize) -> Vec<u8> {
    let mut s = String::new();
    let mut i = 0;
    while s.len() < kb * 1024 {
        s.push_str(&format!(
            "<div class=\"row r{}\"><span>item {i}</span><a href=\"/items/{i}\">details</a></div>\n",
            i % 7
        ));
        i += 1;
    }
    s.truncate(kb * 1024);
    s.into_bytes()
}

fn bench(c: &mut Criterion) {
    let fwd = Forwarding {
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        host_header: HostHeader::Client,
    };
    let base = request();
    c.bench_function("headers/to_upstream", |b| {
        b.iter_batched(
            || base.clone(),
            |mut r| {
                headers::to_upstream(
                    &mut r,
                    &fwd,
                    Some("198.51.100.7".parse().unwrap()),
                    Some("example.com"),
                    false,
                );
                r
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let ae = http::HeaderValue::from_static("gzip, deflate, br;q=0.9, zstd;q=0.8");
    let algs = [Algorithm::Gzip, Algorithm::Brotli, Algorithm::Zstd];
    c.bench_function("compression/negotiate", |b| {
        b.iter(|| negotiate(black_box(&ae), &algs))
    });

    let mut g = c.benchmark_group("compression/level6");
    for kb in [1usize, 48] {
        let body = html(kb);
        g.throughput(Throughput::Bytes(body.len() as u64));
        for alg in algs {
            g.bench_with_input(
                BenchmarkId::new(alg.token(), format!("{kb}KB")),
                &body,
                |b, body| {
                    b.iter(|| {
                        let mut e = Encoder::new(alg, 6, Some(body.len() as u64));
                        let mut n = e.encode(body).unwrap().len();
                        n += e.finish().unwrap().len();
                        n
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
