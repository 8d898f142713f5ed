//! Raw-wire helpers for tests that look at exact bytes: a deadline for every await, raw
//! HTTP/1.1 and HTTP/2 clients over TLS, messages split and chunked bodies decoded.

use bytes::Bytes;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Awaits `f` for at most 10 s; panics naming `what` after that.
pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(10), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after 10 s: {what}"),
    }
}

/// Reads what `s` has next into `buf`; false once it is closed, failed or silent for 10 s.
pub async fn read_more<S: tokio::io::AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> bool {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 16 * 1024];
    match within("bytes from the gateway", s.read(&mut chunk)).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads from `conn` into `buf` until it holds a whole HTTP head; returns the index just past
/// its blank line, or `None` if the connection ends or fails first.
pub async fn read_head<R: tokio::io::AsyncRead + Unpin>(conn: &mut R, buf: &mut Vec<u8>) -> Option<usize> {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut chunk = [0u8; 8192];
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads from `s` into `buf` until it holds a whole head (10 s at most per read); the index
/// just past its blank line. Panics when the connection ends first.
pub async fn head_in<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> usize {
    loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            return i + 4;
        }
        if !read_more(s, buf).await {
            panic!("the connection ended before a head: {:?}", text(buf));
        }
    }
}

/// The next head on the connection, taken out of `buf`.
pub async fn next_head<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> String {
    let end = head_in(s, buf).await;
    text(&buf.drain(..end).collect::<Vec<u8>>())
}

/// Writes all of `bytes` to `s` within 10 s.
pub async fn write<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) {
    within("writing", s.write_all(bytes)).await.expect("write");
}

pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to the gateway's HTTPS listener `addr` with ALPN http/1.1.
pub async fn h1_connect(addr: SocketAddr) -> Tls {
    let (tls, _) = within("the TLS connection", super::client::tls(addr, "localhost")).await;
    tls
}

/// One response as the client read it: status, head, body (de-chunked when chunked), whether
/// the body was complete by its framing (or the connection ended, for close-delimited ones),
/// and every byte read.
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub complete: bool,
    pub body: Vec<u8>,
    pub raw: Vec<u8>,
}

/// Reads one response.
pub async fn read_reply<S: AsyncRead + Unpin>(s: &mut S) -> Reply {
    let mut raw = Vec::new();
    let head_end = head_in(s, &mut raw).await;
    let head = text(&raw[..head_end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or(0);
    let (body, complete) = if is_chunked(&head) {
        loop {
            if let Some((body, _)) = dechunk(&raw[head_end..]) {
                break (body, true);
            }
            if !read_more(s, &mut raw).await {
                break (raw[head_end..].to_vec(), false);
            }
        }
    } else if let Some(cl) = content_length(&head) {
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
        complete,
        body,
        raw,
    }
}

/// Sends `request` and reads one response.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, request: &[u8]) -> Reply {
    within("sending the request", async {
        s.write_all(request).await.expect("write");
        s.flush().await.expect("flush");
    })
    .await;
    read_reply(s).await
}

/// The values of header `name` in a head (status or request line first).
pub fn header_values<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// The Content-Length of a head, if it has one that is a number.
pub fn content_length(head: &str) -> Option<usize> {
    header_values(head, "content-length")
        .first()
        .and_then(|v| v.parse::<usize>().ok())
}

/// Whether a head says `Transfer-Encoding: chunked`.
pub fn is_chunked(head: &str) -> bool {
    header_values(head, "transfer-encoding")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("chunked"))
}

/// Bytes as text (invalid UTF-8 replaced).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// How many times `needle` occurs in `hay` (overlapping ones too).
pub fn occurrences(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// A message split after its blank line.
pub fn head_and_body(msg: &[u8]) -> (String, Vec<u8>) {
    let end = find(msg, b"\r\n\r\n").map_or(msg.len(), |i| i + 4);
    (text(&msg[..end]), msg[end..].to_vec())
}

/// The request-target of a request.
pub fn path_of(request: &[u8]) -> String {
    text(request)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

/// Decodes a chunked body at the start of `buf` (as the gateway writes it): the payload and
/// how many bytes it took, or `None` while incomplete or malformed.
pub fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
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

/// Where the first complete request in `buf` ends: its head, then a body framed by
/// Content-Length or chunked encoding. `None` while incomplete.
pub fn request_end(buf: &[u8]) -> Option<usize> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let head = text(&buf[..head_end]);
    if is_chunked(&head) {
        return Some(head_end + dechunk(&buf[head_end..])?.1);
    }
    let cl = content_length(&head).unwrap_or(0);
    (buf.len() >= head_end + cl).then_some(head_end + cl)
}

/// The complete requests at the start of `bytes`, and the bytes left over.
pub fn requests_of(bytes: &[u8]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut rest = bytes;
    let mut out = Vec::new();
    while let Some(end) = request_end(rest) {
        out.push(rest[..end].to_vec());
        rest = &rest[end..];
    }
    (out, rest.to_vec())
}

/// A chunked body (RFC 9112 section 7.1) decoded as far as it has arrived: the payload of
/// the complete chunks at the start of `buf`, and whether the last chunk was among them.
/// Stops at the first incomplete or malformed chunk.
pub fn dechunk_prefix(buf: &[u8]) -> (Vec<u8>, bool) {
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        let Some(line_len) = find(&buf[pos..], b"\r\n") else {
            return (out, false);
        };
        let line = String::from_utf8_lossy(&buf[pos..pos + line_len]).into_owned();
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16) else {
            return (out, false);
        };
        let data = pos + line_len + 2;
        if size == 0 {
            return (out, true);
        }
        let Some(end) = data.checked_add(size) else {
            return (out, false);
        };
        if buf.len() < end + 2 {
            return (out, false);
        }
        out.extend_from_slice(&buf[data..end]);
        pos = end + 2;
    }
}

/// An HTTP/2 connection to the gateway (TLS, ALPN h2); the connection task is aborted on drop.
pub struct H2 {
    pub send: h2::client::SendRequest<Bytes>,
    task: tokio::task::JoinHandle<()>,
}

/// What an HTTP/2 stream answered: its status, header fields and body.
pub struct H2Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl H2Reply {
    pub fn text(&self) -> String {
        text(&self.body)
    }
}

impl H2 {
    /// Sends `req` with `frames` as DATA frames, exactly as given (an empty one too), the last
    /// with END_STREAM; no frames: END_STREAM on HEADERS. The answer, or the stream's error.
    pub async fn request(
        &self,
        req: http::Request<()>,
        frames: &[&'static [u8]],
    ) -> Result<H2Reply, h2::Error> {
        let mut ready = within("the h2 connection to be ready", self.send.clone().ready()).await?;
        let (response, mut stream) = ready.send_request(req, frames.is_empty())?;
        for (i, &f) in frames.iter().enumerate() {
            stream.send_data(Bytes::from_static(f), i + 1 == frames.len())?;
        }
        let response = within("the h2 response", response).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = response.into_body();
        let mut out = Vec::new();
        while let Some(data) = within("the h2 response body", body.data()).await {
            let data = data?;
            let _ = body.flow_control().release_capacity(data.len());
            out.extend_from_slice(&data);
        }
        Ok(H2Reply {
            status,
            headers,
            body: out,
        })
    }

    /// Waits up to `limit` for the connection to end (the gateway closing it); true if it did.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, &mut self.task).await.is_ok()
    }
}

impl Drop for H2 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects to `addr` with TLS (any certificate accepted, SNI `localhost`) and HTTP/2.
pub async fn h2_connect(addr: SocketAddr) -> H2 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cfg = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(super::client::Capture::default()))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = within("connecting", TcpStream::connect(addr))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost".to_owned()).expect("name");
    let tls = within("the TLS handshake", connector.connect(name, tcp))
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
    let (send, conn) = within("the h2 handshake", h2::client::handshake(tls))
        .await
        .expect("h2 handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    H2 { send, task }
}

/// An HTTP/2 request for `path` on the gateway at `addr`.
pub fn h2_request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> http::Request<()> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("https://localhost:{}{path}", addr.port()));
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).expect("request")
}
