//! PROXY protocol v1 and v2 on the public listeners (`[listen] proxy_protocol = true`: a
//! layer-4 load balancer in front), the clients on 127.0.0.2, the one trusted proxy
//! (loopback takes any 127/8 source), unless a test wants an untrusted one (127.0.0.1): a v1
//! header (TCP4, TCP6, UNKNOWN) before TLS and HTTP/1.1, a v2 header (TCP4 with TLVs, TCP6,
//! LOCAL) before TLS and HTTP/2, each in the segment of the ClientHello (as AWS NLB and HAProxy
//! send it) or on its own; the header's source as X-Forwarded-For and X-Real-IP (a client's
//! own X-Forwarded-For replaced) and as the access line's client; the plain listener's
//! redirect and ACME answers after a header; refusals (an untrusted peer, a bad v2 signature,
//! a v1 header without addresses, TLS without a header, a header late for
//! `proxy_protocol_timeout`) closed without an answer, logged once and counted by reason,
//! other connections served meanwhile; `gateway check` refusing `proxy_protocol` without
//! `trusted_proxies`.

mod harness;

use harness::client::Capture;
use harness::config::LISTEN;
use harness::gateway::{check, simple_config};
use harness::scrape::{scrape, scrape_until, Scrape};
use harness::upstream::{self, Upstream};
use harness::wire::{self, h2_request, text, Reply};
use harness::{secs, within, Gateway, Task};
use rustls::pki_types::ServerName;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

/// The deadline of one step (a connection, a handshake, a response, a log line).
const STEP: Duration = Duration::from_secs(10);

/// The one trusted proxy, and a peer outside `trusted_proxies`.
const TRUSTED: [u8; 4] = [127, 0, 0, 2];
const UNTRUSTED: [u8; 4] = [127, 0, 0, 1];
const TRUSTS: &str = "[forwarding]\ntrusted_proxies = [\"127.0.0.2/32\"]\n";

/// The v1 header of most tests: the client 203.0.113.7.
const V1: &str = "PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n";

/// v2 version and command bytes.
const PROXY: u8 = 0x21;
const LOCAL: u8 = 0x20;

const REFUSED: &str = "gateway_proxy_protocol_refused_total";
const REASONS: [&str; 3] = ["untrusted", "malformed", "timeout"];
const HANDSHAKE_FAILURES: &str = "gateway_tls_handshake_failures_total";

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}

/// A PROXY v2 header: `command` ([`PROXY`], [`LOCAL`]), TCP over the family of the addresses
/// (0x11 TCP4, 0x21 TCP6) or, without addresses, UNSPEC (0x00, what a balancer's health check
/// sends with LOCAL), then the TLVs as (type, value).
fn v2(command: u8, addrs: Option<(SocketAddr, SocketAddr)>, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    let family = match addrs {
        None => 0x00,
        Some((src, dst)) => {
            for ip in [src.ip(), dst.ip()] {
                match ip {
                    IpAddr::V4(a) => block.extend_from_slice(&a.octets()),
                    IpAddr::V6(a) => block.extend_from_slice(&a.octets()),
                }
            }
            block.extend_from_slice(&src.port().to_be_bytes());
            block.extend_from_slice(&dst.port().to_be_bytes());
            if src.is_ipv4() {
                0x11
            } else {
                0x21
            }
        }
    };
    for (kind, value) in tlvs {
        block.push(*kind);
        block.extend_from_slice(&(value.len() as u16).to_be_bytes());
        block.extend_from_slice(value);
    }
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[command, family]);
    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
    out.extend_from_slice(&block);
    out
}

/// A GET for `path` with `Host: localhost` and `more` header lines (each ending in CRLF),
/// closing the connection after it.
fn get(path: &str, more: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{more}Connection: close\r\n\r\n")
}

/// [`simple_config`] (a combined access log, one catch-all route to `up`) whose `https` and
/// `http` listeners expect a PROXY header, with `proxy_protocol_timeout` when given, and
/// `forwarding` ([`TRUSTS`], or a test's own).
///
/// `https` and `http` are quoted keys, the same to TOML: the harness finds the listeners to
/// wait for by their bare keys, so it waits for the metrics listener only instead of probing
/// the public ones with empty connections from 127.0.0.1, each of which would be a refused
/// PROXY connection (logged and counted). [`start`] polls them with good headers instead.
fn config(up: SocketAddr, timeout: Option<&str>, forwarding: &str) -> String {
    let timeout = timeout
        .map(|t| format!("proxy_protocol_timeout = \"{t}\"\n"))
        .unwrap_or_default();
    let listen = format!(
        "[listen]\n\"https\" = \"{{HTTPS}}\"\n\"http\" = \"{{HTTP}}\"\nmetrics = \"{{METRICS}}\"\n\
         proxy_protocol = true\n{timeout}"
    );
    simple_config(up, forwarding).replace(LISTEN, &listen)
}

/// An echo upstream and a gateway in front of it ([`config`] with [`TRUSTS`]), once both
/// public listeners answer a request after a good header.
async fn start(timeout: Option<&str>) -> (Upstream, Gateway) {
    let up = upstream::echo().await;
    let gw = Gateway::start(&config(up.addr, timeout, TRUSTS)).await;
    let (https, http) = (gw.https, gw.http);
    let what = "both listeners to answer after a PROXY header";
    harness::poll_until(secs(30), what, || answers(https, http)).await;
    (up, gw)
}

/// `Some` when the HTTPS listener answers a GET over TLS and the plain one a GET, each after
/// [`V1`] from 127.0.0.2.
async fn answers(https: SocketAddr, http: SocketAddr) -> Option<()> {
    let conn = proxied(https, V1.as_bytes(), true).await.ok()?;
    let mut tls = tls_over(conn, b"http/1.1").await.ok()?;
    let secure = wire::exchange(&mut tls, get("/ready/https", "").as_bytes()).await;
    let mut plain = proxied(http, V1.as_bytes(), true).await.ok()?;
    let plain = wire::exchange(&mut plain, get("/ready/http", "").as_bytes()).await;
    (secure.status == 200 && plain.status == 301).then_some(())
}

/// A TCP connection to `addr` from `source`, an address of 127/8.
async fn connect_from(source: [u8; 4], addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    within(STEP, "connecting", socket.connect(addr)).await
}

/// A connection whose first write carries `prefix` (a PROXY header) and the caller's first
/// bytes (the ClientHello, a request) in one segment, as AWS NLB and HAProxy send them: the
/// gateway must keep what it read past the header. An empty `prefix`: the connection as is.
struct Prefixed {
    tcp: TcpStream,
    prefix: Vec<u8>,
}

impl Prefixed {
    fn new(tcp: TcpStream, prefix: &[u8]) -> Prefixed {
        Prefixed {
            tcp,
            prefix: prefix.to_vec(),
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.tcp).poll_write(cx, buf);
        }
        let joined = [this.prefix.as_slice(), buf].concat();
        match Pin::new(&mut this.tcp).poll_write(cx, &joined) {
            Poll::Ready(Ok(n)) if n > this.prefix.len() => {
                let sent = n - this.prefix.len();
                this.prefix.clear();
                Poll::Ready(Ok(sent))
            }
            Poll::Ready(Ok(n)) => {
                // Only part of the prefix went out: the rest of it first, on the next poll.
                this.prefix = this.prefix[n..].to_vec();
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// A connection from 127.0.0.2 to `addr` that starts with `header`: in one segment with the
/// first bytes written on it when `together`, else written on its own first.
async fn proxied(addr: SocketAddr, header: &[u8], together: bool) -> io::Result<Prefixed> {
    let mut tcp = connect_from(TRUSTED, addr).await?;
    if !together {
        within(STEP, "writing the PROXY header", tcp.write_all(header)).await?;
    }
    let prefix: &[u8] = if together { header } else { &[] };
    Ok(Prefixed::new(tcp, prefix))
}

/// The TLS handshake on `io` (SNI `localhost`, any certificate accepted, ALPN `alpn`).
async fn tls_over<S: AsyncRead + AsyncWrite + Unpin>(io: S, alpn: &[u8]) -> io::Result<TlsStream<S>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cfg = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Capture::default()))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = ServerName::try_from("localhost".to_owned()).expect("server name");
    within(STEP, "the TLS handshake", connector.connect(name, io)).await
}

/// `request` over TLS (ALPN http/1.1) on a connection from 127.0.0.2 that starts with
/// `header` ([`proxied`]): the answer.
async fn over_tls(https: SocketAddr, header: &[u8], together: bool, request: &str) -> Reply {
    let conn = proxied(https, header, together)
        .await
        .expect("connect from 127.0.0.2");
    let mut tls = tls_over(conn, b"http/1.1")
        .await
        .expect("the TLS handshake after the PROXY header");
    wire::exchange(&mut tls, request.as_bytes()).await
}

/// GET `path` over HTTP/2 (TLS, ALPN h2) on a connection from 127.0.0.2 that starts with
/// `header` ([`proxied`]): the status, once the whole body has arrived.
async fn over_h2(https: SocketAddr, header: &[u8], together: bool, path: &str) -> u16 {
    let conn = proxied(https, header, together)
        .await
        .expect("connect from 127.0.0.2");
    let tls = tls_over(conn, b"h2")
        .await
        .expect("the TLS handshake after the PROXY header");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
    let (send, connection) = within(STEP, "the h2 handshake", h2::client::handshake(tls))
        .await
        .expect("h2 handshake");
    let _connection = Task::spawn(async move {
        let _ = connection.await;
    });
    let mut send = within(STEP, "the h2 connection to be ready", send.ready())
        .await
        .expect("h2 ready");
    let (response, _) = send
        .send_request(h2_request(https, "GET", path, &[]), true)
        .expect("the h2 request");
    let response = within(STEP, "the h2 response", response)
        .await
        .expect("the h2 response");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    while let Some(data) = within(STEP, "the h2 response body", body.data()).await {
        let data = data.expect("the h2 response body");
        let _ = body.flow_control().release_capacity(data.len());
    }
    status
}

/// The upstream got `path` with `client` in X-Forwarded-For and X-Real-IP, and the access
/// line of `GET path version` names `client` first.
async fn client_is(up: &Upstream, gw: &Gateway, path: &str, version: &str, client: &str) {
    let seen = up
        .seen()
        .into_iter()
        .find(|s| s.uri == path)
        .unwrap_or_else(|| panic!("{path} did not reach the upstream"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some(client),
        "{path}: {:?}",
        seen.headers
    );
    assert_eq!(
        seen.header("x-real-ip"),
        Some(client),
        "{path}: {:?}",
        seen.headers
    );
    let line = gw.access_line(&format!("\"GET {path} {version}\" ")).await;
    assert!(line.starts_with(&format!("{client} - - [")), "{path}: {line}");
}

/// The refusals counted so far, by [`REASONS`] (summed over any other label).
fn refused(s: &Scrape) -> [f64; 3] {
    REASONS.map(|r| {
        s.series(REFUSED, &[("reason", r)])
            .iter()
            .map(|x| x.value)
            .sum::<f64>()
    })
}

async fn wait_refused(gw: &Gateway, want: [f64; 3]) {
    let what = format!("{REFUSED} by reason {REASONS:?} to be {want:?}");
    scrape_until(gw.metrics, STEP, &what, |s| refused(s) == want).await;
}

async fn no_refusals(gw: &Gateway) {
    let s = scrape(gw.metrics).await;
    assert_eq!(refused(&s), [0.0; 3], "no connection was refused:\n{}", s.text);
}

/// Whether `line` names `peer` (`ip:port`), and not a longer port that starts like it.
fn names(line: &str, peer: &str) -> bool {
    line.match_indices(peer)
        .any(|(at, _)| !line[at + peer.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

/// The log lines about the PROXY header of the connection from `peer`.
fn lines_about(log: &str, peer: SocketAddr) -> Vec<String> {
    let peer = peer.to_string();
    log.lines()
        .filter(|l| l.contains("PROXY protocol") && names(l, &peer))
        .map(str::to_owned)
        .collect()
}

/// Waits for the log line about the refused connection from `peer` and checks it gives
/// `reason`.
async fn refusal_logged(gw: &Gateway, peer: SocketAddr, reason: &str) {
    let what = format!("a `PROXY protocol` log line naming {peer}");
    gw.wait_log(STEP, &what, |log| !lines_about(log, peer).is_empty())
        .await;
    let line = lines_about(&gw.stderr(), peer).remove(0);
    assert!(line.contains(reason), "the reason `{reason}`: {line}");
}

/// Exactly one log line for each refused connection (checked when the test is done, so that a
/// second line logged just after the first is seen too).
fn one_line_each(gw: &Gateway, peers: &[SocketAddr]) {
    let log = gw.stderr();
    for peer in peers {
        let lines = lines_about(&log, *peer);
        assert_eq!(lines.len(), 1, "one line for {peer}:\n{}", lines.join("\n"));
    }
}

/// Writes `bytes` (a failed write is fine: the gateway may have closed already) and reads
/// until the gateway closes the connection: what it sent before that.
async fn until_closed(tcp: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
    let _ = within(STEP, "writing", tcp.write_all(bytes)).await;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tcp.read(&mut chunk);
        match within(STEP, "the gateway to close the refused connection", read).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends `bytes` from `source` to `addr`: the gateway closes the connection without sending a
/// byte. The connection's own address.
async fn refused_raw(source: [u8; 4], addr: SocketAddr, bytes: &[u8]) -> SocketAddr {
    let mut tcp = connect_from(source, addr).await.expect("connect");
    let peer = tcp.local_addr().expect("the local address");
    let got = until_closed(&mut tcp, bytes).await;
    assert!(
        got.is_empty(),
        "{peer}: a refused connection got an answer: {:?}",
        text(&got)
    );
    peer
}

/// A TLS handshake from `source` to `addr` after `header` (in the ClientHello's segment; none
/// when empty): it fails. The connection's own address.
async fn refused_tls(source: [u8; 4], addr: SocketAddr, header: &[u8]) -> SocketAddr {
    let tcp = connect_from(source, addr).await.expect("connect");
    let peer = tcp.local_addr().expect("the local address");
    let handshake = tls_over(Prefixed::new(tcp, header), b"http/1.1").await;
    assert!(
        handshake.is_err(),
        "{peer}: a TLS handshake on a connection to refuse succeeded"
    );
    peer
}

#[tokio::test]
async fn v1_before_tls_gives_the_upstream_and_the_access_log_its_client() {
    let (up, gw) = start(Some("1s")).await;
    // The client's own X-Forwarded-For: the header's source is the client, outside
    // trusted_proxies, so it is replaced (the balancer passes the bytes on unread).
    let spoofed = "X-Forwarded-For: 6.6.6.6\r\n";
    let tcp6 = "PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n";
    let cases = [
        (V1, "/v1/tcp4", false, spoofed, "203.0.113.7"),
        (tcp6, "/v1/tcp6", true, spoofed, "2001:db8::7"),
        // UNKNOWN: the balancer's own address.
        ("PROXY UNKNOWN\r\n", "/v1/unknown", true, "", "127.0.0.2"),
    ];
    for (header, path, together, more, client) in cases {
        let r = over_tls(gw.https, header.as_bytes(), together, &get(path, more)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.head);
        client_is(&up, &gw, path, "HTTP/1.1", client).await;
    }
    no_refusals(&gw).await;
}

#[tokio::test]
async fn v2_before_tls_and_http2_gives_its_source_address() {
    let (up, gw) = start(Some("1s")).await;
    // PP2_TYPE_AUTHORITY and a type of no meaning to the gateway: both skipped.
    let tlvs = [(0x02, &b"localhost"[..]), (0xE0, &b"vendor data"[..])];
    let tcp4 = v2(
        PROXY,
        Some((sa("198.51.100.20:51000"), sa("10.0.0.1:443"))),
        &tlvs,
    );
    let tcp6 = v2(
        PROXY,
        Some((sa("[2001:db8::7]:51000"), sa("[2001:db8::1]:443"))),
        &[(0xE0, &b"\x00\x01\x02"[..])],
    );
    // LOCAL (a balancer's own connection): its address.
    let local = v2(LOCAL, None, &[]);
    let cases = [
        (&tcp4, "/v2/tcp4", true, "198.51.100.20"),
        (&tcp6, "/v2/tcp6", false, "2001:db8::7"),
        (&local, "/v2/local", true, "127.0.0.2"),
    ];
    for (header, path, together, client) in cases {
        assert_eq!(over_h2(gw.https, header, together, path).await, 200, "{path}");
        client_is(&up, &gw, path, "HTTP/2.0", client).await;
    }
    no_refusals(&gw).await;
}

/// The `:80` listener reads the header too, then answers as without one (a redirect, the
/// ACME challenges) and logs the header's client.
#[tokio::test]
async fn the_http_listener_answers_after_a_header_and_logs_its_client() {
    let (_up, gw) = start(Some("1s")).await;
    // v1 and the request in one segment.
    let mut conn = proxied(gw.http, V1.as_bytes(), true).await.expect("connect");
    let r = wire::exchange(&mut conn, get("/old/page?x=1", "").as_bytes()).await;
    assert_eq!(r.status, 301, "{}", r.head);
    let line = gw.access_line("\"GET /old/page?x=1 HTTP/1.1\" 301 ").await;
    assert!(line.starts_with("203.0.113.7 - - ["), "{line}");
    assert!(line.contains("route=redirect"), "{line}");

    // v2 (TCP6) on its own, then a challenge nobody ordered.
    let header = v2(
        PROXY,
        Some((sa("[2001:db8::7]:51000"), sa("[2001:db8::1]:80"))),
        &[],
    );
    let mut conn = proxied(gw.http, &header, false).await.expect("connect");
    let path = "/.well-known/acme-challenge/pp-token";
    let r = wire::exchange(&mut conn, get(path, "").as_bytes()).await;
    assert_eq!(r.status, 404, "{}", r.head);
    let line = gw.access_line(&format!("\"GET {path} HTTP/1.1\" 404 ")).await;
    assert!(line.starts_with("2001:db8::7 - - ["), "{line}");
    assert!(line.contains("route=acme-challenge"), "{line}");
    no_refusals(&gw).await;
}

/// Each refused connection is closed at once with nothing sent back (no TLS, no HTTP), one
/// log line names its peer and the reason, the metric counts the reason; nothing reaches the
/// upstream or the access log, and no TLS handshake failure is counted (none began).
#[tokio::test]
async fn untrusted_peers_and_malformed_headers_are_refused_at_once_without_an_answer() {
    // The default proxy_protocol_timeout (5 s): none of these waits for it.
    let (up, gw) = start(None).await;
    let before = up.seen().len();
    let mut bad_signature = v2(PROXY, Some((sa("203.0.113.7:51000"), sa("10.0.0.1:443"))), &[]);
    bad_signature[10] = b'X'; // QUIT → QUIX
    let garbage = format!(
        "PROXY TCP4 not-an-ip 10.0.0.1 51000 80\r\n{}",
        get("/refused/garbage", "")
    );
    let untrusted_plain = format!("{V1}{}", get("/refused/untrusted", ""));
    // (what, source, listener, TLS after it, bytes, reason)
    let steps = [
        (
            "a valid header from 127.0.0.1",
            UNTRUSTED,
            gw.https,
            true,
            V1.as_bytes(),
            "untrusted",
        ),
        (
            "the same before a request on :80",
            UNTRUSTED,
            gw.http,
            false,
            untrusted_plain.as_bytes(),
            "untrusted",
        ),
        (
            "a v2 header with a bad signature",
            TRUSTED,
            gw.https,
            false,
            &bad_signature[..],
            "malformed",
        ),
        (
            "a v1 header without addresses on :80",
            TRUSTED,
            gw.http,
            false,
            garbage.as_bytes(),
            "malformed",
        ),
        (
            "a ClientHello without a header",
            TRUSTED,
            gw.https,
            true,
            &[][..],
            "malformed",
        ),
    ];
    let mut want = [0.0; 3];
    let mut peers = Vec::new();
    for (what, source, addr, tls, bytes, reason) in steps {
        let started = Instant::now();
        let peer = if tls {
            refused_tls(source, addr, bytes).await
        } else {
            refused_raw(source, addr, bytes).await
        };
        let took = started.elapsed();
        assert!(took < secs(3), "{what}: closed after {took:?}, not at once");
        refusal_logged(&gw, peer, reason).await;
        want[REASONS.iter().position(|r| *r == reason).expect("a reason")] += 1.0;
        wait_refused(&gw, want).await;
        peers.push(peer);
    }
    assert_eq!(up.seen().len(), before, "nothing reached the upstream");
    let out = gw.stdout();
    assert!(
        !out.contains("/refused/"),
        "no access line for a refused connection:\n{out}"
    );
    let s = scrape(gw.metrics).await;
    assert_eq!(refused(&s), want, "{}", s.text);
    assert_eq!(
        s.value(HANDSHAKE_FAILURES, &[]),
        0.0,
        "a refused PROXY header is no TLS handshake failure:\n{}",
        s.text
    );
    one_line_each(&gw, &peers);
    // A balancer's TCP health check (connect, then close) is neither logged nor counted.
    let stderr_before = gw.stderr().len();
    for addr in [gw.https, gw.http] {
        let mut probe = connect_from(TRUSTED, addr).await.expect("connect");
        probe.shutdown().await.unwrap();
        assert!(until_closed(&mut probe, b"").await.is_empty());
    }
    let s = scrape(gw.metrics).await;
    assert_eq!(refused(&s), want, "health checks are not refusals:\n{}", s.text);
    let after = gw.stderr()[stderr_before..].to_string();
    assert!(!after.contains("PROXY protocol"), "{after}");
    // The listener goes on serving.
    let r = over_tls(gw.https, V1.as_bytes(), true, &get("/after/refusals", "")).await;
    assert_eq!(r.status, 200, "{}", r.head);
}

/// A header trickled in one byte every 150 ms (6.5 s for all of it): each write is progress,
/// but the deadline is for the whole header, so the connection is closed at 2 s; a good
/// connection meanwhile is answered while the slow one is still pending.
#[tokio::test]
async fn a_header_late_for_its_deadline_is_refused_while_other_connections_are_served() {
    let (up, gw) = start(Some("2s")).await;
    let slow = connect_from(TRUSTED, gw.https).await.expect("connect");
    let peer = slow.local_addr().expect("the local address");
    let started = Instant::now();
    let (mut rd, mut wr) = slow.into_split();
    let _trickle = Task::spawn(async move {
        for b in V1.bytes() {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        // The write side stays open (no FIN) until the test ends.
        std::future::pending::<()>().await;
    });
    let closed = tokio::spawn(async move {
        let mut got = Vec::new();
        let _ = rd.read_to_end(&mut got).await;
        (started.elapsed(), got)
    });

    let r = over_tls(gw.https, V1.as_bytes(), true, &get("/during/slow", "")).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(
        !closed.is_finished(),
        "the slow connection ended ({:?} after it began) before the good one was answered: it \
         was cut early, or the good one waited for it",
        started.elapsed()
    );
    client_is(&up, &gw, "/during/slow", "HTTP/1.1", "203.0.113.7").await;

    let wait = "the gateway to close the slow connection";
    let (after, got) = within(STEP, wait, closed).await.expect("the reading task");
    assert!(got.is_empty(), "no answer: {:?}", text(&got));
    assert!(
        after >= Duration::from_millis(1950),
        "closed after {after:?}, before the 2 s deadline"
    );
    assert!(
        after < secs(5),
        "closed after {after:?}: at the deadline of the whole header, not when the writes stop"
    );
    refusal_logged(&gw, peer, "timeout").await;
    wait_refused(&gw, [0.0, 0.0, 1.0]).await;
    one_line_each(&gw, &[peer]);
}

/// `proxy_protocol = true` with nobody allowed to send the header: refused by `check`, at the
/// line of `proxy_protocol` (or, with an empty list, its own); with a trusted proxy, fine.
#[test]
fn check_refuses_proxy_protocol_without_trusted_proxies() {
    let file_text = |forwarding: &str| {
        config(sa("127.0.0.1:9"), Some("1s"), forwarding)
            .replace("{HTTPS}", "127.0.0.1:1443")
            .replace("{HTTP}", "127.0.0.1:1080")
            .replace("{METRICS}", "127.0.0.1:1909")
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("proxy.toml");
    let name = file.display().to_string();
    let cases = [
        ("no [forwarding]", ""),
        ("an empty list", "[forwarding]\ntrusted_proxies = []\n"),
    ];
    for (what, forwarding) in cases {
        let src = file_text(forwarding);
        std::fs::write(&file, &src).expect("write the configuration");
        let out = check(&file);
        let shown = harness::gateway::text(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {shown}");
        let at: Vec<String> = src
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with("proxy_protocol = ") || l.starts_with("trusted_proxies = "))
            .map(|(i, _)| format!("{name}:{}:", i + 1))
            .collect();
        let error = shown
            .lines()
            .find(|l| at.iter().any(|a| l.contains(a.as_str())))
            .unwrap_or_else(|| panic!("{what}: no error at {at:?} in:\n{shown}"));
        assert!(
            error.contains("error") && error.contains("trusted_proxies"),
            "{what}: {error}"
        );
    }
    std::fs::write(&file, file_text(TRUSTS)).expect("write the configuration");
    let out = check(&file);
    let shown = harness::gateway::text(&out);
    assert!(out.status.success(), "with a trusted proxy: {shown}");
}

/// An upstream that expects a PROXY v2 header first on each connection (as behind HAProxy's
/// `send-proxy-v2`) and answers each request on it with the source address the header gave
/// (`ip:port`); `headers` has one entry per connection, the source it announced.
async fn proxy_upstream() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let headers: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen = headers.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut fixed = [0u8; 16];
                if s.read_exact(&mut fixed).await.is_err() || &fixed[..12] != b"\r\n\r\n\0\r\nQUIT\n" {
                    seen.lock().unwrap().push("no PROXY v2 header".into());
                    return;
                }
                let mut block = vec![0u8; u16::from_be_bytes([fixed[14], fixed[15]]) as usize];
                if s.read_exact(&mut block).await.is_err() {
                    return;
                }
                let source = match fixed[13] {
                    0x11 => SocketAddr::new(
                        IpAddr::from(<[u8; 4]>::try_from(&block[..4]).unwrap()),
                        u16::from_be_bytes([block[8], block[9]]),
                    ),
                    0x21 => SocketAddr::new(
                        IpAddr::from(<[u8; 16]>::try_from(&block[..16]).unwrap()),
                        u16::from_be_bytes([block[32], block[33]]),
                    ),
                    other => {
                        seen.lock().unwrap().push(format!("family {other:#x}"));
                        return;
                    }
                }
                .to_string();
                seen.lock().unwrap().push(source.clone());
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{source}",
                            source.len()
                        );
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, headers)
}

/// `proxy_protocol = "v2"` on an upstream: each connection to it starts with a header that
/// announces the client (the address the inbound PROXY header gave), and a pooled
/// connection is only reused for the client it announced.
#[tokio::test]
async fn an_upstream_with_proxy_protocol_v2_is_told_each_client() {
    let (up, headers) = proxy_upstream().await;
    let toml = config(up, None, TRUSTS).replace(
        &format!("address = \"{up}\"\n"),
        &format!("address = \"{up}\"\nproxy_protocol = \"v2\"\n"),
    );
    assert!(toml.contains("proxy_protocol = \"v2\""), "{toml}");
    let gw = Gateway::start(&toml).await;
    let https = gw.https;
    harness::poll_until(
        secs(30),
        "the HTTPS listener after a PROXY header",
        // Not `over_tls`, which panics on a refused connection: the listener may not be up yet.
        || async move {
            let conn = proxied(https, V1.as_bytes(), true).await.ok()?;
            let mut tls = tls_over(conn, b"http/1.1").await.ok()?;
            let r = wire::exchange(&mut tls, get("/ready", "").as_bytes()).await;
            (r.status == 200).then_some(())
        },
    )
    .await;
    let other = "PROXY TCP4 198.51.100.9 10.0.0.1 40000 443\r\n";
    for (header, client) in [
        (V1, "203.0.113.7:51000"),
        (other, "198.51.100.9:40000"),
        (V1, "203.0.113.7:51000"),
        (other, "198.51.100.9:40000"),
    ] {
        let r = over_tls(gw.https, header.as_bytes(), true, &get("/who", "")).await;
        assert_eq!(r.status, 200, "{}", r.head);
        assert_eq!(
            text(&r.body),
            client,
            "the upstream connection announced this client"
        );
    }
    let seen = headers.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|h| h == "203.0.113.7:51000" || h == "198.51.100.9:40000"),
        "{seen:?}"
    );
    assert!(seen.contains(&"198.51.100.9:40000".to_string()), "{seen:?}");
}
