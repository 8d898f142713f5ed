//! HTTP framing where Pingora's own code decides (vendor/pingora-core/PATCHED.md), checked on
//! the wire: raw HTTP/1.1 and HTTP/2 clients on one side, a recording upstream on the other
//! that keeps every byte it receives and answers with fixed bytes.
//!
//! A strict chunked request bodies, B HTTP/2 cookie crumbs, C HTTP/2 request body framing,
//! D HTTP/1.0 clients never get chunked, E malformed upstream framing is a 502,
//! F a stale pooled connection is retried once for idempotent requests only.

mod harness;

use bytes::Bytes;
use harness::gateway::simple_config;
use harness::wire::{find, h2_connect, h2_request, header_values, read_more, within};
use harness::{client, Gateway};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";

fn occurrences(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Decodes a chunked body at the start of `buf` (as the gateway writes it): the payload and
/// how many bytes it took, or `None` while incomplete or malformed.
fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        let line_end = pos + find(&buf[pos..], b"\r\n")?;
        let line = std::str::from_utf8(&buf[pos..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        pos = line_end + 2;
        if size == 0 {
            let rest = &buf[pos..];
            let end = if rest.starts_with(b"\r\n") {
                2
            } else {
                find(rest, b"\r\n\r\n")? + 4
            };
            return Some((out, pos + end));
        }
        let next = pos.checked_add(size)?.checked_add(2)?;
        if buf.len() < next {
            return None;
        }
        out.extend_from_slice(&buf[pos..pos + size]);
        pos = next;
    }
}

fn is_chunked(head: &str) -> bool {
    header_values(head, "transfer-encoding")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("chunked"))
}

/// Where the first complete request in `buf` ends: its head, then a body framed by
/// Content-Length or chunked encoding. `None` while incomplete.
fn request_end(buf: &[u8]) -> Option<usize> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let head = text(&buf[..head_end]);
    if is_chunked(&head) {
        return Some(head_end + dechunk(&buf[head_end..])?.1);
    }
    let cl = header_values(&head, "content-length")
        .first()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= head_end + cl).then_some(head_end + cl)
}

/// The complete requests at the start of `bytes`, and the bytes left over.
fn requests_of(bytes: &[u8]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut rest = bytes;
    let mut out = Vec::new();
    while let Some(end) = request_end(rest) {
        out.push(rest[..end].to_vec());
        rest = &rest[end..];
    }
    (out, rest.to_vec())
}

/// A message split after its blank line.
fn head_and_body(msg: &[u8]) -> (String, Vec<u8>) {
    let end = find(msg, b"\r\n\r\n").map_or(msg.len(), |i| i + 4);
    (text(&msg[..end]), msg[end..].to_vec())
}

/// The request-target of a request.
fn path_of(request: &[u8]) -> String {
    text(request)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// The recording upstream
// ---------------------------------------------------------------------------------------------

/// How the recording upstream answers one complete request.
#[derive(Clone, Copy)]
enum Answer {
    /// Write these bytes, keep the connection open.
    Send(&'static [u8]),
    /// Write these bytes, then close.
    SendAndClose(&'static [u8]),
    /// Close without answering (a keep-alive connection the server just dropped).
    Hangup,
}

/// Given the connection's index, the request's index on it (both from 0) and the request.
type Script = Arc<dyn Fn(usize, usize, &[u8]) -> Answer + Send + Sync>;

fn script(f: impl Fn(usize, usize, &[u8]) -> Answer + Send + Sync + 'static) -> Script {
    Arc::new(f)
}

/// What one upstream connection received, and whether it has ended.
#[derive(Clone, Debug, Default)]
struct Conn {
    bytes: Vec<u8>,
    ended: bool,
}

type Conns = Arc<Mutex<Vec<Conn>>>;

/// A TCP upstream on 127.0.0.1 that records the exact bytes of each connection and answers
/// each complete request as its script says.
struct Recorder {
    addr: SocketAddr,
    conns: Conns,
    _task: harness::Task,
}

impl Recorder {
    async fn start(script: Script) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Conns = Arc::default();
        let all = conns.clone();
        let task = harness::Task::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = {
                    let mut list = all.lock().unwrap();
                    list.push(Conn::default());
                    list.len() - 1
                };
                tokio::spawn(serve(stream, index, all.clone(), script.clone()));
            }
        });
        Recorder {
            addr,
            conns,
            _task: task,
        }
    }

    fn conns(&self) -> Vec<Conn> {
        self.conns.lock().unwrap().clone()
    }

    /// Polls until a connection received `marker` (a request line start, unique per request)
    /// and, with `ended`, until that connection is closed. Returns its bytes from the marker on.
    async fn request(&self, marker: &str, ended: bool) -> Vec<u8> {
        let what = format!("{marker:?} at the upstream (ended: {ended})");
        harness::poll_until(Duration::from_secs(10), &what, || {
            let found = self.conns().into_iter().find_map(|c| {
                let at = find(&c.bytes, marker.as_bytes())?;
                (!ended || c.ended).then(|| c.bytes[at..].to_vec())
            });
            async move { found }
        })
        .await
    }

    /// How many times `marker` was received, over all connections.
    fn count(&self, marker: &str) -> usize {
        self.conns()
            .iter()
            .map(|c| occurrences(&c.bytes, marker.as_bytes()))
            .sum()
    }
}

async fn serve(mut stream: TcpStream, index: usize, conns: Conns, script: Script) {
    let mut pending = Vec::new();
    let mut served = 0;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        conns.lock().unwrap()[index].bytes.extend_from_slice(&chunk[..n]);
        pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = request_end(&pending) {
            let request: Vec<u8> = pending.drain(..end).collect();
            let answer = script.as_ref()(index, served, &request[..]);
            served += 1;
            let (bytes, close) = match answer {
                Answer::Send(b) => (b, false),
                Answer::SendAndClose(b) => (b, true),
                Answer::Hangup => (&b""[..], true),
            };
            if stream.write_all(bytes).await.is_err() || close {
                conns.lock().unwrap()[index].ended = true;
                return;
            }
        }
    }
    conns.lock().unwrap()[index].ended = true;
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to the gateway with ALPN http/1.1.
async fn h1_connect(gw: &Gateway) -> Tls {
    let (tls, _) = within("the TLS connection", client::tls(gw.https, "localhost")).await;
    tls
}

/// One response as the client read it: status, head, body (de-chunked when chunked), whether
/// the body was complete by its framing (or the connection ended, for close-delimited ones),
/// and every byte read.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
    complete: bool,
    raw: Vec<u8>,
}

/// Reads more bytes; false at the end of the connection.
async fn read_reply<S: AsyncRead + Unpin>(s: &mut S) -> Reply {
    let mut raw = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&raw, b"\r\n\r\n") {
            break i + 4;
        }
        if !read_more(s, &mut raw).await {
            panic!("the connection ended before a response head: {:?}", text(&raw));
        }
    };
    let head = text(&raw[..head_end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or(0);
    let length = header_values(&head, "content-length")
        .first()
        .and_then(|v| v.parse::<usize>().ok());
    let (body, complete) = if is_chunked(&head) {
        loop {
            if let Some((body, _)) = dechunk(&raw[head_end..]) {
                break (body, true);
            }
            if !read_more(s, &mut raw).await {
                break (raw[head_end..].to_vec(), false);
            }
        }
    } else if let Some(cl) = length {
        while raw.len() < head_end + cl && read_more(s, &mut raw).await {}
        let end = raw.len().min(head_end + cl);
        (raw[head_end..end].to_vec(), end == head_end + cl)
    } else {
        // Close-delimited.
        while read_more(s, &mut raw).await {}
        (raw[head_end..].to_vec(), true)
    };
    Reply {
        status,
        head,
        body,
        complete,
        raw,
    }
}

/// Sends `request` and reads one response.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, request: &[u8]) -> Reply {
    within("sending the request", async {
        s.write_all(request).await.expect("write");
        s.flush().await.expect("flush");
    })
    .await;
    read_reply(s).await
}

/// Sends `req` with `frames` as DATA frames, exactly as given (an empty one too), the last
/// with END_STREAM; no frames: END_STREAM on HEADERS. The status and body, or the stream error.
async fn h2_send(
    send: &h2::client::SendRequest<Bytes>,
    req: http::Request<()>,
    frames: &[&'static [u8]],
) -> Result<(u16, Vec<u8>), h2::Error> {
    let mut ready = within("the h2 connection to be ready", send.clone().ready()).await?;
    let (response, mut stream) = ready.send_request(req, frames.is_empty())?;
    for (i, &f) in frames.iter().enumerate() {
        stream.send_data(Bytes::from_static(f), i + 1 == frames.len())?;
    }
    let response = within("the h2 response", response).await?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(data) = within("the h2 response body", body.data()).await {
        let data = data?;
        let _ = body.flow_control().release_capacity(data.len());
        out.extend_from_slice(&data);
    }
    Ok((status, out))
}

async fn metric(gw: &Gateway, series: &str) -> f64 {
    let body = within("scraping /metrics", async {
        reqwest::get(format!("http://{}/metrics", gw.metrics))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics text")
    })
    .await;
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// A. Chunked request bodies (RFC 9112 section 7.1)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_malformed_chunked_request_bodies_get_400_and_nothing_more_reaches_the_upstream() {
    let rec = Recorder::start(script(|_, _, _: &[u8]| Answer::Send(OK))).await;
    let gw = Gateway::start(&simple_config(rec.addr, "")).await;
    let head =
        |path: &str| format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");

    // Control: upper-case hex and an extension (quoted value) are fine; the upstream gets the
    // same payload, re-chunked, with one last chunk.
    let mut c = h1_connect(&gw).await;
    let mut request = head("/a-ok").into_bytes();
    request.extend_from_slice(b"A;name=\"q v\"\r\n0123456789\r\n0\r\n\r\n");
    let r = exchange(&mut c, &request).await;
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
        let mut c = h1_connect(&gw).await;
        let mut request = head(&path).into_bytes();
        request.extend_from_slice(body.as_bytes());
        let r = exchange(&mut c, &request).await;
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

// ---------------------------------------------------------------------------------------------
// B. HTTP/2 cookie crumbs (RFC 9113 section 8.2.3)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn b_h2_cookie_crumbs_reach_the_h1_upstream_as_one_cookie_field() {
    let rec = Recorder::start(script(|_, _, _: &[u8]| Answer::Send(OK))).await;
    let gw = Gateway::start(&simple_config(rec.addr, "")).await;
    let h2 = h2_connect(gw.https).await;
    let send = h2.send.clone();
    let req = h2_request(
        gw.https,
        "GET",
        "/b",
        &[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3; d=4")],
    );
    let (status, body) = h2_send(&send, req, &[]).await.expect("h2 response");
    assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));

    let upstream = rec.request("GET /b ", false).await;
    let (reqs, _) = requests_of(&upstream);
    let (head, body) = head_and_body(&reqs[0]);
    assert_eq!(header_values(&head, "cookie"), ["a=1; b=2; c=3; d=4"], "{head}");
    assert!(body.is_empty());

    // One field stays as it is.
    let req = h2_request(gw.https, "GET", "/b1", &[("cookie", "a=1; b=2")]);
    let (status, _) = h2_send(&send, req, &[]).await.expect("h2 response");
    assert_eq!(status, 200);
    let upstream = rec.request("GET /b1 ", false).await;
    let (reqs, _) = requests_of(&upstream);
    assert_eq!(header_values(&head_and_body(&reqs[0]).0, "cookie"), ["a=1; b=2"]);
}

/// An HTTP/2 `:authority` is held to the same rule as an HTTP/1.1 `Host` (nginx answers
/// `a..b` with 400 on both): refused, never forwarded.
#[tokio::test]
async fn b_h2_authority_with_an_empty_label_is_refused() {
    let rec = Recorder::start(script(|_, _, _: &[u8]| Answer::Send(OK))).await;
    let gw = Gateway::start(&simple_config(rec.addr, "")).await;
    let h2 = h2_connect(gw.https).await;
    let send = h2.send.clone();
    let bad = http::Request::builder()
        .method("GET")
        .uri(format!("https://a..b:{}/bad", gw.https.port()))
        .body(())
        .expect("request");
    let (status, _) = h2_send(&send, bad, &[]).await.expect("h2 response");
    assert_eq!(status, 400);
    let (status, _) = h2_send(&send, h2_request(gw.https, "GET", "/good", &[]), &[])
        .await
        .expect("h2 response");
    assert_eq!(status, 200);
    rec.request("GET /good ", false).await;
    let seen: Vec<String> = rec
        .conns()
        .iter()
        .map(|c| String::from_utf8_lossy(&c.bytes).into_owned())
        .collect();
    assert!(
        seen.iter().all(|c| !c.contains("/bad")),
        "the bad request is never forwarded: {seen:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// C. HTTP/2 request bodies on an HTTP/1.1 upstream (cloudflare/pingora#935)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn c_h2_bodies_ending_with_an_empty_data_frame_end_exactly_once_upstream() {
    let rec = Recorder::start(script(|_, _, _: &[u8]| Answer::Send(OK))).await;
    let gw = Gateway::start(&simple_config(rec.addr, "")).await;
    let h2 = h2_connect(gw.https).await;
    let send = h2.send.clone();

    // Data, then an empty DATA frame with END_STREAM.
    let req = h2_request(gw.https, "POST", "/c1", &[]);
    let (status, _) = h2_send(&send, req, &[b"hello", b""]).await.expect("c1");
    assert_eq!(status, 200);
    // An empty DATA frame with END_STREAM as the only one.
    let req = h2_request(gw.https, "POST", "/c2", &[]);
    let (status, _) = h2_send(&send, req, &[b""]).await.expect("c2");
    assert_eq!(status, 200);
    // A request after them, on the pooled upstream connection if it was reused.
    let req = h2_request(gw.https, "GET", "/c3", &[]);
    let (status, _) = h2_send(&send, req, &[]).await.expect("c3");
    assert_eq!(status, 200);

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
    let rec = Recorder::start(script(|_, _, _: &[u8]| Answer::Send(OK))).await;
    let gw = Gateway::start(&simple_config(rec.addr, "")).await;
    let h2 = h2_connect(gw.https).await;
    let send = h2.send.clone();

    // More DATA than declared, in one frame; less, then END_STREAM. The h2 crate resets the
    // stream without delivering the offending frame.
    const OVER: &[&[u8]] = &[b"hello world"];
    const UNDER: &[&[u8]] = &[b"hello"];
    for (path, cl, frames) in [("/over", "5", OVER), ("/under", "10", UNDER)] {
        let req = h2_request(gw.https, "POST", path, &[("content-length", cl)]);
        match h2_send(&send, req, frames).await {
            Err(_) => {}
            Ok((status, _)) => assert!(status >= 400, "{path}: status {status}"),
        }
    }
    // Split: the declared 5 bytes arrive, then more: only those 5 may be forwarded.
    let req = h2_request(gw.https, "POST", "/over-split", &[("content-length", "5")]);
    let _ = h2_send(&send, req, &[b"hello", b" world"]).await;

    // The connection still serves requests.
    let req = h2_request(gw.https, "GET", "/after", &[]);
    let (status, _) = h2_send(&send, req, &[]).await.expect("after");
    assert_eq!(status, 200);

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

// ---------------------------------------------------------------------------------------------
// D. HTTP/1.0 clients never get Transfer-Encoding: chunked (RFC 9112 section 6.1)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn d_http10_clients_get_close_delimited_bodies_never_chunked() {
    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\
        Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    const CLOSE: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nhello world";
    let rec = Recorder::start(script(|_, _, req: &[u8]| match path_of(req).as_str() {
        "/close" => Answer::SendAndClose(CLOSE),
        _ => Answer::Send(CHUNKED),
    }))
    .await;
    let gw = Gateway::start(&simple_config(rec.addr, "")).await;

    for path in ["/chunked", "/close"] {
        let mut c = h1_connect(&gw).await;
        let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        let r = exchange(&mut c, request.as_bytes()).await;
        assert_eq!(r.status, 200, "{}", text(&r.raw));
        assert!(
            header_values(&r.head, "transfer-encoding").is_empty(),
            "{path}: {}",
            r.head
        );
        assert!(
            header_values(&r.head, "content-length").is_empty(),
            "{path}: {}",
            r.head
        );
        assert_eq!(
            header_values(&r.head, "connection"),
            ["close"],
            "{path}: {}",
            r.head
        );
        assert!(r.complete);
        assert_eq!(
            text(&r.body),
            "hello world",
            "{path}: read to the end of the connection"
        );
    }

    // HTTP/1.1 clients still get chunked.
    let mut c = h1_connect(&gw).await;
    let r = exchange(
        &mut c,
        b"GET /chunked HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(is_chunked(&r.head), "{}", r.head);
    assert!(r.complete);
    assert_eq!(text(&r.body), "hello world");
}

// ---------------------------------------------------------------------------------------------
// E. Upstream responses with unsafe framing: 502, connection dropped, no body relayed
// ---------------------------------------------------------------------------------------------

const E_CASES: &[(&str, &[u8])] = &[
    (
        "/te-gzip",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    ),
    (
        "/te-unknown",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: x-custom\r\n\r\nhello",
    ),
    (
        "/te-chunked-gzip",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nhello",
    ),
    (
        "/te-gzip-chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "/te-twice",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "/te-and-cl",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "/cl-conflict",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ),
    (
        "/cl-invalid",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello",
    ),
    (
        "/cl-negative",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello",
    ),
    (
        "/status-code",
        b"HTTP/1.1 2OO OK\r\nContent-Length: 5\r\n\r\nhello",
    ),
    (
        "/status-version",
        b"HTTP/9.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    ),
];

/// A chunked response body with a bare LF: the same strict decoder as for requests.
const BAD_CHUNK: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n";

#[tokio::test]
async fn e_unsafe_upstream_framing_is_a_502_and_the_connection_is_dropped() {
    let rec = Recorder::start(script(|_, _, req: &[u8]| {
        let path = path_of(req);
        let response = E_CASES
            .iter()
            .find(|(p, _)| *p == path)
            .map_or(BAD_CHUNK, |(_, r)| *r);
        // Kept open: the gateway has to drop the connection itself.
        Answer::Send(response)
    }))
    .await;
    let gw = Gateway::start(&simple_config(rec.addr, "")).await;
    let protocol = "gateway_upstream_errors_total{kind=\"protocol\",upstream=\"echo\"}";

    for (path, _) in E_CASES {
        let mut c = h1_connect(&gw).await;
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let r = exchange(&mut c, request.as_bytes()).await;
        assert_eq!(r.status, 502, "{path}: {}", text(&r.raw));
        assert!(find(&r.raw, b"hello").is_none(), "{path}: {}", text(&r.raw));
        // Closed by the gateway, not pooled.
        rec.request(&format!("GET {path} "), true).await;
    }
    // Each counted as an upstream protocol error (kind="protocol"), not as "response".
    assert_eq!(metric(&gw, protocol).await, E_CASES.len() as f64);

    // A response body that breaks the chunked framing: the head may already be relayed, but
    // no body byte is, the response stays incomplete and the upstream connection is dropped.
    let mut c = h1_connect(&gw).await;
    let r = exchange(&mut c, b"GET /bad-chunk HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(r.status == 502 || !r.complete, "{}", text(&r.raw));
    assert!(find(&r.raw, b"hello").is_none(), "{}", text(&r.raw));
    rec.request("GET /bad-chunk ", true).await;
    assert_eq!(metric(&gw, protocol).await, E_CASES.len() as f64 + 1.0);
}

// ---------------------------------------------------------------------------------------------
// F. A pooled connection the upstream just closed (Node.js: after 5 s idle)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn f_a_stale_pooled_connection_is_retried_once_for_get_never_for_post() {
    // The first connection answers its first request, then drops the next one unanswered, as
    // a server closing an idle keep-alive connection just as the request arrives. Any POST is
    // dropped the same way.
    let rec = Recorder::start(script(|conn, n, req: &[u8]| {
        if req.starts_with(b"POST ") || (conn == 0 && n == 1) {
            Answer::Hangup
        } else {
            Answer::Send(OK)
        }
    }))
    .await;
    // One thread: one upstream pool, so the second request takes the pooled connection.
    let config = simple_config(rec.addr, "").replace("threads = 2", "threads = 1");
    let gw = Gateway::start(&config).await;
    let retries = "gateway_upstream_retries_total{upstream=\"echo\"}";

    let mut c = h1_connect(&gw).await;
    let r = exchange(&mut c, b"GET /warm HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(r.status, 200, "{}", text(&r.raw));
    let r = exchange(&mut c, b"GET /again HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(r.status, 200, "retried on a new connection: {}", text(&r.raw));
    assert_eq!(text(&r.body), "ok");
    let conns = rec.conns();
    assert_eq!(conns.len(), 2, "one retry, on a new connection");
    let (first, _) = requests_of(&conns[0].bytes);
    let paths = |reqs: &[Vec<u8>]| reqs.iter().map(|r| path_of(r)).collect::<Vec<_>>();
    assert_eq!(paths(&first[..]), ["/warm", "/again"]);
    let (second, _) = requests_of(&conns[1].bytes);
    assert_eq!(paths(&second[..]), ["/again"]);
    assert_eq!(metric(&gw, retries).await, 1.0);

    // A POST on the (now pooled) second connection meets the same close: never sent twice.
    let r = exchange(
        &mut c,
        b"POST /form HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert_eq!(r.status, 502, "{}", text(&r.raw));
    assert_eq!(rec.count("POST /form "), 1, "the POST reached the upstream once");
    assert_eq!(metric(&gw, retries).await, 1.0, "no retry for a POST");
}
