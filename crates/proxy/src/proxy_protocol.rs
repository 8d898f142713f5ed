//! PROXY protocol v1 and v2 on the public listeners (`[listen] proxy_protocol = true`), for a
//! layer-4 load balancer in front (Alibaba Cloud SLB/NLB, AWS NLB, HAProxy `send-proxy`).
//!
//! Run by Pingora's pre-TLS hook on every accepted connection, before the TLS handshake on
//! the HTTPS listener and before the first request on the plain one (vendored patch 0021).
//! The header is read exactly (v1: up to the CRLF, at most 107 bytes; v2: the 16-byte fixed
//! part, then the length it gives), so the bytes after it stay in the stream for TLS or
//! HTTP. It is parsed by the `ppp` crate (the specification: haproxy.org's
//! `proxy-protocol.txt`, sections 2.1 and 2.2).
//!
//! - Accepted only from `forwarding.trusted_proxies` (read from the current snapshot, so a
//!   reload changes it for new connections): any other peer is refused, because a client
//!   could otherwise claim any address.
//! - The header's source address becomes the connection's peer address, so everything that
//!   reads the client address (X-Forwarded-For, X-Real-IP, allow-lists, rate limits, the
//!   access log) sees it. `PROXY UNKNOWN` (v1) and the `LOCAL` command (v2, a balancer's
//!   health check) keep the balancer's own address. The destination addresses and every
//!   TLV (PP2_TYPE_AUTHORITY, ALPN, SSL, vendor types) are ignored.
//! - Refused with one log line and `gateway_proxy_protocol_refused_total{reason}`: an
//!   untrusted peer (`untrusted`), a missing, malformed or truncated header (`malformed`),
//!   a header not complete within `proxy_protocol_timeout` (`timeout`). The connection is
//!   closed without an answer; others are unaffected (each runs in its own task).

use crate::metrics::Metrics;
use crate::state::Shared;
use async_trait::async_trait;
use pingora_core::listeners::PreTlsProcess;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// The v2 signature (section 2.2).
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (section 2.1).
const V1_MAX: usize = 107;
/// The shortest v1 header (`PROXY UNKNOWN\r\n`): reading this much never takes a byte of
/// what follows.
const V1_MIN: usize = 15;
/// A v2 header's address block and TLVs: at most this many bytes are accepted (216 for two
/// UNIX addresses, plus room for TLVs).
const V2_MAX_BODY: usize = 1024;

/// Why a connection's PROXY header was refused (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Untrusted,
    Malformed,
    Timeout,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::Untrusted, Refusal::Malformed, Refusal::Timeout];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Untrusted => "untrusted",
            Refusal::Malformed => "malformed",
            Refusal::Timeout => "timeout",
        }
    }
}

/// What a header says about the client: `Some(addr)` for a proxied connection, `None` to keep
/// the peer's own address (v1 `UNKNOWN`, v2 `LOCAL`, v2 with an unspecified or UNIX family).
pub type Source = Option<SocketAddr>;

/// Parses one complete header (`bytes` holds exactly the header).
pub fn parse(bytes: &[u8]) -> Result<Source, String> {
    if bytes.starts_with(&V2_SIGNATURE) {
        let h = ppp::v2::Header::try_from(bytes).map_err(|e| format!("v2: {e}"))?;
        if h.command == ppp::v2::Command::Local {
            return Ok(None);
        }
        return Ok(match h.addresses {
            ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
            ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
            ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "v1: not ASCII".to_string())?;
    let h = ppp::v1::Header::try_from(text).map_err(|e| format!("v1: {e}"))?;
    Ok(match h.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
        ppp::v1::Addresses::Unknown => None,
    })
}

/// The text of a connection closed before its first byte: a load balancer's TCP health check
/// (connect, then close), not worth a log line.
pub const CLOSED_BEFORE_HEADER: &str = "closed before sending anything";

/// Reads exactly one header from `stream` (see the module comment); the bytes that follow
/// it are left unread.
pub async fn read_header<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; 16];
    let eof = |e: std::io::Error| format!("the connection ended inside the header ({e})");
    let first = stream.read(&mut buf[..12]).await.map_err(eof)?;
    if first == 0 {
        return Err(CLOSED_BEFORE_HEADER.into());
    }
    stream.read_exact(&mut buf[first..12]).await.map_err(eof)?;
    if buf[..12] == V2_SIGNATURE {
        stream.read_exact(&mut buf[12..16]).await.map_err(eof)?;
        let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
        if len > V2_MAX_BODY {
            return Err(format!(
                "v2: an address block of {len} bytes (at most {V2_MAX_BODY})"
            ));
        }
        buf.resize(16 + len, 0);
        stream.read_exact(&mut buf[16..]).await.map_err(eof)?;
        return Ok(buf);
    }
    if !buf.starts_with(b"PROXY ") {
        return Err("no PROXY protocol header (neither `PROXY ` nor the v2 signature)".into());
    }
    buf.truncate(12);
    buf.resize(V1_MIN, 0);
    stream.read_exact(&mut buf[12..]).await.map_err(eof)?;
    while !buf.ends_with(b"\r\n") {
        if buf.len() >= V1_MAX {
            return Err(format!("v1: no CRLF within {V1_MAX} bytes"));
        }
        let mut b = [0u8; 1];
        stream.read_exact(&mut b).await.map_err(eof)?;
        buf.push(b[0]);
    }
    Ok(buf)
}

/// At most [`LINES_PER_SECOND`] refusal lines a second (scanners on a public port would
/// flood the log); the metric counts every refusal.
const LINES_PER_SECOND: u64 = 10;

fn log_budget() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SECOND: AtomicU64 = AtomicU64::new(0);
    static LINES: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if SECOND.swap(now, Ordering::Relaxed) != now {
        LINES.store(0, Ordering::Relaxed);
    }
    LINES.fetch_add(1, Ordering::Relaxed) < LINES_PER_SECOND
}

/// The pre-TLS hook of the public listeners.
pub struct ProxyProtocol {
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    /// The listener's name in log lines (`https`, `http`).
    listener: &'static str,
}

impl ProxyProtocol {
    pub fn new(shared: Arc<Shared>, listener: &'static str) -> Arc<Self> {
        let metrics = shared.metrics.clone();
        Arc::new(Self {
            shared,
            metrics,
            listener,
        })
    }

    fn refuse(&self, reason: Refusal, peer: Option<SocketAddr>, why: &str) -> Box<pingora_core::Error> {
        self.metrics
            .proxy_protocol_refused
            .with_label_values(&[reason.label()])
            .inc();
        let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
        if log_budget() {
            tracing::warn!(listener = self.listener, peer = %peer, reason = reason.label(), error = %why, "PROXY protocol: connection refused");
        } else {
            tracing::debug!(listener = self.listener, peer = %peer, reason = reason.label(), error = %why, "PROXY protocol: connection refused");
        }
        pingora_core::Error::explain(
            pingora_core::ErrorType::AcceptError,
            format!("PROXY protocol: {why}"),
        )
    }
}

#[async_trait]
impl PreTlsProcess for ProxyProtocol {
    async fn process(&self, stream: &mut L4Stream) -> pingora_core::Result<()> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        let snap = self.shared.snapshot.load();
        let trusted = &snap.config.forwarding.trusted_proxies;
        let Some(real) = peer.filter(|p| {
            // An IPv4-mapped address (a dual-stack listener) as the IPv4 address it carries.
            let ip = p.ip().to_canonical();
            trusted.iter().any(|n| n.contains(&ip))
        }) else {
            return Err(self.refuse(
                Refusal::Untrusted,
                peer,
                "the peer is not in forwarding.trusted_proxies",
            ));
        };
        let deadline = snap.config.listen.proxy_protocol_timeout;
        drop(snap);
        let header = match tokio::time::timeout(deadline, read_header(stream)).await {
            Err(_) => {
                let why = format!(
                    "no complete header within {}",
                    humantime::format_duration(deadline)
                );
                return Err(self.refuse(Refusal::Timeout, peer, &why));
            }
            Ok(Err(why)) if why == CLOSED_BEFORE_HEADER => {
                tracing::debug!(listener = self.listener, peer = %real, "PROXY protocol: {why}");
                return Err(pingora_core::Error::explain(
                    pingora_core::ErrorType::AcceptError,
                    "PROXY protocol: a health check",
                ));
            }
            Ok(Err(why)) => return Err(self.refuse(Refusal::Malformed, peer, &why)),
            Ok(Ok(h)) => h,
        };
        let source = parse(&header).map_err(|why| self.refuse(Refusal::Malformed, peer, &why))?;
        if let Some(client) = source {
            let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
            let _ = digest.peer_addr.set(Some(client.into()));
            stream.set_socket_digest(digest);
            tracing::trace!(listener = self.listener, peer = %real, client = %client, "PROXY protocol header");
        }
        Ok(())
    }
}

/// The header sent first on a connection to an upstream with `proxy_protocol = "v1"|"v2"`:
/// `client` as the source, `local` (the gateway's address the client reached) as the
/// destination. Two addresses of different families are both written as IPv6 (an IPv4
/// address as IPv4-mapped), which both versions can carry.
pub fn header(version: gateway_config::SendProxy, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (src, dst) = match (canonical_addr(client), canonical_addr(local)) {
        (a @ SocketAddr::V4(_), b @ SocketAddr::V4(_)) | (a @ SocketAddr::V6(_), b @ SocketAddr::V6(_)) => {
            (a, b)
        }
        (a, b) => (as_v6(a), as_v6(b)),
    };
    match version {
        gateway_config::SendProxy::V1 => {
            let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                src.ip(),
                dst.ip(),
                src.port(),
                dst.port()
            )
            .into_bytes()
        }
        gateway_config::SendProxy::V2 => ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap_or_default(),
    }
}

fn canonical_addr(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fn as_v6(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    }
}

/// The header of a connection the gateway opens on its own behalf (a health check): v2
/// `LOCAL` without addresses, v1 `PROXY UNKNOWN` (the specification's words for "not
/// relayed"); the server then uses the connection's own addresses.
pub fn local_header(version: gateway_config::SendProxy) -> Vec<u8> {
    match version {
        gateway_config::SendProxy::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        gateway_config::SendProxy::V2 => ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap_or_default(),
    }
}

/// The connector of an upstream with `proxy_protocol`: a TCP connection (within the
/// route's connect timeout), then [`header`] before anything else ([`local_header`] when
/// `client` is `None`: a health check). Pingora pools the
/// connection under the peer's `group_key`, which the caller derives from the client's
/// address and port, so a connection is reused only for the client it announced.
#[derive(Debug)]
pub struct SendProxyConnect {
    pub version: gateway_config::SendProxy,
    pub client: Option<SocketAddr>,
    pub local: SocketAddr,
    pub timeout: std::time::Duration,
}

#[async_trait]
impl pingora_core::connectors::L4Connect for SendProxyConnect {
    async fn connect(
        &self,
        addr: &pingora_core::protocols::l4::socket::SocketAddr,
    ) -> pingora_core::Result<L4Stream> {
        use pingora_core::{Error, ErrorType};
        use tokio::io::AsyncWriteExt;
        let Some(inet) = addr.as_inet().copied() else {
            return Err(Error::explain(
                ErrorType::ConnectError,
                "PROXY protocol to a non-TCP address",
            ));
        };
        let tcp = match tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(inet)).await {
            Err(_) => {
                return Err(Error::explain(
                    ErrorType::ConnectTimedout,
                    format!("timeout {:?} connecting to server {inet}", self.timeout),
                ))
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(Error::because(
                    ErrorType::ConnectRefused,
                    format!("connecting to {inet}"),
                    e,
                ))
            }
            Ok(Err(e)) => {
                return Err(Error::because(
                    ErrorType::ConnectError,
                    format!("connecting to {inet}"),
                    e,
                ))
            }
            Ok(Ok(t)) => t,
        };
        let _ = tcp.set_nodelay(true);
        let mut tcp = tcp;
        let bytes = match self.client {
            Some(client) => header(self.version, client, self.local),
            None => local_header(self.version),
        };
        if let Err(e) = tcp.write_all(&bytes).await {
            return Err(Error::because(
                ErrorType::ConnectError,
                format!("sending the PROXY protocol header to {inet}"),
                e,
            ));
        }
        Ok(L4Stream::from(tcp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<Vec<u8>, String>, Vec<u8>) {
        let mut cursor = std::io::Cursor::new(bytes.to_vec());
        let r = read_header(&mut cursor).await;
        let pos = cursor.position() as usize;
        (r, bytes[pos..].to_vec())
    }

    #[tokio::test]
    async fn a_v1_header_is_read_exactly_and_parsed() {
        let (h, rest) = read(b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n\x16\x03\x01").await;
        let h = h.unwrap();
        assert_eq!(rest, b"\x16\x03\x01", "the TLS bytes stay");
        assert_eq!(parse(&h).unwrap(), Some("203.0.113.7:51000".parse().unwrap()));
        let (h, rest) = read(b"PROXY UNKNOWN\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(parse(&h.unwrap()).unwrap(), None);
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (h, _) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n").await;
        assert_eq!(
            parse(&h.unwrap()).unwrap(),
            Some("[2001:db8::7]:51000".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn a_v2_header_with_tlvs_is_read_exactly_and_parsed() {
        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "203.0.113.7:51000".parse::<SocketAddr>().unwrap(),
                "10.0.0.1:443".parse::<SocketAddr>().unwrap(),
            ),
        )
        .write_tlv(ppp::v2::Type::Authority, b"example.com")
        .unwrap()
        .write_tlv(0xE0u8, b"vendor")
        .unwrap()
        .build()
        .unwrap();
        let mut input = header.clone();
        input.extend_from_slice(b"\x16\x03\x01");
        let (h, rest) = read(&input).await;
        let h = h.unwrap();
        assert_eq!(h, header);
        assert_eq!(rest, b"\x16\x03\x01");
        assert_eq!(parse(&h).unwrap(), Some("203.0.113.7:51000".parse().unwrap()));
        let local = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Stream,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(parse(&local).unwrap(), None, "LOCAL keeps the peer's address");
    }

    #[tokio::test]
    async fn a_connection_closed_at_once_is_a_health_check_and_one_byte_at_a_time_is_read() {
        let (h, _) = read(b"").await;
        assert_eq!(h.unwrap_err(), CLOSED_BEFORE_HEADER);
        // A header that arrives one byte per read is read whole.
        let mut slow = tokio_test_slow(b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\nGET");
        let h = read_header(&mut slow).await.unwrap();
        assert_eq!(parse(&h).unwrap(), Some("203.0.113.7:51000".parse().unwrap()));
    }

    /// A reader that returns one byte per read.
    fn tokio_test_slow(bytes: &[u8]) -> impl tokio::io::AsyncRead + Unpin {
        struct OneByte(std::collections::VecDeque<u8>);
        impl tokio::io::AsyncRead for OneByte {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                if let Some(b) = self.0.pop_front() {
                    buf.put_slice(&[b]);
                }
                std::task::Poll::Ready(Ok(()))
            }
        }
        OneByte(bytes.iter().copied().collect())
    }

    #[test]
    fn headers_sent_upstream_parse_back_to_the_client() {
        use gateway_config::SendProxy;
        let client: SocketAddr = "203.0.113.7:51000".parse().unwrap();
        let local: SocketAddr = "10.0.0.1:443".parse().unwrap();
        for v in [SendProxy::V1, SendProxy::V2] {
            assert_eq!(parse(&header(v, client, local)).unwrap(), Some(client), "{v:?}");
        }
        assert_eq!(
            header(SendProxy::V1, client, local),
            b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n"
        );
        // A dual-stack listener: the local address is IPv4-mapped, the client IPv4.
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:443".parse().unwrap();
        assert!(header(SendProxy::V1, client, mapped).starts_with(b"PROXY TCP4 "));
        let v6: SocketAddr = "[2001:db8::7]:51000".parse().unwrap();
        let text = String::from_utf8(header(SendProxy::V1, v6, local)).unwrap();
        assert_eq!(text, "PROXY TCP6 2001:db8::7 ::ffff:10.0.0.1 51000 443\r\n");
        assert_eq!(parse(&header(SendProxy::V2, v6, local)).unwrap(), Some(v6));
        for v in [SendProxy::V1, SendProxy::V2] {
            assert_eq!(parse(&local_header(v)).unwrap(), None, "{v:?}");
        }
    }

    #[tokio::test]
    async fn malformed_and_truncated_headers_are_errors() {
        for bad in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00"[..],
            b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 51000",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443 and far too long padding padding padding padding padding padding padding\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x01\x02",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff",
            b"\r\n\r\n\0\r\nQUIT\n\x99\x11\x00\x0c\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00\x02",
        ] {
            let (h, _) = read(bad).await;
            let parsed = h.and_then(|h| parse(&h));
            assert!(parsed.is_err(), "{:?} must be refused: {parsed:?}", String::from_utf8_lossy(bad));
        }
    }
}
