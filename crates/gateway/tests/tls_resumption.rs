//! TLS session resumption as configured: `[tls] session_cache` (sessions by ID, shared by
//! every thread) and `session_tickets` (stateless tickets, keys shared by every thread), for
//! TLS 1.2 and 1.3. Each combination is checked on eight connections of one client.

mod harness;

use harness::gateway::simple_config;
use harness::{client, upstream, Gateway};
use rustls::HandshakeKind;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn kinds(gw: &Gateway, version: &'static rustls::SupportedProtocolVersion) -> Vec<HandshakeKind> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cfg = rustls::ClientConfig::builder_with_protocol_versions(&[version])
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(client::Capture::default()))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let mut kinds = Vec::new();
    for _ in 0..8 {
        let work = async {
            let tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut s = connector.connect(name, tcp).await.unwrap();
            let kind = s.get_ref().1.handshake_kind().expect("handshake done");
            // Reading the answer also reads the tickets sent after a TLS 1.3 handshake.
            s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            assert!(buf.starts_with(b"HTTP/1.1 200"));
            kind
        };
        kinds.push(
            tokio::time::timeout(std::time::Duration::from_secs(10), work)
                .await
                .expect("a connection within 10 s"),
        );
    }
    kinds
}

#[tokio::test]
async fn resumption_follows_session_cache_and_tickets() {
    let up = upstream::echo().await;
    for (cache, tickets, resumes) in [
        (20000, true, true),
        (0, true, true),
        (20000, false, true),
        (0, false, false),
    ] {
        let extra = format!("[tls]\nsession_cache = {cache}\nsession_tickets = {tickets}\n");
        let gw = Gateway::start(&simple_config(up.addr, &extra)).await;
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let k = kinds(&gw, version).await;
            assert_eq!(k[0], HandshakeKind::Full);
            let want = if resumes {
                HandshakeKind::Resumed
            } else {
                HandshakeKind::Full
            };
            assert!(
                k[1..].iter().all(|x| *x == want),
                "cache {cache}, tickets {tickets}, {version:?}: {k:?}"
            );
        }
    }
}
