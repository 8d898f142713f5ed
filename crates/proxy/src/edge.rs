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

/// How long a keep-alive connection waits for its next request before its empty TLS
/// buffers are freed (rustls' 4 KiB receive buffer; OpenSSL's `SSL_MODE_RELEASE_BUFFERS`,
/// which nginx sets, frees it at every empty read). Far above the gap between the requests
/// of a busy connection, which so keep their buffer (benches/RESULTS.md, cases 1 and 6).
pub const IDLE_RELEASE: Duration = Duration::from_millis(100);

/// Waits up to `idle` for the first bytes of the next request into `buf`; `None` on timeout
/// or a read error. After [`IDLE_RELEASE`] without a byte the stream's empty TLS buffers
/// are freed (`Ssl::release_idle_buffers`, vendor/pingora-core patch 0022), once.
///
/// Pingora's shared coarse timers (10 ms resolution): a tokio timer per keep-alive wait
/// woke the thread's own event loop through its eventfd on almost every request. A read
/// given up at the first timer loses nothing: the TLS stream keeps any partial record.
pub async fn wait_first_byte(stream: &mut Stream, buf: &mut BytesMut, idle: Duration) -> Option<usize> {
    let first = IDLE_RELEASE.min(idle);
    if let Ok(r) = fast_timeout(first, stream.read_buf(buf)).await {
        return r.ok();
    }
    stream.release_idle_buffers();
    match fast_timeout(idle - first, stream.read_buf(buf)).await {
        Ok(r) => r.ok(),
        Err(_) => None,
    }
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
            r = wait_first_byte(stream, &mut buf, limits.idle) => r,
            _ = stopping => return Head::Closed,
        };
        match first {
            Some(n) if n > 0 => {}
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

#[cfg(test)]
mod tests {
    //! The keep-alive wait over a real TLS connection on loopback (Pingora's acceptor, a
    //! tokio-rustls client): an idle connection's TLS buffers are freed after
    //! `IDLE_RELEASE`, a busy one keeps them.

    use super::*;
    use pingora_core::listeners::tls::Acceptor;
    use pingora_core::protocols::l4::stream::Stream as L4Stream;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

    /// A TLS server stream (as the edge gets it) and the client end, handshake done.
    async fn pair() -> (Stream, tokio_rustls::client::TlsStream<tokio::net::TcpStream>) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = Acceptor::from_server_config(Arc::new(server));
        let accept = async {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = acceptor.tls_handshake(L4Stream::from(tcp)).await.unwrap();
            Box::new(tls) as Stream
        };
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(client))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap()
        };
        tokio::join!(accept, connect)
    }

    #[tokio::test]
    async fn an_idle_keepalive_wait_frees_the_tls_buffers_and_a_busy_one_keeps_them() {
        let (mut server, mut client) = pair().await;
        // Busy: the request is there before IDLE_RELEASE; the receive buffer of that read
        // is still allocated afterwards (the wait freed nothing), and freeing it now gives
        // back at least rustls' 4 KiB.
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = BytesMut::with_capacity(256);
        let n = wait_first_byte(&mut server, &mut buf, Duration::from_secs(10)).await;
        assert_eq!(n, Some(18));
        assert!(server.release_idle_buffers() >= 4096);
        // The next read works on a new buffer.
        client.write_all(b"GET /2 HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = BytesMut::with_capacity(256);
        let n = wait_first_byte(&mut server, &mut buf, Duration::from_secs(10)).await;
        assert_eq!(&buf[..n.unwrap()], b"GET /2 HTTP/1.1\r\n\r\n");
        // Idle past IDLE_RELEASE: the wait frees the buffers on the way and still reads the
        // request that comes later.
        let late = async {
            tokio::time::sleep(IDLE_RELEASE * 3).await;
            client.write_all(b"GET /3 HTTP/1.1\r\n\r\n").await.unwrap();
            client
        };
        let mut buf = BytesMut::with_capacity(256);
        let (read, _client) = tokio::join!(
            wait_first_byte(&mut server, &mut buf, Duration::from_secs(10)),
            late
        );
        assert_eq!(&buf[..read.unwrap()], b"GET /3 HTTP/1.1\r\n\r\n");
        // Idle until the keep-alive timeout: None, and the buffers were freed on the way.
        let mut buf = BytesMut::with_capacity(256);
        let n = wait_first_byte(&mut server, &mut buf, IDLE_RELEASE * 2).await;
        assert_eq!(n, None);
        assert_eq!(
            server.release_idle_buffers(),
            0,
            "the idle wait freed the buffers"
        );
    }
}
