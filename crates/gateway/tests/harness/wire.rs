//! Raw-wire helpers for tests that look at exact bytes: a deadline for every await, an
//! HTTP/2 client over TLS, and chunked bodies decoded as far as they have arrived.

use bytes::Bytes;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
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

/// The values of header `name` in a head (status or request line first).
pub fn header_values<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
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

impl H2 {
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
