//! HTTP/2 clients in front of HTTP/1.1 upstreams, checked on the wire with a raw h2 client
//! and recording upstreams that keep every byte they receive: cookie crumbs joined into one
//! field (RFC 9113 section 8.2.3), an `:authority` held to the rules of `Host`, request
//! bodies framed exactly once upstream (an empty last DATA frame, a body that does not match
//! its Content-Length; cloudflare/pingora#935), idle connections and stalled bodies cut like
//! HTTP/1.1 ones, and a long `:path` refused. (Interim responses over h2:
//! `framing_responses.rs`; the refusals Pingora answers itself: `error_pages.rs`.)

mod harness;

use bytes::Bytes;
use harness::gateway::simple_config;
use harness::recorder::{recorded, Scripted};
use harness::wire::{find, h2_connect, h2_request, head_and_body, header_values, is_chunked};
use harness::wire::{requests_of, text, within, H2};
use harness::Gateway;
use std::time::{Duration, Instant};

/// A [`Scripted`] upstream answering `ok`, a gateway in front of it and an h2 connection.
async fn scripted() -> (Scripted, Gateway, H2) {
    let rec = Scripted::ok().await;
    let gw = Gateway::start(&simple_config(rec.addr, "")).await;
    let h2 = h2_connect(gw.https).await;
    (rec, gw, h2)
}

#[tokio::test]
async fn b_h2_cookie_crumbs_reach_the_h1_upstream_as_one_cookie_field() {
    let (rec, gw, h2) = scripted().await;
    let req = h2_request(
        gw.https,
        "GET",
        "/b",
        &[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3; d=4")],
    );
    let r = h2.request(req, &[]).await.expect("h2 response");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));

    let upstream = rec.request("GET /b ", false).await;
    let (reqs, _) = requests_of(&upstream);
    let (head, body) = head_and_body(&reqs[0]);
    assert_eq!(header_values(&head, "cookie"), ["a=1; b=2; c=3; d=4"], "{head}");
    assert!(body.is_empty());

    // One field stays as it is.
    let req = h2_request(gw.https, "GET", "/b1", &[("cookie", "a=1; b=2")]);
    assert_eq!(h2.request(req, &[]).await.expect("h2 response").status, 200);
    let upstream = rec.request("GET /b1 ", false).await;
    let (reqs, _) = requests_of(&upstream);
    assert_eq!(header_values(&head_and_body(&reqs[0]).0, "cookie"), ["a=1; b=2"]);
}

/// An HTTP/2 `:authority` is held to the same rule as an HTTP/1.1 `Host` (nginx answers
/// `a..b` with 400 on both): refused, never forwarded.
#[tokio::test]
async fn b_h2_authority_with_an_empty_label_is_refused() {
    let (rec, gw, h2) = scripted().await;
    let bad = http::Request::builder()
        .method("GET")
        .uri(format!("https://a..b:{}/bad", gw.https.port()))
        .body(())
        .expect("request");
    assert_eq!(h2.request(bad, &[]).await.expect("h2 response").status, 400);
    let good = h2_request(gw.https, "GET", "/good", &[]);
    assert_eq!(h2.request(good, &[]).await.expect("h2 response").status, 200);
    rec.request("GET /good ", false).await;
    let seen: Vec<String> = rec.conns().iter().map(|c| text(&c.bytes)).collect();
    assert!(
        seen.iter().all(|c| !c.contains("/bad")),
        "the bad request is never forwarded: {seen:?}"
    );
}

#[tokio::test]
async fn c_h2_bodies_ending_with_an_empty_data_frame_end_exactly_once_upstream() {
    let (rec, gw, h2) = scripted().await;
    // Data, then an empty DATA frame with END_STREAM.
    let req = h2_request(gw.https, "POST", "/c1", &[]);
    assert_eq!(h2.request(req, &[b"hello", b""]).await.expect("c1").status, 200);
    // An empty DATA frame with END_STREAM as the only one.
    let req = h2_request(gw.https, "POST", "/c2", &[]);
    assert_eq!(h2.request(req, &[b""]).await.expect("c2").status, 200);
    // A request after them, on the pooled upstream connection if it was reused.
    let req = h2_request(gw.https, "GET", "/c3", &[]);
    assert_eq!(h2.request(req, &[]).await.expect("c3").status, 200);

    let c1 = rec.request("POST /c1 ", false).await;
    let (reqs, _) = requests_of(&c1);
    let (head, body) = head_and_body(&reqs[0]);
    assert!(is_chunked(&head), "{head}");
    assert_eq!(text(&body), "5\r\nhello\r\n0\r\n\r\n", "exactly one last chunk");

    let c2 = rec.request("POST /c2 ", false).await;
    let (reqs, _) = requests_of(&c2);
    let (head, body) = head_and_body(&reqs[0]);
    if is_chunked(&head) {
        assert_eq!(text(&body), "0\r\n\r\n", "exactly one last chunk");
    } else {
        assert!(body.is_empty(), "{head}{}", text(&body));
    }
    rec.request("GET /c3 ", false).await;

    // Every upstream connection carries whole requests and nothing else: a stray last chunk
    // would show up as a bogus request line or as leftover bytes.
    let mut total = 0;
    for conn in rec.conns() {
        let (reqs, leftover) = requests_of(&conn.bytes);
        assert!(leftover.is_empty(), "stray bytes upstream: {:?}", text(&leftover));
        for r in &reqs {
            let line = text(r).lines().next().unwrap_or_default().to_owned();
            let known = ["POST /c1 ", "POST /c2 ", "GET /c3 "];
            let ok = line.ends_with(" HTTP/1.1") && known.iter().any(|p| line.starts_with(p));
            assert!(ok, "unexpected request upstream: {line:?}");
        }
        total += reqs.len();
    }
    assert_eq!(total, 3);
}

#[tokio::test]
async fn c_h2_bodies_not_matching_content_length_are_reset_and_not_forwarded_past_it() {
    let (rec, gw, h2) = scripted().await;
    // More DATA than declared, in one frame; less, then END_STREAM. The h2 crate resets the
    // stream without delivering the offending frame.
    const OVER: &[&[u8]] = &[b"hello world"];
    const UNDER: &[&[u8]] = &[b"hello"];
    for (path, cl, frames) in [("/over", "5", OVER), ("/under", "10", UNDER)] {
        let req = h2_request(gw.https, "POST", path, &[("content-length", cl)]);
        match h2.request(req, frames).await {
            Err(_) => {}
            Ok(r) => assert!(r.status >= 400, "{path}: status {}", r.status),
        }
    }
    // Split: the declared 5 bytes arrive, then more: only those 5 may be forwarded.
    let req = h2_request(gw.https, "POST", "/over-split", &[("content-length", "5")]);
    let _ = h2.request(req, &[b"hello", b" world"]).await;

    // The connection still serves requests.
    let req = h2_request(gw.https, "GET", "/after", &[]);
    assert_eq!(h2.request(req, &[]).await.expect("after").status, 200);

    for path in ["/over", "/under"] {
        let marker = format!("POST {path} ");
        if rec.count(&marker) == 0 {
            continue; // not even the head was sent
        }
        let upstream = rec.request(&marker, true).await;
        let (_, body) = head_and_body(&upstream);
        assert!(body.is_empty(), "{path}: upstream got {:?}", text(&body));
    }
    for conn in rec.conns() {
        assert!(find(&conn.bytes, b"world").is_none(), "{:?}", text(&conn.bytes));
        if find(&conn.bytes, b"POST /under ").is_some() {
            assert!(find(&conn.bytes, b"hello").is_none(), "{:?}", text(&conn.bytes));
        }
    }
}

#[tokio::test]
async fn h2_idle_connections_and_stalled_bodies_are_cut_like_h1() {
    let (_rec, gw) = recorded("keepalive_timeout = \"2s\"\nbody_read_timeout = \"1s\"").await;

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
async fn a_long_h2_path_gets_414() {
    let (rec, gw) = recorded("").await;
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
