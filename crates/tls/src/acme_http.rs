//! The HTTP client instant-acme uses: the platform's roots or a private CA root, and an
//! optional HTTPS proxy (CONNECT) for reaching the CA.

use bytes::Bytes;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{Account, AccountBuilder, BodyWrapper};
use std::path::Path;

fn tls_config(ca_root: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let builder = rustls::ClientConfig::builder();
    match ca_root {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for der in
                CertificateDer::pem_file_iter(path).map_err(|e| format!("ca_root {}: {e}", path.display()))?
            {
                let der = der.map_err(|e| format!("ca_root {}: {e}", path.display()))?;
                roots
                    .add(der)
                    .map_err(|e| format!("ca_root {}: {e}", path.display()))?;
            }
            Ok(builder.with_root_certificates(roots).with_no_client_auth())
        }
        None => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .map(|b| b.with_no_client_auth())
                .map_err(|e| format!("system roots: {e}"))
        }
    }
}

/// An account builder for the configured CA root and proxy.
pub fn builder(ca_root: Option<&Path>, proxy: Option<&str>) -> Result<AccountBuilder, String> {
    match (ca_root, proxy) {
        (None, None) => Account::builder().map_err(|e| e.to_string()),
        (Some(root), None) => {
            Account::builder_with_root(root).map_err(|e| format!("ca_root {}: {e}", root.display()))
        }
        (_, Some(proxy)) => {
            let proxy_uri: http::Uri = proxy.parse().map_err(|e| format!("https_proxy `{proxy}`: {e}"))?;
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            let tunnel = Tunnel::new(proxy_uri, http);
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls_config(ca_root)?)
                .https_only()
                .enable_http1()
                .wrap_connector(tunnel);
            let client: Client<_, BodyWrapper<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
            Ok(Account::builder_with_http(Box::new(client)))
        }
    }
}
