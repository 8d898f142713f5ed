//! The connection-level front of the HTTPS listener.
//!
//! Pingora reads request headers with a per-read timeout and a 1 MiB cap, so a client that
//! trickles one byte at a time (slowloris) is never cut off and oversized headers get 400.
//! For HTTP/1.1 this layer reads the request head itself under a total deadline (408) and
//! the configured size and count limits (431), then hands the bytes to Pingora's HTTP
//! session as an already-read prefix. HTTP/2 goes straight to Pingora.

use crate::proxy::Gateway;
use crate::state::Shared;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use pingora_timeout::fast_timeout::fast_timeout;
use std::sync::Arc;
use std::time::Duration;
use thread_local::ThreadLocal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, timeout_at, Instant};

pub struct Edge {
    /// One proxy, and so one upstream connection pool, per worker thread, like an nginx
    /// worker's keepalive cache: a connection is released and reused on the same thread, so
    /// reuse never wakes another thread (measured in benches/RESULTS.md).
    proxies: ThreadLocal<Arc<HttpProxy<Gateway>>>,
    conf: Arc<ServerConf>,
    shared: Arc<Shared>,
}

enum Head {
    Ready(BytesMut),
    Closed,
    TooLarge,
    TimedOut,
    /// Unparseable, or framed ambiguously: 400.
    Bad,
}

/// A head that does not parse, or Content-Length with Transfer-Encoding, or conflicting
/// Content-Length values (request smuggling shapes that nginx refuses, Pingora accepts).
/// Refused here so that the 400 carries the security headers like every other response.
fn bad_head(head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        return true;
    }
    let mut cl: Option<&[u8]> = None;
    let mut te = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            if cl.is_some_and(|v| v != h.value) {
                return true;
            }
            cl = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
        }
    }
    cl.is_some() && te
}

/// Counts a connection as open for as long as it lives.
struct OpenGuard(prometheus::IntGauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Where the head ends (after the blank line) and how many header lines it has, scanning
/// from `from` so a trickled request is not rescanned from the start.
fn head_end(buf: &[u8], from: usize, lines: &mut usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let mut i = start;
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        if nl >= from {
            *lines += 1;
        }
        let blank = (nl >= 1 && buf[nl - 1] == b'\n') || (nl >= 3 && &buf[nl - 3..nl] == b"\r\n\r");
        if blank && nl >= 1 {
            return Some(nl + 1);
        }
        i = nl + 1;
    }
    None
}

async fn read_head(
    stream: &mut Stream,
    idle: Duration,
    deadline: Duration,
    max_bytes: usize,
    max_lines: usize,
    shutdown: &mut ShutdownWatch,
    linger: Duration,
) -> Head {
    // Small: an idle keepalive connection holds it while it waits (case 6 of the benchmark);
    // the buffer grows for longer heads, which rustls has already decrypted in memory.
    let mut buf = BytesMut::with_capacity(256);
    // Waiting for the first byte is keepalive idleness, not a slow request: close quietly.
    // On shutdown an idle connection lingers a little: a client about to reuse it gets one
    // more answer, with `Connection: close`, instead of racing a closing socket.
    let stopping = async {
        if !*shutdown.borrow() {
            let _ = shutdown.changed().await;
        }
        tokio::time::sleep(linger).await;
    };
    let first = tokio::select! {
        // Pingora's shared coarse timers: a tokio timer per keepalive wait woke the
        // thread's own event loop through its eventfd on almost every request.
        r = fast_timeout(idle, stream.read_buf(&mut buf)) => r,
        _ = stopping => return Head::Closed,
    };
    match first {
        Ok(Ok(n)) if n > 0 => {}
        _ => return Head::Closed,
    }
    let until = Instant::now() + deadline;
    let mut scanned = 0;
    let mut lines = 0;
    loop {
        if let Some(end) = head_end(&buf, scanned, &mut lines) {
            // Request line + headers + blank line.
            if end > max_bytes || lines > max_lines + 2 {
                return Head::TooLarge;
            }
            if bad_head(&buf[..end]) {
                return Head::Bad;
            }
            return Head::Ready(buf);
        }
        scanned = buf.len();
        if buf.len() > max_bytes || lines > max_lines + 2 {
            return Head::TooLarge;
        }
        match timeout_at(until, stream.read_buf(&mut buf)).await {
            Err(_) => return Head::TimedOut,
            Ok(Ok(0)) | Ok(Err(_)) => return Head::Closed,
            Ok(Ok(_)) => {}
        }
    }
}

impl Edge {
    pub fn new(conf: Arc<ServerConf>, shared: Arc<Shared>) -> Self {
        Edge {
            proxies: ThreadLocal::new(),
            conf,
            shared,
        }
    }

    fn proxy(&self) -> &Arc<HttpProxy<Gateway>> {
        self.proxies.get_or(|| {
            let gateway = Gateway {
                shared: self.shared.clone(),
            };
            Arc::new(pingora_proxy::http_proxy(&self.conf, gateway))
        })
    }

    async fn serve(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let m = &self.shared.metrics;
        m.open_connections.inc();
        let _open = OpenGuard(m.open_connections.clone());
        if stream.get_ssl_digest().is_some() {
            m.tls_handshakes.inc();
        }
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(self.proxy(), stream, shutdown).await;
        }
        let mut shutdown_rx = shutdown.clone();
        let mut stream = stream;
        let mut persistent: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            let snap = self.shared.snapshot.load();
            let limits = snap.config.limits.clone();
            let grace = snap.config.server.grace_period;
            drop(snap);
            let idle = if first {
                limits.header_read_timeout
            } else {
                limits.keepalive_timeout
            };
            let head = read_head(
                &mut stream,
                idle,
                limits.header_read_timeout,
                limits.max_header_bytes,
                limits.max_header_count,
                &mut shutdown_rx,
                grace / 2,
            )
            .await;
            let prefix = match head {
                Head::Ready(b) => b,
                Head::Closed => return None,
                Head::TooLarge => {
                    self.reject(stream, 431).await;
                    return None;
                }
                Head::TimedOut => {
                    self.reject(stream, 408).await;
                    return None;
                }
                Head::Bad => {
                    self.reject(stream, 400).await;
                    return None;
                }
            };
            first = false;
            let mut session = ServerSession::new_http1(stream);
            match persistent.take() {
                Some(p) => p.apply_to_session(&mut session),
                None => session.set_keepalive(Some(limits.keepalive_timeout.as_secs().max(1))),
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            session.set_pipelined_prefix(prefix);
            // Boxed: the proxy's state machine is large, and an idle keepalive connection should
            // not carry it while it waits for its next request.
            let reused = Box::pin(HttpServerApp::process_new_http(self.proxy(), session, shutdown)).await?;
            let (s, p) = reused.consume();
            stream = s;
            persistent = p;
        }
    }

    async fn reject(&self, mut stream: Stream, status: u16) {
        let snap = self.shared.snapshot.load();
        let reason = crate::respond::reason(status);
        let body = format!("{status} {reason}\n");
        let mut head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (n, v) in &snap.security_headers {
            head.push_str(&format!("{}: {}\r\n", n, v.to_str().unwrap_or_default()));
        }
        head.push_str("\r\n");
        head.push_str(&body);
        let _ = timeout(Duration::from_secs(5), async {
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.flush().await;
            let _ = stream.shutdown().await;
        })
        .await;
        let m = &self.shared.metrics;
        m.requests
            .with_label_values(&["none", "OTHER", crate::metrics::status_class(status)])
            .inc();
    }
}

#[async_trait]
impl ServerApp for Edge {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // Tasks this connection spawns (idle upstream watchers) stay on its thread.
        pingora_runtime::stay_on_this_thread(self.serve(stream, shutdown)).await
    }

    async fn cleanup(&self) {
        for proxy in self.proxies.iter() {
            ServerApp::cleanup(&**proxy).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::head_end;

    #[test]
    fn finds_the_end_of_a_head_read_in_pieces() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\nbody";
        let mut lines = 0;
        assert_eq!(head_end(req, 0, &mut lines), Some(req.len() - 4));
        assert_eq!(lines, 4);
        let mut lines = 0;
        let mut found = None;
        for n in 1..=req.len() {
            if let Some(e) = head_end(&req[..n], n - 1, &mut lines) {
                found = Some(e);
                break;
            }
        }
        assert_eq!(found, Some(req.len() - 4));
        assert_eq!(lines, 4);
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\n", 0, &mut 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0, &mut 0), None);
    }

    #[test]
    fn smuggling_shapes() {
        use super::bad_head;
        assert!(bad_head(
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(bad_head(
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
        ));
        assert!(!bad_head(
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"
        ));
        assert!(!bad_head(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
    }
}
