//! The heads of one proxied HTTP/1.1 exchange, piece by piece, as the gateway handles them
//! (benches/RESULTS.md, "What stands in the way on cases 1, 2, 5 and 6"): the edge's own read of the
//! request head, Pingora's second parse of it, the upstream request (clone, forwarding
//! fields, serialising), the upstream response head read into a `ResponseHeader`, and the
//! downstream response head (security fields, serialising). Beside each, `httparse` alone on
//! the same head: the floor an exchange that parses each head once into borrowed slices would
//! start from.
//!
//! `cargo bench -p gateway-proxy --bench heads`. Streams are in-memory `Cursor`s: no syscalls,
//! no TLS, so these are the CPU costs of the heads alone.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use gateway_config::{Forwarding, HostHeader};
use gateway_proxy::{framing, headers};
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora_core::protocols::http::v1::server::HttpSession as DownstreamSession;
use pingora_http::{RequestHeader, ResponseHeader};
use std::io::Cursor;

/// What wrk sends in case 1 of benches/compare.py.
const WRK: &[u8] = b"GET /json HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n\r\n";
/// A browser's API request.
const BROWSER: &[u8] = b"GET /api/v1/devices/42/telemetry?from=0 HTTP/1.1\r\n\
Host: example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0\r\n\
Accept: application/json, text/plain, */*\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Cookie: session=abcdef0123456789; theme=dark\r\n\
Connection: keep-alive\r\n\
Sec-Fetch-Mode: cors\r\n\r\n";
/// The upstream's answer in case 1 (its 44-byte body follows the head).
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: upstream\r\n\
Date: Tue, 08 Dec 2026 01:00:00 GMT\r\n\
Content-Type: application/json\r\n\
Content-Length: 44\r\n\
Connection: keep-alive\r\n\r\n\
{\"status\":\"ok\",\"service\":\"bench\",\"n\":12345}";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The request head as Pingora's downstream session parses it.
fn read_request(rt: &tokio::runtime::Runtime, head: &[u8]) -> DownstreamSession {
    rt.block_on(async {
        let mut s = DownstreamSession::new(Box::new(Cursor::new(head.to_vec())));
        s.read_request()
            .await
            .expect("a request head")
            .expect("a whole one");
        s
    })
}

/// The default security fields (`[security]` without `headers`, as in the shipped proxy.toml
/// and in case 1 of benches/compare.py), built as the snapshot builds them.
fn security_fields() -> gateway_proxy::state::CasedHeaders {
    let defaults = [
        ("X-Frame-Options", "SAMEORIGIN"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-XSS-Protection", "1; mode=block"),
    ];
    let list: Vec<(String, String)> = defaults
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    gateway_proxy::state::cased_headers(&list)
}

fn request_heads(c: &mut Criterion) {
    let rt = runtime();
    for (name, head) in [("wrk", WRK), ("browser", BROWSER)] {
        c.bench_function(&format!("heads/request/edge_read/{name}"), |b| {
            b.iter(|| {
                let mut lines = 0;
                let end = framing::head_end(black_box(head), 0, &mut lines).expect("a whole head");
                framing::check_head(&head[..end], 8192).expect("a valid head")
            })
        });
        c.bench_function(&format!("heads/request/pingora_parse/{name}"), |b| {
            b.iter(|| read_request(&rt, black_box(head)))
        });
        c.bench_function(&format!("heads/request/httparse/{name}"), |b| {
            b.iter(|| {
                let mut fields = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut fields);
                matches!(req.parse(black_box(head)), Ok(httparse::Status::Complete(_)))
            })
        });
    }
}

fn upstream_request(c: &mut Criterion) {
    let rt = runtime();
    let fwd = Forwarding {
        trusted_proxies: vec![],
        host_header: HostHeader::Client,
    };
    for (name, head) in [("wrk", WRK), ("browser", BROWSER)] {
        let downstream = read_request(&rt, head);
        let req: RequestHeader = downstream.req_header().clone();
        c.bench_function(
            &format!("heads/upstream_request/clone_rewrite_write/{name}"),
            |b| {
                b.iter(|| {
                    let mut up = req.clone();
                    headers::to_upstream(
                        &mut up,
                        &fwd,
                        Some("198.51.100.7".parse().unwrap()),
                        Some("example.com"),
                        false,
                    );
                    rt.block_on(async {
                        let mut s = UpstreamSession::new(Box::new(Cursor::new(Vec::with_capacity(1024))));
                        s.write_request_header(Box::new(up)).await.expect("written")
                    })
                })
            },
        );
    }
}

fn response_heads(c: &mut Criterion) {
    let rt = runtime();
    c.bench_function("heads/response/pingora_read", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut s = UpstreamSession::new(Box::new(Cursor::new(black_box(RESPONSE).to_vec())));
                s.read_response().await.expect("a response head");
                s
            })
        })
    });
    // What the proxy loops call: the head read and handed over as a task (before
    // pingora-core patch 0024, a clone of it).
    c.bench_function("heads/response/pingora_read_task", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut s = UpstreamSession::new(Box::new(Cursor::new(black_box(RESPONSE).to_vec())));
                let task = s.read_response_task().await.expect("a response head");
                (s, task)
            })
        })
    });
    // `read_resp_header_parts`: the head read and a copy returned, as `read_response_task`
    // returned it before patch 0024.
    c.bench_function("heads/response/pingora_read_copy", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut s = UpstreamSession::new(Box::new(Cursor::new(black_box(RESPONSE).to_vec())));
                let head = s.read_resp_header_parts().await.expect("a response head");
                (s, head)
            })
        })
    });
    c.bench_function("heads/response/httparse", |b| {
        b.iter(|| {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut fields);
            matches!(resp.parse(black_box(RESPONSE)), Ok(httparse::Status::Complete(_)))
        })
    });
    let upstream: ResponseHeader = rt.block_on(async {
        let mut s = UpstreamSession::new(Box::new(Cursor::new(RESPONSE.to_vec())));
        s.read_response().await.expect("a response head");
        s.resp_header().expect("a header").clone()
    });
    let security = security_fields();
    c.bench_function("heads/response/filter_write", |b| {
        b.iter_batched(
            || (read_request(&rt, WRK), upstream.clone()),
            |(mut downstream, mut resp)| {
                // What `response_filter` does to a proxied answer: hop-by-hop fields out, the
                // security fields in.
                headers::strip_hop_by_hop_response(&mut resp, false);
                resp.reserve(security.len());
                for ((n, case), v) in &security {
                    resp.insert_header((n, case), v.clone()).expect("a valid field");
                }
                rt.block_on(downstream.write_response_header(Box::new(resp)))
                    .expect("written");
                downstream
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, request_heads, upstream_request, response_heads);
criterion_main!(benches);
