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
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_tls12_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Opens a TLS connection with `sni` (HTTP/1.1 ALPN) and returns it with the server's certificate.
pub async fn tls(addr: SocketAddr, sni: &str) -> (TlsStream<TcpStream>, CertificateDer<'static>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let capture = Arc::new(Capture::default());
    let mut cfg = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = super::within(STEP, "connecting", TcpStream::connect(addr))
        .await
        .expect("connect");
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
