//! Findings of a review as an attacker would make it, each fixed and kept fixed: HTTP/2
//! timeouts, upgrades nobody asked for, requests without Host, framing fields as sent,
//! Content-Length on 204, long `:path`, and configurations `gateway check` must refuse.

mod harness;

use bytes::Bytes;
use harness::client::exchange;
use harness::wire::{h2_connect, h2_request, within};
use harness::Gateway;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use harness::config::{preamble, route, upstream_at};
use harness::recorder::Recorder;

fn config(up: SocketAddr, limits: &str) -> String {
    format!(
        r#"
{head}[limits]
{limits}
[logging]
access_log = "off"
{rec}{ws}"#,
        head = preamble("2s", ""),
        rec = upstream_at("rec", up),
        ws = route("ws", "/", "rec", "websocket = true\n"),
    )
}

#[tokio::test]
async fn h2_idle_connections_and_stalled_bodies_are_cut_like_h1() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&config(
        rec.addr,
        "keepalive_timeout = \"2s\"\nbody_read_timeout = \"1s\"",
    ))
    .await;

    // A stream whose body stops after 3 of 100 declared bytes: 408 at body_read_timeout
    // (before: the upstream's read timeout, 504, or a day on a long route).
    let h2 = h2_connect(gw.https).await;
    let mut ready = within("h2 ready", h2.send.clone().ready()).await.unwrap();
    let req = h2_request(gw.https, "POST", "/stalled", &[("content-length", "100")]);
    let (response, mut body) = ready.send_request(req, false).unwrap();
    body.send_data(Bytes::from_static(b"abc"), false).unwrap();
    let started = Instant::now();
    let response = within("the answer to a stalled body", response).await.unwrap();
    assert_eq!(response.status(), 408, "a stalled h2 body gets 408");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // A connection without streams is closed after keepalive_timeout (before: never).
    let mut idle = h2_connect(gw.https).await;
    let started = Instant::now();
    assert!(
        idle.closed_within(Duration::from_secs(15)).await,
        "the idle h2 connection is closed by the gateway"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn only_websocket_handshakes_are_forwarded_and_only_they_may_get_101() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&config(rec.addr, "")).await;
    // `Upgrade` without `Connection: upgrade`, and an h2c upgrade: plain requests upstream.
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
    // A WebSocket handshake is forwarded as one.
    let _ = exchange(
        gw.https,
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    let head = rec.heads().into_iter().find(|h| h.contains("GET /ws ")).unwrap();
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    // A 101 nobody asked for is a 502, and nothing is tunnelled.
    let r = exchange(gw.https, b"GET /up101 HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 502 "), "unsolicited 101: {r}");
}

#[tokio::test]
async fn framing_fields_host_and_204_reach_each_side_well_formed() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&config(rec.addr, "")).await;
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

#[tokio::test]
async fn a_long_h2_path_gets_414() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&config(rec.addr, "")).await;
    let h2 = h2_connect(gw.https).await;
    let mut ready = within("h2 ready", h2.send.clone().ready()).await.unwrap();
    let path = format!("/{}", "a".repeat(9000));
    let (response, _) = ready
        .send_request(h2_request(gw.https, "GET", &path, &[]), true)
        .unwrap();
    let response = within("the answer", response).await.unwrap();
    assert_eq!(response.status(), 414);
    assert!(rec.heads().is_empty(), "nothing forwarded");
}

#[test]
fn check_refuses_shared_listeners_control_bytes_in_hsts_and_zero_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[listen]\nhttps = \"127.0.0.1:28443\"\nhttp = \"127.0.0.1:28443\"\n",
            "must not share an address with the HTTPS listener",
        ),
        (
            "[security]\nhsts = \"max-age=1\\r\\nSet-Cookie: x=1\"\n",
            "hsts must not contain control characters",
        ),
        (
            "[limits]\nheader_read_timeout = \"0s\"\n",
            "header_read_timeout must be above zero",
        ),
    ];
    for (text, want) in cases {
        let file = dir.path().join("proxy.toml");
        std::fs::write(
            &file,
            format!("{text}[upstreams.u]\naddress = \"127.0.0.1:9\"\n[[routes]]\nprefix = \"/\"\nupstream = \"u\"\n"),
        )
        .unwrap();
        let mut cmd = std::process::Command::new(harness::gateway::binary());
        cmd.arg("check").arg("--config").arg(&file);
        let out = harness::run_cmd(&mut cmd, Duration::from_secs(30));
        let text_out = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{text}: {text_out}");
        assert!(text_out.contains(want), "{text}: {text_out}");
    }
}

#[tokio::test]
async fn trace_gets_405_and_a_clients_forwarded_header_is_dropped() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&config(rec.addr, "")).await;
    let r = exchange(
        gw.https,
        b"TRACE / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
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
