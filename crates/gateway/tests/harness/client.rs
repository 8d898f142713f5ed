//! Clients: reqwest over rustls (HTTP/1.1 and h2), raw TLS for malformed input and SNI.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A reqwest client that accepts the test certificates and resolves `localhost` to loopback.
pub fn http(h2: bool) -> reqwest::Client {
    builder(h2).build().expect("client")
}

/// Like [`http`], without connection reuse: each request opens a new connection (TCP and
/// TLS handshake), so the gateway's accept loops work all the time.
pub fn fresh(h2: bool) -> reqwest::Client {
    builder(h2).pool_max_idle_per_host(0).build().expect("client")
}

fn builder(h2: bool) -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let b = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(60));
    if h2 {
        b.http2_adaptive_window(true)
    } else {
        b.http1_only()
    }
}

/// Accepts any certificate and remembers the one presented.
#[derive(Debug, Default)]
pub struct Capture(pub Mutex<Option<CertificateDer<'static>>>);

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_tls12_signature(message, cert, dss)
    }
}

/// A TLS client that accepts any certificate, offering `versions` (`rustls::DEFAULT_VERSIONS`:
/// the defaults), and ALPN http/1.1 with `alpn`.
pub fn connector(
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: bool,
) -> tokio_rustls::TlsConnector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cfg = rustls::ClientConfig::builder_with_protocol_versions(versions)
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Capture::default()))
        .with_no_client_auth();
    if alpn {
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// Opens a TLS connection with `sni` (HTTP/1.1 ALPN) and returns it with the server's certificate.
pub async fn tls(addr: SocketAddr, sni: &str) -> (TlsStream<TcpStream>, CertificateDer<'static>) {
    let tcp = super::within(STEP, "connecting", TcpStream::connect(addr))
        .await
        .expect("connect");
    tls_over(tcp, sni).await
}

/// [`tls`] over a TCP connection the caller opened (with its own socket options).
pub async fn tls_over(tcp: TcpStream, sni: &str) -> (TlsStream<TcpStream>, CertificateDer<'static>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let capture = Arc::new(Capture::default());
    let mut cfg = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    let stream = super::within(STEP, "the TLS handshake", connector.connect(name, tcp))
        .await
        .expect("TLS handshake");
    let cert = capture.0.lock().unwrap().clone().expect("a certificate");
    (stream, cert)
}

/// DNS names of a certificate.
pub fn cert_names(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).expect("parse certificate");
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return vec![];
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// Sends raw bytes over TLS and reads the response head (or until the connection closes).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let (mut s, _) = tls(addr, "localhost").await;
    super::within(STEP, "sending the request", s.write_all(request))
        .await
        .expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Writes `request` over TLS and reads until the gateway closes (or 10 s pass).
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let (mut s, _) = tls(addr, "localhost").await;
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The deadline of one step of a client (connect, handshake, one write or read).
pub const STEP: Duration = Duration::from_secs(10);

/// A plain reqwest client (metrics, Prometheus' API) whose requests have a deadline, unlike
/// `reqwest::get`.
pub fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// The body of `http://{addr}/metrics`.
pub async fn scrape(addr: SocketAddr) -> String {
    let r = plain()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("scrape /metrics");
    r.text().await.expect("the /metrics body")
}

/// Sends `req` (30 s at most): the response, or a panic with the error.
pub async fn send(req: reqwest::RequestBuilder) -> reqwest::Response {
    match super::within(Duration::from_secs(30), "a request", req.send()).await {
        Ok(r) => r,
        Err(e) => panic!("the request failed: {e}"),
    }
}

/// GET `path` on `gw` from `c`, with `headers`: [`send`].
pub async fn fetch(
    c: &reqwest::Client,
    gw: &super::gateway::Gateway,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = c.get(gw.url(path));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    send(req).await
}

/// The value of header `name` of a response, when it is text.
pub fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The header fields as (lowercase name, value).
pub fn fields(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect()
}

/// The HTTP version a client of [`http`] gets: HTTP/2 with `h2`, else HTTP/1.1.
pub fn version(h2: bool) -> reqwest::Version {
    if h2 {
        reqwest::Version::HTTP_2
    } else {
        reqwest::Version::HTTP_11
    }
}

/// GET `path` on `gw` with optional Basic credentials and extra headers, each step bounded
/// by 10 s: the status, the response headers and the body.
pub async fn get(
    c: &reqwest::Client,
    gw: &super::gateway::Gateway,
    path: &str,
    auth: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    const STEP: Duration = Duration::from_secs(10);
    let mut req = c.get(gw.url(path));
    if let Some((u, p)) = auth {
        req = req.basic_auth(u, Some(p));
    }
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let r = super::within(STEP, &format!("GET {path}"), req.send())
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    let h = r.headers().clone();
    let body = super::within(STEP, &format!("the body of {path}"), r.text())
        .await
        .unwrap_or_default();
    (status, h, body)
}

/// The `X-Config` header of the answer to a new request for `/probe`: which configuration
/// serves it.
pub async fn config_version(c: &reqwest::Client, gw: &super::gateway::Gateway) -> Option<String> {
    let r = c.get(gw.url("/probe")).send().await.ok()?;
    Some(r.headers().get("x-config")?.to_str().ok()?.to_owned())
}

/// Polls for up to `limit` until `/probe` is answered by configuration `want`
/// ([`config_version`]), on new requests from `c`.
pub async fn wait_version(c: &reqwest::Client, gw: &super::gateway::Gateway, want: &str, limit: Duration) {
    let what = format!("configuration {want} to serve");
    super::poll_until(limit, &what, || {
        let c = c.clone();
        async move { (config_version(&c, gw).await? == want).then_some(()) }
    })
    .await;
}

/// Plain HTTP to the HTTPS listener `https`: a failed TLS handshake on the gateway's side.
pub async fn not_tls(https: SocketAddr) {
    let connect = TcpStream::connect(https);
    let mut s = super::within(STEP, "connecting", connect).await.unwrap();
    let request = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    super::within(STEP, "writing", request).await.unwrap();
}
