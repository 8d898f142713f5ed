//! End-to-end benchmarks. `benches/compare.sh` runs the side-by-side comparison with nginx;
//! the `bench-tool` binary provides the load generators and upstreams that wrk and h2load
//! do not (WebSocket echo, SSE fan-out, idle TLS connections) and the shared certificate.

use std::sync::Arc;

/// A TLS client (ALPN http/1.1) that accepts any certificate (the benchmarks make their own),
/// with a session store of its own; TLS 1.2 only when `tls12_only`. Uses the process's rustls
/// provider (install one first: the workspace enables two).
pub fn client_config(tls12_only: bool) -> rustls::ClientConfig {
    #[derive(Debug)]
    struct Any;
    impl rustls::client::danger::ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let builder = if tls12_only {
        rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        rustls::ClientConfig::builder()
    };
    let mut cfg = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Any))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg
}
