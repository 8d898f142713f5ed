//! Streams through the gateway, checked against the upstream's own progress, not a clock:
//! Server-Sent Events arrive one by one and uncompressed; WebSockets are copied both ways in
//! one loop, outlive the downstream read timeout, close when idle past their route's
//! `read_timeout` while a busy one stays, and are refused end to end by `websocket = false`;
//! and compressed streams: a compressible response without Content-Length, such as the
//! NDJSON token stream of Ollama behind Open WebUI (`application/x-ndjson`, chunked), is
//! compressed with a flush after every upstream chunk (`Encoder::encode_flushed` in
//! crates/proxy/src/compress.rs), so each line reaches the client when the upstream sends it,
//! over HTTP/1.1 and HTTP/2: the first line must decode at the client before the upstream
//! has sent its third.

mod harness;

use futures_util::{SinkExt, StreamExt};
use harness::client::header;
use harness::config::ws_route;
use harness::gateway::{simple_config, with_echo};
use harness::promises as p;
use harness::wire::{dechunk_prefix, h1_connect, h2_connect, h2_request, head_in, header_values};
use harness::wire::{read_head, read_more, within, write};
use harness::{client, secs, upstream, Gateway};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// The deadline of one step (a response head, an event, a read).
const STEP: Duration = Duration::from_secs(10);

const LINES: usize = 5;
/// Between two lines of the upstream's answer, as a model producing tokens.
const GAP: Duration = Duration::from_millis(300);

fn line(i: usize) -> String {
    format!(
        "{{\"model\":\"llama3\",\"created_at\":\"2025-01-01T00:00:0{i}Z\",\"response\":\"token{i} \",\"done\":{}}}\n",
        i + 1 == LINES
    )
}

fn all_lines() -> String {
    (0..LINES).map(line).collect()
}

/// An upstream answering every request with `LINES` NDJSON lines, `GAP` apart, chunked and
/// without Content-Length. `sent` holds how many lines of the current answer are written.
struct Streamer {
    addr: SocketAddr,
    sent: watch::Receiver<usize>,
    // The connection tasks live in the accept task's JoinSet: aborted with it.
    _task: harness::Task,
}

impl Streamer {
    async fn start() -> Streamer {
        let (listener, addr) = harness::upstream::listen().await;
        let (tx, sent) = watch::channel(0usize);
        let tx = Arc::new(tx);
        let task = harness::Task::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                conns.spawn(serve(stream, tx.clone()));
            }
        });
        Streamer {
            addr,
            sent,
            _task: task,
        }
    }

    /// Lines of the current answer written so far.
    fn sent(&self) -> usize {
        *self.sent.borrow()
    }
}

async fn serve(mut s: TcpStream, sent: Arc<watch::Sender<usize>>) {
    if read_head(&mut s, &mut Vec::new()).await.is_none() {
        return;
    }
    sent.send_replace(0);
    let start = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n\
        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if s.write_all(start).await.is_err() {
        return;
    }
    for i in 0..LINES {
        if i > 0 {
            // The pause between tokens is what this test is about.
            tokio::time::sleep(GAP).await;
        }
        let l = line(i);
        let c = format!("{:x}\r\n{l}\r\n", l.len());
        if s.write_all(c.as_bytes()).await.is_err() || s.flush().await.is_err() {
            return;
        }
        sent.send_replace(i + 1);
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let _ = s.flush().await;
}

/// What gunzip makes of the compressed bytes received so far (a stream cut anywhere): the
/// data it could decode; the error for the missing end is expected.
fn gunzip_prefix(compressed: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = flate2::read::MultiGzDecoder::new(compressed).read_to_end(&mut out);
    out
}

/// The whole stream arrived, and its first line before the upstream had sent its third.
fn check(first_line_at: Option<usize>, decoded: &[u8]) {
    assert_eq!(String::from_utf8_lossy(decoded), all_lines(), "the whole stream");
    let Some(sent) = first_line_at else {
        panic!("no line could be decoded before the stream ended");
    };
    assert!(
        sent < 3,
        "the first line decoded only after the upstream had sent {sent} of {LINES} lines"
    );
}

#[tokio::test]
async fn ndjson_stream_is_gzipped_line_by_line_over_h1() {
    let up = Streamer::start().await;
    let gw = Gateway::start(&simple_config(up.addr, "")).await;
    let mut tls = h1_connect(gw.https).await;
    let request = b"GET /api/generate HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: gzip\r\n\r\n";
    write(&mut tls, request).await;

    let mut raw = Vec::new();
    let head_end = head_in(&mut tls, &mut raw).await;
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header_values(&head, "content-encoding"), ["gzip"], "{head}");
    assert_eq!(header_values(&head, "transfer-encoding"), ["chunked"], "{head}");
    assert!(header_values(&head, "content-length").is_empty(), "{head}");

    let mut first_line_at = None;
    let decoded = loop {
        let (compressed, done) = dechunk_prefix(&raw[head_end..]);
        let decoded = gunzip_prefix(&compressed);
        if first_line_at.is_none() && decoded.contains(&b'\n') {
            first_line_at = Some(up.sent());
        }
        if done || !read_more(&mut tls, &mut raw).await {
            break decoded;
        }
    };
    check(first_line_at, &decoded);
}

#[tokio::test]
async fn ndjson_stream_is_gzipped_line_by_line_over_h2() {
    let up = Streamer::start().await;
    let gw = Gateway::start(&simple_config(up.addr, "")).await;
    let h2 = h2_connect(gw.https).await;
    let req = h2_request(gw.https, "GET", "/api/generate", &[("accept-encoding", "gzip")]);
    let mut ready = within("the h2 connection to be ready", h2.send.clone().ready())
        .await
        .expect("ready");
    let (response, _stream) = ready.send_request(req, true).expect("send");
    let response = within("the h2 response", response).await.expect("response");
    assert_eq!(response.status(), 200);
    let encoding = response
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok());
    assert_eq!(encoding, Some("gzip"));

    let mut body = response.into_body();
    let mut compressed = Vec::new();
    let mut first_line_at = None;
    while let Some(data) = within("the h2 response body", body.data()).await {
        let data = data.expect("a DATA frame");
        let _ = body.flow_control().release_capacity(data.len());
        compressed.extend_from_slice(&data);
        if first_line_at.is_none() && gunzip_prefix(&compressed).contains(&b'\n') {
            first_line_at = Some(up.sent());
        }
    }
    check(first_line_at, &gunzip_prefix(&compressed));
}

#[tokio::test]
async fn sse_events_arrive_one_by_one_and_uncompressed() {
    let (up, gw) = with_echo("").await;
    for h2 in [false, true] {
        let proto = if h2 { "h2" } else { "HTTP/1.1" };
        let request = client::http(h2)
            .get(gw.url("/sse-paced"))
            .header("Accept-Encoding", "gzip")
            .send();
        let mut r = harness::within(STEP, "the SSE response head", request)
            .await
            .unwrap();
        assert_eq!(header(&r, "content-type"), Some("text/event-stream"));
        assert!(header(&r, "content-encoding").is_none());
        // The upstream sends event 0, then each next event only once this client has seen the
        // previous one: a gateway that held events back (buffering, compression) would never
        // deliver the event the upstream waits on, and the read below would time out.
        let mut text = String::new();
        for i in 0..upstream::SSE_PACED_EVENTS {
            let what = format!("SSE event {i} ({proto}) while the upstream holds back the next one");
            while text.matches("\n\n").count() <= i {
                let chunk = harness::within(STEP, &what, r.chunk())
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("the stream ended before event {i}: {text}"));
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
            assert!(text.contains(&format!("id: {i}\ndata: event {i} ")), "{text}");
            if i + 1 < upstream::SSE_PACED_EVENTS {
                up.release_sse_event();
            }
        }
        // An empty DATA frame may carry the end of the stream: only data would be wrong.
        loop {
            let end = harness::within(STEP, "the end of the SSE stream", r.chunk())
                .await
                .unwrap();
            match end {
                None => break,
                Some(b) => assert!(b.is_empty(), "more after the last event: {b:?}"),
            }
        }
        assert_eq!(text.matches("\n\n").count(), upstream::SSE_PACED_EVENTS, "{text}");
    }
}

#[tokio::test]
async fn websocket_stays_open_past_the_downstream_read_timeout() {
    let ws_up = upstream::ws_echo().await;
    let route = ws_route(ws_up.addr, "websocket = true\nread_timeout = \"60s\"\n");
    let (_up, gw) = with_echo(&format!("[limits]\nbody_read_timeout = \"1s\"\n{route}")).await;
    let mut ws = p::wss(gw.https, "/ws/echo").await;
    p::round_trip(&mut ws, "hello").await.expect("the echo");
    // Idle for longer than the 1 s body read timeout: the connection must survive.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    p::round_trip(&mut ws, "still here")
        .await
        .expect("the connection is still open");
    let _ = harness::within(STEP, "closing", ws.close(None)).await;
}

/// vendor/pingora-proxy/PATCHED.md: after the 101, a WebSocket is copied both ways in one
/// loop (no task pipe): text and a 256 KiB binary message (many reads) come back whole and in
/// order, and a close from the client ends the exchange. Fails without the patch (the line
/// is never logged).
#[tokio::test]
async fn websocket_is_copied_in_one_loop() {
    use tokio_tungstenite::tungstenite::Message;
    let up = upstream::echo().await;
    let ws_up = upstream::ws_echo().await;
    let routes = ws_route(ws_up.addr, "websocket = true\n");
    let gw = Gateway::start_with_env(
        &simple_config(up.addr, &routes),
        &[("RUST_LOG", "info,pingora_proxy::proxy_h1::direct=debug")],
    )
    .await;
    let mut ws = p::wss(gw.https, "/ws/echo").await;
    let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let sent = [
        Message::text("one"),
        Message::binary(big.clone()),
        Message::text("three"),
    ];
    for m in &sent {
        harness::within(STEP, "sending", ws.send(m.clone()))
            .await
            .unwrap();
    }
    for m in &sent {
        let echoed = harness::within(STEP, "the echo", ws.next())
            .await
            .expect("open")
            .unwrap();
        assert_eq!(&echoed, m);
    }
    let _ = harness::within(STEP, "closing", ws.close(None)).await;
    // The upstream ends first: its Close frame reaches the client, then the end.
    let mut ws = p::wss(gw.https, "/ws/echo").await;
    harness::within(STEP, "sending", ws.send(Message::text("close-me")))
        .await
        .unwrap();
    match harness::within(STEP, "the upstream's Close frame", ws.next()).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.reason.as_str(), "bye"),
        other => panic!("expected the upstream's Close frame, got {other:?}"),
    }
    let end = harness::within(STEP, "the end of the connection", ws.next()).await;
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
    harness::until(STEP, "the access log lines of both WebSockets", || {
        (gw.stdout().matches("\"GET /ws/echo HTTP/1.1\" 101").count() == 2).then_some(())
    })
    .await;
    assert_eq!(
        gw.stderr()
            .matches("upgraded connection: copied in one loop")
            .count(),
        2,
        "{}",
        gw.stderr()
    );
}

/// Time the gateway spends blocked writing to a client that does not read is not idle time
/// (vendor/pingora-proxy patch 0003: the idle wait restarts when the copy loop waits again):
/// a 12 MiB echo that the client leaves unread for 2.5 s, past the route's 1 s
/// `read_timeout`, arrives whole, and the WebSocket still answers afterwards. The client's
/// receive buffer is 16 KiB, so the gateway's write blocks well before the echo is through.
///
/// To see it fail: in vendor/pingora-proxy/src/proxy_h1_direct.rs, drop the
/// `waiting_since = time::Instant::now();` after `relay_response_task` in the upgraded loop
/// (the blocked write then counts as idle and the connection is cut).
#[tokio::test]
async fn a_websocket_write_blocked_past_read_timeout_is_not_idle() {
    use tokio_tungstenite::tungstenite::Message;
    let ws_up = upstream::ws_echo().await;
    let routes = "[limits]\nbody_read_timeout = \"30s\"\n".to_owned()
        + &ws_route(ws_up.addr, "read_timeout = \"1s\"\n");
    let up = upstream::echo().await;
    let gw = Gateway::start(&simple_config(up.addr, &routes)).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let tcp = harness::within(STEP, "connecting", socket.connect(gw.https))
        .await
        .expect("connect");
    let (tls, _) = client::tls_over(tcp, "localhost").await;
    let url = format!("wss://localhost:{}/ws/slow", gw.https.port());
    let (mut ws, resp) = harness::within(STEP, "the handshake", tokio_tungstenite::client_async(url, tls))
        .await
        .expect("handshake");
    assert_eq!(resp.status(), 101);
    let big: Vec<u8> = (0..12 << 20).map(|i| (i % 251) as u8).collect();
    harness::within(STEP, "sending", ws.send(Message::binary(big.clone())))
        .await
        .expect("sent");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let echoed = harness::within(secs(20), "the echo", ws.next())
        .await
        .expect("still open")
        .expect("a message");
    assert!(echoed == Message::binary(big), "the echo came back whole");
    p::round_trip(&mut ws, "still here")
        .await
        .expect("the WebSocket still works after the blocked write");
    let _ = harness::within(STEP, "closing", ws.close(None)).await;
}

/// A WebSocket idle for longer than its route's `read_timeout` (1 s) is closed by the gateway;
/// one with a message every 300 ms stays up three times as long. The body read timeout
/// (what an upgraded connection would get otherwise) is 30 s here.
///
/// The copy loop keeps one idle timer per connection, reset lazily, instead of a read timeout
/// per read (vendor/pingora-proxy/PATCHED.md, "Upgraded connections: one idle timer"): each
/// WebSocket logs that timer once.
///
/// To see it fail: make both timeouts of an upgraded connection ignore the route: in
/// crates/proxy/src/proxy.rs, `request_filter` sets `body_read_timeout` for upgrades too and
/// `upstream_peer` the upstream's `read_timeout` (the idle one then lives 30 s); or give
/// upgrades a 200 ms timeout (the busy one is cut); or take patch 0003 of
/// vendor/pingora-proxy away (the timer line is never logged).
#[tokio::test]
async fn a_websocket_idle_past_read_timeout_is_closed_and_a_busy_one_stays() {
    let ws_up = upstream::ws_echo().await;
    let limits = "[limits]\nbody_read_timeout = \"30s\"\n";
    let routes = limits.to_owned() + &ws_route(ws_up.addr, "read_timeout = \"1s\"\n");
    let up = upstream::echo().await;
    let gw = Gateway::start_with_env(
        &simple_config(up.addr, &routes),
        &[("RUST_LOG", "info,pingora_proxy::proxy_h1::direct=debug")],
    )
    .await;
    let mut idle = p::wss(gw.https, "/ws/idle").await;
    let mut busy = p::wss(gw.https, "/ws/busy").await;
    p::round_trip(&mut idle, "hello")
        .await
        .expect("the idle one works at first");
    let quiet_since = Instant::now();
    let idle_end = async {
        let ended = tokio::time::timeout(secs(8), async {
            loop {
                match idle.next().await {
                    None | Some(Err(_)) => break,
                    Some(Ok(m)) if m.is_close() => break,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        ended.map(|()| quiet_since.elapsed())
    };
    let chatter = async {
        for i in 0..10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            p::round_trip(&mut busy, &format!("tick {i}"))
                .await
                .map_err(|e| format!("tick {i}: {e}"))?;
        }
        Ok::<_, String>(())
    };
    let (closed_after, chatted) = tokio::join!(idle_end, chatter);
    let closed_after = closed_after.expect("the idle WebSocket is still open 8 s later (read_timeout 1 s)");
    assert!(
        (Duration::from_millis(500)..=secs(4)).contains(&closed_after),
        "the idle WebSocket was closed {closed_after:?} after its last message"
    );
    chatted.expect("the busy WebSocket stays open past three read timeouts");
    p::round_trip(&mut busy, "still here")
        .await
        .expect("the busy one still works");
    let _ = tokio::time::timeout(secs(5), busy.close(None)).await;
    assert_eq!(
        gw.stderr()
            .matches("upgraded connection: one idle timer of 1s")
            .count(),
        2,
        "one idle timer per WebSocket: {}",
        gw.stderr()
    );
}

/// `websocket = false` refuses the upgrade end to end: the upstream gets a plain request (no
/// `Upgrade`, no `Connection: upgrade`), the client no 101, and a real WebSocket client fails
/// its handshake against a real WebSocket server. The controls: the same request on a route
/// that allows WebSockets reaches the upstream with `Upgrade`, and the same server upgrades.
///
/// To see it fail: in `upstream_request_filter` (crates/proxy/src/proxy.rs) compute
/// `allow_upgrade` from `session.is_upgrade_req()` alone, without `route.websocket`.
#[tokio::test]
async fn websocket_false_refuses_the_upgrade_end_to_end() {
    let up = upstream::echo().await;
    let ws_up = upstream::ws_echo().await;
    let routes = format!(
        "[upstreams.ws]\naddress = \"{}\"\n\
         [[routes]]\nprefix = \"/nows/\"\nupstream = \"echo\"\nwebsocket = false\n\
         [[routes]]\nprefix = \"/nows-ws/\"\nupstream = \"ws\"\nwebsocket = false\n\
         [[routes]]\nprefix = \"/ws/\"\nupstream = \"ws\"\n",
        ws_up.addr
    );
    let gw = Gateway::start(&simple_config(up.addr, &routes)).await;
    let mut answers = Vec::new();
    for path in ["/nows/chat", "/allowed/chat"] {
        let request = p::upgrade_request(path, "");
        let exchange = client::raw(gw.https, request.as_bytes());
        answers.push(harness::within(secs(40), path, exchange).await);
    }
    let (refused, allowed) = (&answers[0], &answers[1]);
    assert!(
        refused.starts_with("HTTP/1.1 200"),
        "no 101, the upstream's plain answer: {refused}"
    );
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");

    let seen = up.seen();
    let find = |uri: &str| {
        seen.iter()
            .find(|s| s.uri == uri)
            .cloned()
            .unwrap_or_else(|| panic!("the upstream never saw {uri}: {seen:?}"))
    };
    let plain = find("/nows/chat");
    assert_eq!(plain.header("upgrade"), None, "{plain:?}");
    let connection = plain.header("connection").unwrap_or("").to_ascii_lowercase();
    assert!(!connection.contains("upgrade"), "{plain:?}");
    assert_eq!(
        find("/allowed/chat").header("upgrade"),
        Some("websocket"),
        "the control: an allowed upgrade reaches the upstream"
    );

    // A real client and server: no WebSocket through the refusing route...
    let (tls, _) = client::tls(gw.https, "localhost").await;
    let url = format!("wss://localhost:{}/nows-ws/chat", gw.https.port());
    let handshake = harness::within(
        secs(15),
        "the refused handshake",
        tokio_tungstenite::client_async(url, tls),
    )
    .await;
    if let Ok((_, response)) = handshake {
        panic!(
            "a WebSocket was opened through a websocket = false route: {:?}",
            response.status()
        );
    }
    // ...and one through the route that allows it, to the same server.
    let mut ws = p::wss(gw.https, "/ws/chat").await;
    p::round_trip(&mut ws, "allowed")
        .await
        .expect("an allowed WebSocket works");
}
