//! A recording proxy in front of Pebble for the ACME profile tests: Debian's Pebble (2.4)
//! predates draft-ietf-acme-profiles, so this proxy adds `meta.profiles` to its directory
//! and records the `profile` field of every newOrder payload Pebble accepted, passing everything else
//! through unchanged. It terminates TLS with Pebble's own listener certificate (the
//! gateway's `ca_root`) and forwards with the client's `Host`, so every URL Pebble writes
//! points back at the proxy and Pebble's JWS `url` checks hold.

use super::pebble::Pebble;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub struct ProfilesProxy {
    pub addr: SocketAddr,
    /// The `profile` of each order Pebble created, in order (`None`: the order named none).
    pub orders: Arc<Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ProfilesProxy {
    /// Starts the proxy for `pebble`, its directory offering `profiles` (name, description).
    pub async fn start(pebble: &Pebble, profiles: &[(&str, &str)]) -> ProfilesProxy {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pebble.listener_root())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(pebble.dir.path().join("listener.key")).unwrap();
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let orders: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let meta: serde_json::Map<String, serde_json::Value> = profiles
            .iter()
            .map(|(n, d)| (n.to_string(), serde_json::Value::String(d.to_string())))
            .collect();
        let upstream = pebble.acme;
        // HTTP/1.1 only: over HTTP/2 the `Host` given here would become Pebble's own
        // `:authority`, and its URLs would bypass the proxy.
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .http1_only()
            .build()
            .unwrap();
        let seen = orders.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, client, seen, meta) =
                    (acceptor.clone(), client.clone(), seen.clone(), meta.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        forward(req, upstream, client.clone(), seen.clone(), meta.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        ProfilesProxy { addr, orders, task }
    }

    /// The directory URL to configure instead of Pebble's.
    pub fn directory(&self) -> String {
        format!("https://localhost:{}/dir", self.addr.port())
    }

    pub fn orders(&self) -> Vec<Option<String>> {
        self.orders.lock().unwrap().clone()
    }
}

impl Drop for ProfilesProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `profile` field of a newOrder's JWS payload (RFC 7515 flattened JSON, base64url).
fn order_profile(body: &[u8]) -> Option<Option<String>> {
    let jws: serde_json::Value = serde_json::from_slice(body).ok()?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jws.get("payload")?.as_str()?)
        .ok()?;
    let order: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    order.get("identifiers")?;
    Some(order.get("profile").and_then(|p| p.as_str()).map(str::to_owned))
}

async fn forward(
    req: hyper::Request<Incoming>,
    upstream: SocketAddr,
    client: reqwest::Client,
    seen: Arc<Mutex<Vec<Option<String>>>>,
    meta: serde_json::Map<String, serde_json::Value>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    let profile = (parts.method == hyper::Method::POST && path.starts_with("/order-plz"))
        .then(|| order_profile(&body))
        .flatten();
    let mut out = client.request(
        parts.method.clone(),
        format!("https://127.0.0.1:{}{path}", upstream.port()),
    );
    for (name, value) in &parts.headers {
        out = out.header(name, value);
    }
    let answer = match out.body(body).send().await {
        Ok(a) => a,
        Err(e) => {
            return Ok(hyper::Response::builder()
                .status(502)
                .body(Full::new(Bytes::from(e.to_string())))
                .unwrap())
        }
    };
    // Only orders Pebble created count: a newOrder it refused with badNonce (5 % of
    // requests by default) is sent again by the client, as RFC 8555 section 6.5 asks.
    if let (Some(p), 201) = (profile, answer.status().as_u16()) {
        seen.lock().unwrap().push(p);
    }
    let mut rsp = hyper::Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            rsp = rsp.header(name.as_str(), value.as_bytes());
        }
    }
    let mut bytes = answer.bytes().await.unwrap_or_default();
    if path == "/dir" {
        if let Ok(mut dir) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            dir["meta"]["profiles"] = serde_json::Value::Object(meta);
            bytes = Bytes::from(dir.to_string());
        }
    }
    Ok(rsp.body(Full::new(bytes)).unwrap())
}
