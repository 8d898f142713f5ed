//! The HTTP client instant-acme uses: the platform's roots or a private CA root, an
//! optional HTTPS proxy (CONNECT) for reaching the CA, a connect timeout and a deadline per
//! request, and a record of the CA's last `Retry-After` (instant-acme's problem type drops
//! headers; a rate-limit log line needs it).
//!
//! instant-acme's own client has no timeout at all: a CA endpoint, or a proxy, that accepts
//! the connection and never answers would stall the certificate's loop forever.

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
use std::time::Duration;

/// The most recent `Retry-After` value the CA sent.
#[derive(Default, Debug)]
pub struct RetryAfter(Mutex<Option<String>>);

impl RetryAfter {
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Limits for every request to the CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connection to the CA or to the proxy.
    pub connect: Duration,
    /// The whole request: connection, TLS handshake, proxy CONNECT, response head and body.
    pub request: Duration,
}

/// A request to the CA that did not complete within [`Timeouts::request`].
#[derive(Debug, thiserror::Error)]
#[error("no complete answer from the CA within {0:?} (connection, TLS handshake, proxy CONNECT or response)")]
pub struct RequestTimeout(pub Duration);

struct Recording {
    inner: Box<dyn HttpClient>,
    retry_after: Arc<RetryAfter>,
    limit: Duration,
}

impl HttpClient for Recording {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.inner.request(req);
        let slot = self.retry_after.clone();
        let limit = self.limit;
        Box::pin(async move {
            let whole = async move {
                let rsp = fut.await?;
                if let Some(v) = rsp
                    .parts
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                {
                    *slot.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(v.to_owned());
                }
                // The body is read here, inside the deadline: a CA that sends its headers and
                // then stalls would otherwise hang whoever reads the body later.
                let BytesResponse { parts, mut body } = rsp;
                let bytes = body.into_bytes().await.map_err(instant_acme::Error::Other)?;
                Ok::<_, instant_acme::Error>(BytesResponse {
                    parts,
                    body: Box::new(bytes),
                })
            };
            match tokio::time::timeout(limit, whole).await {
                Ok(result) => result,
                Err(_) => Err(instant_acme::Error::Other(Box::new(RequestTimeout(limit)))),
            }
        })
    }
}

/// Why no HTTP client for the CA could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("ca_root {}", path.display())]
    CaRootFile {
        path: std::path::PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("ca_root {}: not a usable CA certificate", path.display())]
    CaRootCertificate {
        path: std::path::PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("system roots")]
    SystemRoots(#[source] rustls::Error),
    #[error("https_proxy `{proxy}`")]
    Proxy {
        proxy: String,
        #[source]
        source: http::uri::InvalidUri,
    },
}

fn tls_config(ca_root: Option<&Path>) -> Result<rustls::ClientConfig, ClientError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let builder = rustls::ClientConfig::builder();
    match ca_root {
        Some(path) => {
            let file = |source| ClientError::CaRootFile {
                path: path.to_path_buf(),
                source,
            };
            let mut roots = rustls::RootCertStore::empty();
            for der in CertificateDer::pem_file_iter(path).map_err(file)? {
                roots
                    .add(der.map_err(file)?)
                    .map_err(|source| ClientError::CaRootCertificate {
                        path: path.to_path_buf(),
                        source,
                    })?;
            }
            Ok(builder.with_root_certificates(roots).with_no_client_auth())
        }
        None => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .map(|b| b.with_no_client_auth())
                .map_err(ClientError::SystemRoots)
        }
    }
}

/// An account builder for the configured CA root, proxy and timeouts.
pub fn builder(
    ca_root: Option<&Path>,
    proxy: Option<&str>,
    retry_after: Arc<RetryAfter>,
    timeouts: Timeouts,
) -> Result<AccountBuilder, ClientError> {
    let tls = tls_config(ca_root)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeouts.connect));
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
            let proxy_uri: http::Uri = proxy.parse().map_err(|source| ClientError::Proxy {
                proxy: proxy.to_owned(),
                source,
            })?;
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
        limit: timeouts.request,
    })))
}
