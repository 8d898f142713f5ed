//! The data plane end to end: real upstreams, the gateway binary, real clients.

mod harness;

use futures_util::{SinkExt, StreamExt};
use harness::gateway::simple_config;
use harness::{client, upstream, Gateway};
use std::io::Read;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The deadline of one step (a response head, an event, a read).
const STEP: Duration = Duration::from_secs(10);

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn proxies_with_forwarding_headers_over_h1_and_h2() {
    let up = upstream::echo().await;
    let extra =
        "[[routes]]\nprefix = \"/some/\"\nupstream = \"echo\"\nheaders = { \"X-Route\" = \"some\" }\n";
    let gw = Gateway::start(&simple_config(up.addr, extra)).await;
    for h2 in [false, true] {
        let r = client::http(h2)
            .get(gw.url("/some/path?x=1"))
            .header("Connection", "keep-alive")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.version(),
            if h2 {
                reqwest::Version::HTTP_2
            } else {
                reqwest::Version::HTTP_11
            }
        );
        assert_eq!(header(&r, "x-frame-options"), Some("SAMEORIGIN"));
        assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&r, "x-upstream"), Some("echo"));
        assert_eq!(
            header(&r, "x-route"),
            Some("some"),
            "the route's extra response header"
        );
        assert!(
            header(&r, "x-drop-me").is_none(),
            "headers named in Connection are hop-by-hop"
        );
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.uri, "/some/path?x=1");
        assert_eq!(s.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(s.header("x-real-ip"), Some("127.0.0.1"));
        assert_eq!(s.header("x-forwarded-proto"), Some("https"));
        let host = format!("localhost:{}", gw.https.port());
        assert_eq!(
            s.header("host"),
            Some(host.as_str()),
            "Host as the client sent it, port kept"
        );
        assert_eq!(s.header("x-forwarded-host"), Some(host.as_str()));
    }
    assert!(
        gw.stdout().contains("\"GET /some/path?x=1 HTTP/1.1\" 200"),
        "access log: {}",
        gw.stdout()
    );
}

/// vendor/pingora-proxy/PATCHED.md: a request without a body (GET, HEAD; from an HTTP/1.1 or
/// an HTTP/2 client) is proxied in one loop, without Pingora's two-way task pipe; a request
/// with a body still streams both ways. Fails without the patch (the line is never logged).
#[tokio::test]
async fn bodiless_requests_take_the_direct_loop() {
    const LINE: &str = "request without a body: proxied in one loop";
    let up = upstream::echo().await;
    let gw = Gateway::start_with_env(
        &simple_config(up.addr, ""),
        &[("RUST_LOG", "info,pingora_proxy::proxy_h1::direct=debug")],
    )
    .await;
    let direct = || gw.stderr().matches(LINE).count();
    let h1 = client::http(false);
    for i in 1..=3 {
        let r = h1.get(gw.url("/get")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            !r.bytes().await.unwrap().is_empty(),
            "the upstream's body is relayed"
        );
        assert_eq!(direct(), i, "GET #{i}: {}", gw.stderr());
    }
    let r = h1.head(gw.url("/head")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(direct(), 4, "HEAD");
    let r = client::http(true).get(gw.url("/h2")).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_2)
    );
    assert_eq!(direct(), 5, "HTTP/2 client, HTTP/1.1 upstream");
    let r = h1.post(gw.url("/post")).body("a body").send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    assert_eq!(direct(), 5, "a request with a body streams both ways");
    assert_eq!(up.seen().len(), 6);
}

#[tokio::test]
async fn spoofed_forwarded_for_is_replaced_unless_trusted() {
    let up = upstream::echo().await;
    let gw = Gateway::start(&simple_config(up.addr, "")).await;
    client::http(false)
        .get(gw.url("/"))
        .header("X-Forwarded-For", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(up.seen()[0].header("x-forwarded-for"), Some("127.0.0.1"));
    let cfg = simple_config(
        up.addr,
        "[forwarding]\ntrusted_proxies = [\"127.0.0.0/8\"]\nhost_header = \"nginx\"",
    );
    let gw = Gateway::start(&cfg).await;
    client::http(false)
        .get(gw.url("/"))
        .header("X-Forwarded-For", "6.6.6.6")
        .send()
        .await
        .unwrap();
    let s = up.seen().pop().unwrap();
    assert_eq!(s.header("x-forwarded-for"), Some("6.6.6.6, 127.0.0.1"));
    assert_eq!(s.header("x-real-ip"), Some("6.6.6.6"));
    assert_eq!(
        s.header("host"),
        Some("localhost"),
        "nginx's $host drops the port"
    );
}

#[tokio::test]
async fn sse_events_arrive_one_by_one_and_uncompressed() {
    let up = upstream::echo().await;
    let gw = Gateway::start(&simple_config(up.addr, "")).await;
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

async fn wss(
    gw: &Gateway,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let (tls, _) = client::tls(gw.https, "localhost").await;
    let url = format!("wss://localhost:{}{path}", gw.https.port());
    let handshake = tokio_tungstenite::client_async(url, tls);
    let (ws, resp) = harness::within(STEP, "the WebSocket handshake", handshake)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    ws
}

#[tokio::test]
async fn websocket_stays_open_past_the_downstream_read_timeout() {
    let up = upstream::echo().await;
    let ws_up = upstream::ws_echo().await;
    let routes = format!(
        "[limits]\nbody_read_timeout = \"1s\"\n[upstreams.ws]\naddress = \"{}\"\n[[routes]]\nprefix = \"/ws/\"\nupstream = \"ws\"\nwebsocket = true\nread_timeout = \"60s\"\n",
        ws_up.addr
    );
    let gw = Gateway::start(&simple_config(up.addr, &routes)).await;
    let mut ws = wss(&gw, "/ws/echo").await;
    harness::within(STEP, "sending", ws.send("hello".into()))
        .await
        .unwrap();
    let echoed = harness::within(STEP, "the echo", ws.next()).await;
    assert_eq!(echoed.unwrap().unwrap().into_text().unwrap(), "hello");
    // Idle for longer than the 1 s body read timeout: the connection must survive.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    harness::within(STEP, "sending after the idle time", ws.send("still here".into()))
        .await
        .unwrap();
    let echoed = harness::within(STEP, "the echo after the idle time", ws.next())
        .await
        .expect("the connection is still open")
        .unwrap();
    assert_eq!(echoed.into_text().unwrap(), "still here");
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
    let routes = format!(
        "[upstreams.ws]\naddress = \"{}\"\n[[routes]]\nprefix = \"/ws/\"\nupstream = \"ws\"\nwebsocket = true\n",
        ws_up.addr
    );
    let gw = Gateway::start_with_env(
        &simple_config(up.addr, &routes),
        &[("RUST_LOG", "info,pingora_proxy::proxy_h1::direct=debug")],
    )
    .await;
    let mut ws = wss(&gw, "/ws/echo").await;
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
    let mut ws = wss(&gw, "/ws/echo").await;
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
    harness::poll_until(STEP, "the access log lines of both WebSockets", || async {
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

/// The access log shows what the client got, as nginx logs it: the status already sent when
/// the upstream cuts its body short (200, not 502), and 499 for a client that left before
/// any response.
#[tokio::test]
async fn access_log_status_is_what_the_client_got() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = counted.clone();
            conns.spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let short = buf[..n].starts_with(b"GET /short ");
                seen.fetch_add(1, Ordering::SeqCst);
                if short {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")
                        .await;
                } else {
                    // Never answers; waits for the gateway to close.
                    let _ = s.read(&mut buf).await;
                }
            });
        }
    });
    let gw = Gateway::start(&simple_config(addr, "")).await;
    let r = harness::within(
        STEP,
        "the cut response",
        client::http(false).get(gw.url("/short")).send(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    if let Ok(body) = r.bytes().await {
        panic!("the body is cut short, yet {} bytes arrived whole", body.len());
    }
    let (mut tls, _) = client::tls(gw.https, "localhost").await;
    tls.write_all(b"GET /left HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    harness::poll_until(STEP, "the request at the upstream", || async {
        (seen.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    drop(tls);
    harness::poll_until(STEP, "both access log lines", || async {
        let log = gw.stdout();
        (log.contains("\"GET /short HTTP/1.1\" 200 ") && log.contains("\"GET /left HTTP/1.1\" 499 "))
            .then_some(())
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn compression_follows_type_length_and_preference() {
    let up = upstream::echo().await;
    let gw = Gateway::start(&simple_config(up.addr, "")).await;
    let c = client::http(false);
    let r = c
        .get(gw.url("/big.html"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-encoding"), Some("gzip"));
    assert_eq!(header(&r, "vary"), Some("Accept-Encoding"));
    let bytes = r.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, upstream::big_html());
    assert!(bytes.len() < text.len() / 4, "{} -> {}", text.len(), bytes.len());

    let r = c
        .get(gw.url("/big.html"))
        .header("Accept-Encoding", "gzip;q=0.5, br;q=1")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-encoding"), Some("br"));
    let r = c
        .get(gw.url("/big.html"))
        .header("Accept-Encoding", "zstd, gzip;q=0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-encoding"), Some("zstd"));
    let r = c.get(gw.url("/big.html")).send().await.unwrap();
    assert!(header(&r, "content-encoding").is_none());
    assert_eq!(
        header(&r, "vary"),
        Some("Accept-Encoding"),
        "Vary even when not compressed"
    );

    for path in ["/image.png", "/tiny.css", "/encoded", "/no-transform"] {
        let r = c
            .get(gw.url(path))
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .unwrap();
        let enc = header(&r, "content-encoding").unwrap_or("none").to_owned();
        assert!(enc == "none" || enc == "identity-test", "{path} got {enc}");
    }
    let r = c
        .head(gw.url("/big.html"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(header(&r, "content-encoding").is_none());
}

#[tokio::test]
async fn oversized_upload_by_content_length_is_refused_before_the_upstream() {
    let up = upstream::echo().await;
    let gw = Gateway::start(&simple_config(up.addr, "")).await;
    let (s, _) = client::tls(gw.https, "localhost").await;
    let (mut rd, mut wr) = tokio::io::split(s);
    let total: u64 = 600 * 1024 * 1024;
    let head = format!("POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {total}\r\n\r\n");
    wr.write_all(head.as_bytes()).await.unwrap();
    // Stream the body until the gateway answers.
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0u64;
        while sent < total {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        sent
    });
    let mut buf = vec![0u8; 4096];
    let n = harness::within(Duration::from_secs(30), "the gateway's answer", rd.read(&mut buf))
        .await
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    let sent = harness::within(Duration::from_secs(60), "the upload to stop", writer)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(sent < total, "the gateway answered only after the whole body");
    assert!(up.seen().is_empty(), "the upstream saw {:?}", up.seen());
}

#[tokio::test]
async fn oversized_chunked_upload_is_cut_when_it_passes_the_limit() {
    const MAX_BODY: usize = 1 << 20;
    const CHUNK: usize = 64 * 1024;
    let up = upstream::echo().await;
    let routes = "[[routes]]\nprefix = \"/upload/\"\nupstream = \"echo\"\nmax_body = \"1M\"\n";
    let gw = Gateway::start(&simple_config(up.addr, routes)).await;
    // Raw HTTP/1.1, so the answer is read while the body is still being written.
    let (s, _) = client::tls(gw.https, "localhost").await;
    let (mut rd, mut wr) = tokio::io::split(s);
    let head = "POST /upload/big HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n";
    harness::within(STEP, "sending the head", wr.write_all(head.as_bytes()))
        .await
        .unwrap();
    // Up to 600 MiB in 64 KiB chunks, until the gateway stops reading.
    let writer = tokio::spawn(async move {
        let mut chunk = format!("{CHUNK:x}\r\n").into_bytes();
        chunk.resize(chunk.len() + CHUNK, b'y');
        chunk.extend_from_slice(b"\r\n");
        let mut sent = 0usize;
        while sent < 600 << 20 {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
            sent += CHUNK;
        }
    });
    let mut buf = vec![0u8; 4096];
    let n = harness::within(Duration::from_secs(30), "the gateway's answer", rd.read(&mut buf))
        .await
        .unwrap_or(0);
    writer.abort();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "the client gets 413: {answer:?}"
    );
    // The upstream got the body up to the limit, never past it: its request ends (cut) with
    // at most max_body bytes, and with most of them (the gateway streamed until the limit
    // instead of refusing early).
    let seen = harness::poll_until(Duration::from_secs(10), "the cut upload at the upstream", || {
        let seen = up.seen();
        async move { seen.into_iter().find(|s| s.uri == "/upload/big") }
    })
    .await;
    assert!(
        seen.body_len <= MAX_BODY,
        "the upstream got {} bytes, past max_body ({MAX_BODY})",
        seen.body_len
    );
    assert!(
        seen.body_len >= MAX_BODY / 2,
        "the upstream got only {} bytes: cut long before max_body ({MAX_BODY})",
        seen.body_len
    );
}

#[tokio::test]
async fn slowloris_gets_408() {
    let up = upstream::echo().await;
    let gw = Gateway::start(&simple_config(up.addr, "[limits]\nheader_read_timeout = \"1s\"")).await;
    let (mut s, _) = client::tls(gw.https, "localhost").await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    // Trickle a header line every 300 ms; each read alone is fast, the whole head is not.
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

#[tokio::test]
async fn malformed_and_oversized_requests() {
    let up = upstream::echo().await;
    let gw = Gateway::start(&simple_config(
        up.addr,
        "[limits]\nmax_header_bytes = \"8K\"\nmax_header_count = 50",
    ))
    .await;
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
    let ok = client::http(false).get(gw.url("/fine")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn dead_and_hung_upstreams() {
    let up = upstream::echo().await;
    let hung = upstream::hang().await;
    let closed = upstream::closed();
    let routes = format!(
        "[upstreams.hung]\naddress = \"{}\"\nread_timeout = \"1s\"\n[upstreams.dead]\naddress = \"{closed}\"\nconnect_timeout = \"30s\"\n\
         [[routes]]\nprefix = \"/hung/\"\nupstream = \"hung\"\n[[routes]]\nprefix = \"/dead/\"\nupstream = \"dead\"\n",
        hung.addr
    );
    let gw = Gateway::start(&simple_config(up.addr, &routes)).await;
    let c = client::http(false);
    let r = c.get(gw.url("/hung/x")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(
        header(&r, "x-frame-options"),
        Some("SAMEORIGIN"),
        "errors carry security headers"
    );
    // A refused connection is answered at once, not after the 30 s connect timeout.
    let r = tokio::time::timeout(Duration::from_secs(10), c.get(gw.url("/dead/x")).send())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 502);
    let r = c.get(gw.url("/ok")).send().await.unwrap();
    assert_eq!(r.status(), 200, "other traffic is unaffected");
}

#[tokio::test]
async fn not_found_and_slash_redirect() {
    let up = upstream::echo().await;
    let cfg = format!(
        "[listen]\nhttps = \"{{HTTPS}}\"\nhttp = \"{{HTTP}}\"\nmetrics = \"{{METRICS}}\"\n[upstreams.u]\naddress = \"{}\"\n[[routes]]\nprefix = \"/n8n/\"\nupstream = \"u\"\nstrip_prefix = true\n",
        up.addr
    );
    let gw = Gateway::start(&cfg).await;
    let c = client::http(true);
    let r = c.get(gw.url("/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
    let r = c.get(gw.url("/n8n?a=1")).send().await.unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(
        header(&r, "location"),
        Some(format!("https://localhost:{}/n8n/?a=1", gw.https.port()).as_str())
    );
    let r = c.get(gw.url("/n8n/rest/push")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.seen()[0].uri, "/rest/push");
}

#[tokio::test]
async fn http_listener_redirects_and_answers_challenges() {
    let up = upstream::echo().await;
    let cfg = simple_config(up.addr, "").replace("[server]", "[server]\nacme_webroot = \"{DIR}/webroot\"");
    let gw = Gateway::start(&cfg).await;
    let token_dir = gw.dir.path().join("webroot/.well-known/acme-challenge");
    std::fs::create_dir_all(&token_dir).unwrap();
    std::fs::write(token_dir.join("tok_123-x"), "tok_123-x.thumbprint").unwrap();
    let c = client::http(false);
    let base = format!("http://{}", gw.http);
    for method in [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::DELETE,
    ] {
        let r = c
            .request(method.clone(), format!("{base}/a/b?c=d"))
            .header("Host", "example.com:8080")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 301, "{method}");
        // `public_https_port` defaults to the HTTPS listener's port.
        let location = format!("https://example.com:{}/a/b?c=d", gw.https.port());
        assert_eq!(header(&r, "location"), Some(location.as_str()));
        assert_eq!(header(&r, "x-frame-options"), Some("SAMEORIGIN"));
    }
    let r = c
        .get(format!("{base}/.well-known/acme-challenge/tok_123-x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "tok_123-x.thumbprint");
    let r = c
        .get(format!("{base}/.well-known/acme-challenge/unknown"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(format!("{base}/.well-known/acme-challenge/..%2f..%2fproxy.toml"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn graceful_stop_on_sigterm_within_the_grace_period() {
    let up = upstream::echo().await;
    let mut gw = Gateway::start(&simple_config(up.addr, "")).await;
    assert_eq!(
        client::http(false)
            .get(gw.url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // grace_period = "2s" in the test config; docker would SIGKILL after 10 s.
    assert!(
        gw.stop(Duration::from_secs(6)),
        "the gateway did not exit within its grace period"
    );
}

#[tokio::test]
async fn upstream_names_resolve_at_run_time_and_unknown_names_fail_cleanly() {
    let up = upstream::echo().await;
    let routes = format!(
        "[upstreams.named]\naddress = \"localhost:{}\"\n[upstreams.nowhere]\naddress = \"no-such-host.invalid:80\"\n\
         [[routes]]\nprefix = \"/named/\"\nupstream = \"named\"\n[[routes]]\nprefix = \"/nowhere/\"\nupstream = \"nowhere\"\n",
        up.addr.port()
    );
    let gw = Gateway::start(&simple_config(up.addr, &routes)).await;
    let c = client::http(false);
    assert_eq!(c.get(gw.url("/named/x")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(gw.url("/nowhere/x")).send().await.unwrap().status(), 502);
    assert_eq!(c.get(gw.url("/named/y")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn access_log_in_json() {
    let up = upstream::echo().await;
    let cfg = simple_config(up.addr, "").replace("access_log = \"combined\"", "access_log = \"json\"");
    let gw = Gateway::start(&cfg).await;
    let r = client::http(false)
        .get(gw.url("/logged?q=1"))
        .header("User-Agent", "test-agent")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = harness::poll_until(Duration::from_secs(10), "the access line", || {
        let out = gw.stdout();
        async move { out.lines().find(|l| l.contains("/logged")).map(str::to_owned) }
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(v["status"], 200);
    assert_eq!(v["route"], "all");
    assert_eq!(v["upstream"], "echo");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["user_agent"], "test-agent");
    assert!(v["bytes"].as_u64().unwrap() > 0 && v["duration_ms"].as_f64().is_some());
}
