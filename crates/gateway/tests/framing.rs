//! HTTP/1.1 request framing at the edge (RFC 9112 §3, §6, §9.3.2; RFC 9110 §7.2), checked
//! with raw sockets against a recording upstream that keeps the exact bytes it received:
//! ambiguous or malformed requests get their 4xx and are never forwarded; pipelined
//! requests are answered in order; slow clients are cut; every listener has a head deadline.

mod harness;

use harness::client::{self, exchange};
use harness::{poll_until, Gateway};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use harness::config::{preamble, upstream_at};
use harness::recorder::Recorder;

fn config(up: SocketAddr, limits: &str) -> String {
    format!(
        r#"
{head}[limits]
header_read_timeout = "1s"
{limits}
[logging]
access_log = "off"
{rec}{other}[[routes]]
name = "a"
host = "a.test"
prefix = "/"
upstream = "other"
headers = {{ X-Route = "a" }}
[[routes]]
name = "all"
prefix = "/"
upstream = "rec"
headers = {{ X-Route = "all" }}
"#,
        head = preamble("2s", ""),
        rec = upstream_at("rec", up),
        other = upstream_at("other", up),
    )
}

fn status_of(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

async fn refused(gw: &Gateway, rec: &Recorder, request: &str, status: &str) {
    let before = rec.requests().len();
    let r = exchange(gw.https, request.as_bytes()).await;
    assert!(
        status_of(&r).starts_with(&format!("HTTP/1.1 {status}")),
        "{request:?} → {}",
        status_of(&r)
    );
    assert!(
        r.contains("Connection: close") || r.contains("connection: close"),
        "{r}"
    );
    assert!(
        r.to_ascii_lowercase().contains("x-content-type-options: nosniff"),
        "security headers: {r}"
    );
    assert_eq!(
        rec.requests().len(),
        before,
        "{request:?} must not reach the upstream"
    );
}

#[tokio::test]
async fn ambiguous_framing_and_bad_hosts_are_refused_and_never_forwarded() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&config(rec.addr, "")).await;
    let te = [
        ("Transfer-Encoding: identity\r\n", "400"),
        ("Transfer-Encoding: chunked, identity\r\n", "400"),
        ("Transfer-Encoding: gzip, chunked\r\n", "400"),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "400",
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            "400",
        ),
        ("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "400"),
        ("Transfer-Encoding: x-unknown\r\n", "501"),
        ("Content-Length: 5\r\nContent-Length: 5\r\n", "400"),
        ("Content-Length: 5\r\nContent-Length: 6\r\n", "400"),
        ("Content-Length: 5, 5\r\n", "400"),
        ("Content-Length: +5\r\n", "400"),
    ];
    for (headers, status) in te {
        let req = format!("POST / HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n5\r\nhello\r\n0\r\n\r\n");
        refused(&gw, &rec, &req, status).await;
    }
    refused(
        &gw,
        &rec,
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "400",
    )
    .await;
    refused(&gw, &rec, "GET / HTTP/1.1\r\n\r\n", "400").await;
    refused(&gw, &rec, "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", "400").await;
    for host in ["a b", "a/b", "a\\b", "u@a.test", "a\x01b", "a.test:", "", "a..b"] {
        refused(
            &gw,
            &rec,
            &format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            "400",
        )
        .await;
    }
    refused(&gw, &rec, "GET ftp://a.test/ HTTP/1.1\r\nHost: a\r\n\r\n", "400").await;
    // The same requests done right are forwarded.
    let ok = exchange(
        gw.https,
        b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(status_of(&ok).contains(" 200 "), "{ok}");
    assert_eq!(rec.requests().len(), 1);
    assert!(
        rec.requests()[0].ends_with("5\r\nhello\r\n0\r\n\r\n"),
        "{:?}",
        rec.requests()
    );
}

#[tokio::test]
async fn absolute_form_uses_its_authority_never_a_foreign_host() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&config(rec.addr, "")).await;
    let r = exchange(
        gw.https,
        b"GET http://a.test/x?y HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status_of(&r).contains(" 200 "), "{r}");
    assert!(
        r.contains("x-route: a") || r.contains("X-Route: a"),
        "routed by the authority: {r}"
    );
    let seen = rec.requests();
    let head = seen.last().unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("get /x?y http/1.1\r\n"),
        "origin-form upstream: {head}"
    );
    assert!(head.contains("\r\nhost: a.test\r\n"), "{head}");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&config(rec.addr, "")).await;
    let (mut s, _) = client::tls(gw.https, "localhost").await;
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: localhost\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello\
          GET /three HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("all three answered, then closed")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    // Bodies are "ok" without a newline: split on the status lines themselves.
    let answers: Vec<&str> = text.split("HTTP/1.1 200 OK\r\n").skip(1).collect();
    assert_eq!(answers.len(), 3, "{text}");
    for (i, a) in answers.iter().enumerate() {
        assert!(
            a.contains(&format!("X-Seen: {i}\r\n")),
            "answer {i} in order: {a}"
        );
    }
    let paths: Vec<String> = rec
        .requests()
        .iter()
        .map(|r| r.split(' ').nth(1).unwrap_or("").to_owned())
        .collect();
    assert_eq!(paths, ["/one", "/two", "/three"]);
    assert!(
        rec.requests()[1].ends_with("\r\n\r\nhello"),
        "{:?}",
        rec.requests()[1]
    );
}

#[tokio::test]
async fn headers_named_in_connection_are_removed_and_the_request_forwarded() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&config(rec.addr, "")).await;
    let r = exchange(
        gw.https,
        b"GET /c HTTP/1.1\r\nHost: localhost\r\nConnection: close, X-Forwarded-For, X-Custom\r\nX-Custom: 1\r\nX-Forwarded-For: 6.6.6.6\r\nX-Kept: 2\r\n\r\n",
    )
    .await;
    assert!(status_of(&r).contains(" 200 "), "{r}");
    let head = rec.requests().last().unwrap().to_ascii_lowercase();
    assert!(!head.contains("x-custom"), "{head}");
    assert!(!head.contains("6.6.6.6"), "{head}");
    assert!(head.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"), "{head}");
    assert!(head.contains("\r\nx-real-ip: 127.0.0.1\r\n"), "{head}");
    assert!(head.contains("\r\nx-kept: 2\r\n"), "{head}");
}

#[tokio::test]
async fn long_targets_get_414_and_grafana_sized_ones_pass() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&config(rec.addr, "")).await;
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    refused(&gw, &rec, &long, "414").await;
    let grafana = format!(
        "GET /api/ds/query?{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        "q=x".repeat(2000)
    );
    let r = exchange(gw.https, grafana.as_bytes()).await;
    assert!(status_of(&r).contains(" 200 "), "{}", status_of(&r));
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_a_stalled_reader_is_cut() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&config(
        rec.addr,
        "body_read_timeout = \"1s\"\nsend_timeout = \"1s\"",
    ))
    .await;

    // A body byte, then silence longer than body_read_timeout. The clock starts before the
    // write: the gateway's timeout cannot start earlier, however late this task runs.
    let (mut s, _) = client::tls(gw.https, "localhost").await;
    let started = Instant::now();
    s.write_all(b"POST /slow HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nx")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out))
        .await
        .expect("the gateway gives up on the body")
        .ok();
    let text = String::from_utf8_lossy(&out);
    assert!(status_of(&text).starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // A client that asks for 64 MiB and reads nothing is closed after send_timeout, and the
    // gateway does not buffer the body meanwhile.
    let pid = gw.pid();
    let rss = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    let before = rss();
    let (mut s, _) = client::tls(gw.https, "localhost").await;
    s.write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut peak = before;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        peak = peak.max(rss());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => panic!("the stalled connection was never closed"),
        }
    }
    assert!(got < 64 << 20, "closed before the whole body: got {got} bytes");
    assert!(
        peak - before < 24 * 1024,
        "RSS grew by {} KiB while the client read nothing",
        peak - before
    );
}

/// A head that never completes on the :80 and metrics listeners gets 408 within the
/// header deadline, like :443.
#[tokio::test]
async fn every_listener_has_a_header_deadline() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&config(rec.addr, "")).await;
    for addr in [gw.http, gw.metrics] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let mut out = Vec::new();
        let trickle = async {
            for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n" {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), trickle).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(status_of(&text).starts_with("HTTP/1.1 408"), "{addr}: {text}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{addr}: {:?}",
            started.elapsed()
        );
    }
    // And they still answer complete requests.
    poll_until(Duration::from_secs(5), "metrics", || async {
        let mut s = TcpStream::connect(gw.metrics).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        String::from_utf8_lossy(&out)
            .starts_with("HTTP/1.1 200")
            .then_some(())
    })
    .await;
}
