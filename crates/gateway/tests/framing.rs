//! HTTP/1.1 request framing at the edge (RFC 9112 §3, §6, §7.1, §9.3.2; RFC 9110 §7.2),
//! checked with raw sockets against recording upstreams that keep the exact bytes they
//! received: ambiguous, smuggling-shaped or malformed requests (framing fields, chunk-size
//! lines, hosts, targets, oversized heads) get their 4xx and are never forwarded; framing
//! fields, `Host` and `Connection` reach the upstream well-formed; only WebSocket handshakes
//! are upgraded; pipelined requests are answered in order; slow clients are cut; every
//! listener has a head deadline.

mod harness;

use harness::client::{self, exchange};
use harness::gateway::with_echo;
use harness::recorder::{recorded, Recorder, Scripted};
use harness::wire::{dechunk, h1_connect, head_and_body, is_chunked, text, within, write};
use harness::Gateway;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The head deadline of the tests that are not about it.
const HEAD: &str = "header_read_timeout = \"1s\"";

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
    let (rec, gw) = recorded(HEAD).await;
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

/// Chunked request bodies (RFC 9112 section 7.1) are decoded strictly: a fault in a
/// chunk-size line forwards not a byte of the body, a fault after a good chunk never the
/// last chunk; either is a 400 and the upstream connection is closed, never reused.
#[tokio::test]
async fn a_malformed_chunked_request_bodies_get_400_and_nothing_more_reaches_the_upstream() {
    let rec = Scripted::ok().await;
    let gw = Gateway::start(&harness::gateway::simple_config(rec.addr, "")).await;
    let head =
        |path: &str| format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");

    // Control: upper-case hex and an extension (quoted value) are fine; the upstream gets the
    // same payload, re-chunked, with one last chunk.
    let mut c = h1_connect(gw.https).await;
    let mut request = head("/a-ok").into_bytes();
    request.extend_from_slice(b"A;name=\"q v\"\r\n0123456789\r\n0\r\n\r\n");
    let r = harness::wire::exchange(&mut c, &request).await;
    assert_eq!(r.status, 200, "{}", text(&r.raw));
    let upstream = rec.request("POST /a-ok ", false).await;
    let (up_head, up_body) = head_and_body(&upstream);
    assert!(is_chunked(&up_head), "{up_head}");
    assert_eq!(
        dechunk(&up_body),
        Some((b"0123456789".to_vec(), up_body.len())),
        "upstream body: {:?}",
        text(&up_body)
    );

    // Faults in a chunk-size line: not a byte of the body may be forwarded.
    let size_line: &[(&str, &str)] = &[
        ("bare LF after the size", "5\nhello\r\n0\r\n\r\n"),
        ("bare LF ending an extension", "5;a=b\nhello\r\n0\r\n\r\n"),
        ("LF inside an extension", "5;a\nb\r\nhello\r\n0\r\n\r\n"),
        ("CR inside an extension", "5;a\rb\r\nhello\r\n0\r\n\r\n"),
        ("NUL inside an extension", "5;a\0b\r\nhello\r\n0\r\n\r\n"),
        ("0x prefix", "0x5\r\nhello\r\n0\r\n\r\n"),
        ("non-hex digit", "5g\r\nhello\r\n0\r\n\r\n"),
        ("empty size", "\r\nhello\r\n0\r\n\r\n"),
        ("plus sign", "+5\r\nhello\r\n0\r\n\r\n"),
        ("minus sign", "-5\r\nhello\r\n0\r\n\r\n"),
        ("leading space", " 5\r\nhello\r\n0\r\n\r\n"),
        ("17 hex digits", "00000000000000005\r\nhello\r\n0\r\n\r\n"),
        ("bare LF after the last-chunk size", "0\n\r\n"),
    ];
    // Faults after a good first chunk: at most that chunk may have been forwarded, never the
    // last chunk (the upstream never sees a complete request).
    let later: &[(&str, &str)] = &[
        ("bare LF after chunk data", "5\r\nhello\n0\r\n\r\n"),
        ("bare LF ending a trailer", "5\r\nhello\r\n0\r\nX-T: 1\n\r\n"),
        (
            "bare LF ending the trailer section",
            "5\r\nhello\r\n0\r\nX-T: 1\r\n\n",
        ),
        ("bare LF ending the body", "5\r\nhello\r\n0\r\n\n"),
    ];
    let cases = size_line
        .iter()
        .map(|c| (c, true))
        .chain(later.iter().map(|c| (c, false)));
    for (n, ((what, body), nothing)) in cases.enumerate() {
        let path = format!("/a{n}");
        let mut c = h1_connect(gw.https).await;
        let mut request = head(&path).into_bytes();
        request.extend_from_slice(body.as_bytes());
        let r = harness::wire::exchange(&mut c, &request).await;
        assert_eq!(r.status, 400, "{what}: {}", text(&r.raw));
        // The upstream connection got the head, then was closed, never reused.
        let upstream = rec.request(&format!("POST {path} "), true).await;
        let (_, up_body) = head_and_body(&upstream);
        if nothing {
            assert!(up_body.is_empty(), "{what}: upstream got {:?}", text(&up_body));
        } else {
            assert!(
                up_body.is_empty() || up_body == b"5\r\nhello\r\n",
                "{what}: upstream got {:?}",
                text(&up_body)
            );
        }
    }
}

/// A head that is too large or has too many fields gets 431, a target with `..` above the
/// root or a NUL, or no HTTP at all, 400; with the security headers, and other traffic is
/// unaffected.
#[tokio::test]
async fn malformed_and_oversized_requests() {
    let (up, gw) = with_echo("[limits]\nmax_header_bytes = \"8K\"\nmax_header_count = 50").await;
    let smuggle = b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let r = client::raw(gw.https, smuggle).await;
    assert!(r.starts_with("HTTP/1.1 400"), "CL+TE: {r}");

    let big = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let r = client::raw(gw.https, big.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "large header: {r}");

    let many: String = (0..80).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = client::raw(
        gw.https,
        format!("GET / HTTP/1.1\r\nHost: localhost\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 431"), "many headers: {r}");

    let r = client::raw(gw.https, b"GET /../x HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "dot-dot: {r}");
    let r = client::raw(gw.https, b"GET /a%00b HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "NUL: {r}");
    let r = client::raw(gw.https, b"NONSENSE\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "garbage: {r}");
    assert!(
        r.to_ascii_lowercase().contains("x-frame-options: sameorigin"),
        "{r}"
    );
    assert!(up.seen().is_empty(), "{:?}", up.seen());

    // Other traffic is unaffected.
    let ok = client::send(client::http(false).get(gw.url("/fine"))).await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn absolute_form_uses_its_authority_never_a_foreign_host() {
    let (rec, gw) = recorded(HEAD).await;
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
    let (rec, gw) = recorded(HEAD).await;
    let mut s = h1_connect(gw.https).await;
    let pipelined = b"GET /one HTTP/1.1\r\nHost: localhost\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello\
          GET /three HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    write(&mut s, pipelined).await;
    let mut out = Vec::new();
    let answered = within("all three answered, then closed", s.read_to_end(&mut out)).await;
    answered.unwrap();
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

/// Also: the fields the gateway sets go out as nginx writes them (`proxy_set_header
/// X-Forwarded-For ...`, `add_header X-Frame-Options ...`): the forwarding fields upstream in
/// that case, the security fields of a proxied answer in the case they are configured in
/// (vendor/pingora-http/PATCHED.md; before, both went out lowercase).
#[tokio::test]
async fn headers_named_in_connection_are_removed_and_the_request_forwarded() {
    let (rec, gw) = recorded(HEAD).await;
    let request = b"GET /c HTTP/1.1\r\nHost: localhost\r\nConnection: close, X-Forwarded-For, X-Custom\r\nX-Custom: 1\r\nX-Forwarded-For: 6.6.6.6\r\nX-Kept: 2\r\n\r\n";
    let r = exchange(gw.https, request).await;
    assert!(status_of(&r).contains(" 200 "), "{r}");
    assert!(r.contains("\r\nX-Frame-Options: SAMEORIGIN\r\n"), "{r}");
    assert!(r.contains("\r\nX-Content-Type-Options: nosniff\r\n"), "{r}");
    let raw = rec.requests().last().unwrap().clone();
    for field in [
        "X-Forwarded-For: 127.0.0.1",
        "X-Real-IP: 127.0.0.1",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: localhost",
    ] {
        assert!(raw.contains(&format!("\r\n{field}\r\n")), "{field}: {raw}");
    }
    let head = raw.to_ascii_lowercase();
    assert!(!head.contains("x-custom"), "{head}");
    assert!(!head.contains("6.6.6.6"), "{head}");
    assert!(head.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"), "{head}");
    assert!(head.contains("\r\nx-real-ip: 127.0.0.1\r\n"), "{head}");
    assert!(head.contains("\r\nx-kept: 2\r\n"), "{head}");
}

/// Transfer-Encoding and Content-Length reach the upstream normalized, an HTTP/1.0 request
/// without Host gets the upstream's address as its Host, and a 204 has no Content-Length.
#[tokio::test]
async fn framing_fields_host_and_204_reach_each_side_well_formed() {
    let (rec, gw) = recorded("").await;
    let r = exchange(
        gw.https,
        b"POST /te HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          POST /cl HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0003\r\n\r\nabc\
          GET /old HTTP/1.0\r\n\r\n",
    )
    .await;
    assert_eq!(r.matches("200 OK").count(), 3, "{r}");
    let heads = rec.heads();
    let find = |p: &str| {
        heads
            .iter()
            .find(|h| h.contains(p))
            .cloned()
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    assert!(
        find("POST /te ").contains("\r\ntransfer-encoding: chunked\r\n"),
        "{heads:?}"
    );
    assert!(
        find("POST /cl ").contains("\r\ncontent-length: 3\r\n"),
        "{heads:?}"
    );
    let old = find("GET /old ");
    assert!(
        old.contains(&format!("\r\nhost: {}\r\n", rec.addr)),
        "HTTP/1.0 without Host: {old}"
    );
    // No Content-Length on a 204.
    let r = exchange(
        gw.https,
        b"GET /204 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 204 "), "{r}");
    assert!(!r.to_ascii_lowercase().contains("content-length"), "{r}");
}

/// An `Upgrade` without `Connection: upgrade` and an h2c upgrade reach the upstream as plain
/// requests; a WebSocket handshake is forwarded as one; a 101 nobody asked for is a 502.
#[tokio::test]
async fn only_websocket_handshakes_are_forwarded_and_only_they_may_get_101() {
    let (rec, gw) = recorded("").await;
    for (path, extra) in [
        ("/foo", "Upgrade: foo\r\n"),
        ("/h2c", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"),
    ] {
        let r = exchange(
            gw.https,
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200 "), "{path}: {r}");
        let head = rec.heads().into_iter().find(|h| h.contains(&format!("GET {path} "))).unwrap();
        let lower = head.to_ascii_lowercase();
        assert!(!lower.contains("upgrade"), "{path}: no upgrade upstream: {head}");
    }
    let _ = exchange(
        gw.https,
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    let head = rec.heads().into_iter().find(|h| h.contains("GET /ws ")).unwrap();
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    let r = exchange(gw.https, b"GET /up101 HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 502 "), "unsolicited 101: {r}");
}

#[tokio::test]
async fn trace_gets_405_and_a_clients_forwarded_header_is_dropped() {
    let (rec, gw) = recorded("").await;
    let trace = b"TRACE / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let r = exchange(gw.https, trace).await;
    assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
    assert!(rec.heads().is_empty(), "TRACE is not forwarded");
    let r = exchange(
        gw.https,
        b"GET /f HTTP/1.1\r\nHost: localhost\r\nForwarded: for=6.6.6.6;proto=http\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    let head = rec.heads().pop().unwrap().to_ascii_lowercase();
    assert!(!head.contains("forwarded: for=6.6.6.6"), "{head}");
    assert!(head.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"), "{head}");
}

#[tokio::test]
async fn long_targets_get_414_and_grafana_sized_ones_pass() {
    let (rec, gw) = recorded(HEAD).await;
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
    let limits = format!("{HEAD}\nbody_read_timeout = \"1s\"\nsend_timeout = \"1s\"");
    let (_rec, gw) = recorded(&limits).await;

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

/// A head trickled in a line every 300 ms on the HTTPS listener: each read alone is fast,
/// the whole head is not: 408 at the header deadline, with the security headers, and
/// nothing reaches the upstream.
#[tokio::test]
async fn slowloris_gets_408() {
    let (up, gw) = with_echo("[limits]\nheader_read_timeout = \"1s\"").await;
    let (mut s, _) = client::tls(gw.https, "localhost").await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    for i in 0..40 {
        let line = format!("X-Slow-{i}: a\r\n");
        if s.write_all(line.as_bytes()).await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                break;
            }
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "got: {text}");
    assert!(text.to_ascii_lowercase().contains("x-frame-options: sameorigin"));
    assert!(up.seen().is_empty());
}

/// A head that never completes on the :80 and metrics listeners gets 408 within the
/// header deadline, like :443.
#[tokio::test]
async fn every_listener_has_a_header_deadline() {
    let (_rec, gw) = recorded(HEAD).await;
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
    harness::poll_until(Duration::from_secs(5), "metrics", || async {
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
