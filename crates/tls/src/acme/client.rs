//! The HTTP client instant-acme uses: the platform's roots or a private CA root, an
//! optional HTTPS proxy (CONNECT) for reaching the CA, and a record of the CA's last
//! `Retry-After` (instant-acme's problem type drops headers; a rate-limit log line needs it).

use bytes::Bytes;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{Account, AccountBuilder, BodyWrapper, BytesResponse, HttpClient};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// The most recent `Retry-After` value the CA sent.
#[derive(Default, Debug)]
pub struct RetryAfter(Mutex<Option<String>>);

impl RetryAfter {
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

struct Recording {
    inner: Box<dyn HttpClient>,
    retry_after: Arc<RetryAfter>,
}

impl HttpClient for Recording {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.inner.request(req);
        let slot = self.retry_after.clone();
        Box::pin(async move {
            let rsp = fut.await?;
            if let Some(v) = rsp
                .parts
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
            {
                *slot.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(v.to_owned());
            }
            Ok(rsp)
        })
    }
}

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
pub fn builder(
    ca_root: Option<&Path>,
    proxy: Option<&str>,
    retry_after: Arc<RetryAfter>,
) -> Result<AccountBuilder, String> {
    let tls = tls_config(ca_root)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let inner: Box<dyn HttpClient> = match proxy {
        None => {
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_only()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http);
            Box::new(Client::builder(TokioExecutor::new()).build::<_, BodyWrapper<Bytes>>(https))
        }
        Some(proxy) => {
            let proxy_uri: http::Uri = proxy.parse().map_err(|e| format!("https_proxy `{proxy}`: {e}"))?;
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_only()
                .enable_http1()
                .wrap_connector(Tunnel::new(proxy_uri, http));
            Box::new(Client::builder(TokioExecutor::new()).build::<_, BodyWrapper<Bytes>>(https))
        }
    };
    Ok(Account::builder_with_http(Box::new(Recording {
        inner,
        retry_after,
    })))
}
