//! Compressed streams: a compressible response without Content-Length, such as the NDJSON
//! token stream of Ollama behind Open WebUI (`application/x-ndjson`, chunked), is compressed
//! with a flush after every upstream chunk (`Encoder::encode_flushed` in
//! crates/proxy/src/compress.rs), so each line reaches the client when the upstream sends it,
//! over HTTP/1.1 and HTTP/2. Checked against the upstream's own progress, not a clock: the
//! first line must decode at the client before the upstream has sent its third.

mod harness;

use harness::gateway::simple_config;
use harness::wire::{
    dechunk_prefix, find, h2_connect, h2_request, header_values, read_head, read_more, within,
};
use harness::{client, Gateway};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
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

/// Reads more bytes; false at the end of the connection.
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
    let (mut tls, _) = within("the TLS connection", client::tls(gw.https, "localhost")).await;
    let request = b"GET /api/generate HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: gzip\r\n\r\n";
    within("sending the request", tls.write_all(request))
        .await
        .expect("write");

    let mut raw = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&raw, b"\r\n\r\n") {
            break i + 4;
        }
        assert!(read_more(&mut tls, &mut raw).await, "no response head");
    };
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
