//! The connection-level front of the HTTPS listener.
//!
//! Pingora reads request headers with a per-read timeout and a 1 MiB cap, so a client that
//! trickles one byte at a time (slowloris) is never cut off and oversized headers get 400.
//! For HTTP/1.1 this layer reads the request head itself under a total deadline (408) and
//! the configured size and count limits (431), then hands the bytes to Pingora's HTTP
//! session as an already-read prefix. HTTP/2 goes straight to Pingora.

use crate::framing;
use crate::proxy::Gateway;
use crate::state::Shared;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ServerApp};
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
    /// A complete head, then whatever else was read (body bytes, pipelined requests).
    Ready(BytesMut),
    Closed,
    /// Answered with this status and closed: 408 (deadline), 431 (size or count), 400
    /// (unparseable, ambiguous framing, bad `Host`), 414 (target too long), 501. With the
    /// page format the head asked for, as far as it arrived (error pages).
    Refused(u16, crate::error_page::Format),
}

/// Counts a connection as open for as long as it lives.
struct OpenGuard(prometheus::IntGauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the head reader enforces, from `[limits]`.
struct HeadLimits {
    /// Wait for the first byte (keepalive idleness: closed quietly).
    idle: Duration,
    /// The whole head once it started (`header_read_timeout`): 408.
    deadline: Duration,
    max_bytes: usize,
    max_lines: usize,
    max_uri: usize,
}

impl HeadLimits {
    fn new(limits: &gateway_config::Limits, first: bool) -> Self {
        HeadLimits {
            idle: if first {
                limits.header_read_timeout
            } else {
                limits.keepalive_timeout
            },
            deadline: limits.header_read_timeout,
            max_bytes: limits.max_header_bytes,
            max_lines: limits.max_header_count,
            max_uri: limits.max_uri,
        }
    }
}

// gateway error pages: a refusal carries the format of its page (the head's `Accept`).
fn refused(status: u16, head: &[u8]) -> Head {
    Head::Refused(status, crate::error_page::Format::of_raw_head(head))
}

/// Reads one request head, starting with `carry` (bytes of a pipelined request already
/// read with the previous one), and checks it (`framing::check_head`).
async fn read_head(
    stream: &mut Stream,
    carry: BytesMut,
    limits: &HeadLimits,
    shutdown: &mut ShutdownWatch,
    linger: Duration,
) -> Head {
    // Small: an idle keepalive connection holds it while it waits (case 6 of the benchmark);
    // the buffer grows for longer heads, which rustls has already decrypted in memory.
    let mut buf = if carry.is_empty() {
        BytesMut::with_capacity(256)
    } else {
        carry
    };
    if buf.is_empty() {
        // Waiting for the first byte is keepalive idleness, not a slow request: close
        // quietly. On shutdown an idle connection lingers a little: a client about to reuse
        // it gets one more answer, with `Connection: close`, instead of racing a closing socket.
        let stopping = async {
            if !*shutdown.borrow() {
                let _ = shutdown.changed().await;
            }
            tokio::time::sleep(linger).await;
        };
        let first = tokio::select! {
            // Pingora's shared coarse timers: a tokio timer per keepalive wait woke the
            // thread's own event loop through its eventfd on almost every request.
            r = fast_timeout(limits.idle, stream.read_buf(&mut buf)) => r,
            _ = stopping => return Head::Closed,
        };
        match first {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Head::Closed,
        }
    }
    let until = Instant::now() + limits.deadline;
    let mut scanned = 0;
    let mut lines = 0;
    loop {
        if let Some(end) = framing::head_end(&buf, scanned, &mut lines) {
            // Request line + headers + blank line.
            if end > limits.max_bytes || lines > limits.max_lines + 2 {
                return refused(431, &buf);
            }
            if let Err(refusal) = framing::check_head(&buf[..end], limits.max_uri) {
                return refused(refusal.status(), &buf);
            }
            if let Some(head) = framing::absolute_form_host(&buf[..end]) {
                let mut fixed = BytesMut::with_capacity(head.len() + buf.len() - end);
                fixed.extend_from_slice(&head);
                fixed.extend_from_slice(&buf[end..]);
                return Head::Ready(fixed);
            }
            return Head::Ready(buf);
        }
        scanned = buf.len();
        if buf.len() > limits.max_bytes || lines > limits.max_lines + 2 {
            // A request line alone over the limit is a long URI, as nginx tells it.
            let first_line = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
            let status = if lines <= 1 && first_line > limits.max_uri {
                414
            } else {
                431
            };
            return refused(status, &buf);
        }
        match timeout_at(until, stream.read_buf(&mut buf)).await {
            Err(_) => return refused(408, &buf),
            Ok(Ok(0)) | Ok(Err(_)) => return Head::Closed,
            Ok(Ok(_)) => {}
        }
    }
}

/// Answers `status` with its error page (`format`), the security headers and a request id,
/// and closes: for heads refused before Pingora parses them, on any listener.
async fn reject(shared: &Shared, mut stream: Stream, status: u16, format: crate::error_page::Format) {
    // gateway error pages: the page, the security headers and `X-Request-Id` (respond.rs).
    let response = crate::respond::raw_error(status, format, &shared.snapshot.load());
    let _ = timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(&response).await;
        let _ = stream.flush().await;
        let _ = stream.shutdown().await;
    })
    .await;
    shared
        .metrics
        .requests
        .with_label_values(&["none", "OTHER", crate::metrics::status_class(status)])
        .inc();
}

/// Serves HTTP/1.x on `stream` with `app`, one request at a time: each head is read and
/// checked here under the limits (pipelined requests are taken from the bytes Pingora read
/// past the previous request), then handed to Pingora's session as an already-read prefix.
async fn serve_http1<A>(
    app: &Arc<A>,
    shared: &Shared,
    stream: Stream,
    shutdown: &ShutdownWatch,
) -> Option<Stream>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    let mut shutdown_rx = shutdown.clone();
    let mut stream = stream;
    let mut persistent: Option<HttpPersistentSettings> = None;
    let mut carry = BytesMut::new();
    let mut first = true;
    loop {
        let snap = shared.snapshot.load();
        let limits = snap.config.limits.clone();
        let grace = snap.config.server.grace_period;
        drop(snap);
        let head_limits = HeadLimits::new(&limits, first);
        let head = read_head(&mut stream, carry, &head_limits, &mut shutdown_rx, grace / 2).await;
        let prefix = match head {
            Head::Ready(b) => b,
            Head::Closed => return None,
            Head::Refused(status, format) => {
                reject(shared, stream, status, format).await;
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
        // Requests sent before their predecessor's answer (RFC 9112 §9.3.2) are answered in
        // order: Pingora hands back the bytes it read past this request.
        session.set_pipelining_enabled(true);
        // nginx `send_timeout`: a client that stops reading the response is closed.
        session.set_write_timeout(Some(limits.send_timeout));
        session.set_pipelined_prefix(prefix);
        // Boxed: the proxy's state machine is large, and an idle keepalive connection should
        // not carry it while it waits for its next request.
        let reused = Box::pin(HttpServerApp::process_new_http(app, session, shutdown)).await?;
        let (s, mut p) = reused.consume();
        carry = p
            .as_mut()
            .and_then(HttpPersistentSettings::take_pipelined_prefix)
            .unwrap_or_default();
        stream = s;
        persistent = p;
    }
}

/// A plain HTTP/1.1 listener (the `:80` redirects, the metrics endpoint) behind the same
/// head reader as `:443`: a total header deadline (408), size limits (431) and the framing
/// checks, instead of Pingora's per-read timeout.
pub struct Guarded<A> {
    pub app: Arc<A>,
    pub shared: Arc<Shared>,
}

#[async_trait]
impl<A> ServerApp for Guarded<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        serve_http1(&self.app, &self.shared, stream, shutdown).await
    }

    async fn cleanup(&self) {}
}

impl Edge {
    pub fn new(conf: Arc<ServerConf>, shared: Arc<Shared>) -> Self {
        // gateway error pages: the refusals Pingora answers itself (HTTP/2 `:authority`
        // mismatch, CONNECT) get the gateway's pages (vendor/pingora-core PATCHED.md).
        crate::respond::install_pingora_pages(&shared);
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
            let mut proxy = pingora_proxy::http_proxy(&self.conf, gateway);
            // An HTTP/2 connection without streams is closed after `keepalive_timeout`, like
            // an idle HTTP/1.1 one (nginx's `keepalive_timeout` covers both). Read when the
            // thread's proxy is built, i.e. at start.
            let mut options = HttpServerOptions::default();
            options.h2_idle_timeout = Some(self.shared.snapshot.load().config.limits.keepalive_timeout);
            proxy.server_options = Some(options);
            Arc::new(proxy)
        })
    }

    async fn serve(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let m = &self.shared.metrics;
        m.open_connections.inc();
        let _open = OpenGuard(m.open_connections.clone());
        if let Some(d) = stream.get_ssl_digest() {
            let (version, group) = crate::tls_names::labels(&d);
            m.tls_handshakes
                .with_label_values(&[version.as_ref(), group])
                .inc();
        }
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(self.proxy(), stream, shutdown).await;
        }
        serve_http1(self.proxy(), &self.shared, stream, shutdown).await
    }
}

#[async_trait]
impl ServerApp for Edge {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        self.serve(stream, shutdown).await
    }

    async fn cleanup(&self) {
        for proxy in self.proxies.iter() {
            ServerApp::cleanup(&**proxy).await;
        }
    }
}
