//! `forward_auth = { url, copy_headers, timeout }`: each request is first asked of an auth
//! service (nginx `auth_request`, Caddy `forward_auth`, Traefik ForwardAuth; how Authelia,
//! Authentik and oauth2-proxy protect an application).
//!
//! - The question: `GET <url>` over HTTP/1.1 to the address `url`'s host resolves to
//!   (through the gateway's resolver, like an upstream: `dns.rs`), with `Host` the url's
//!   authority and, from the client's request, `Cookie`, `Authorization`, `Accept`,
//!   `User-Agent` and `X-Requested-With` (services choose between a 401 and a redirect to
//!   their login page by the last three), plus `X-Forwarded-Method`, `X-Forwarded-Proto`,
//!   `X-Forwarded-Host` (the request's host, port included), `X-Forwarded-Uri` (path and
//!   query as the client sent them), `X-Forwarded-For` (the client address established
//!   through `forwarding.trusted_proxies`), and `X-Original-Method` / `X-Original-URL`
//!   (`scheme://host/uri`: what nginx configurations set for `auth_request`, and what
//!   Authelia's nginx endpoint reads). No body.
//! - Connections are kept alive and reused (hyper's pooled client, one per worker thread,
//!   so a connection stays on the thread that uses it; idle ones are closed after
//!   [`IDLE_TIMEOUT`]).
//! - The whole exchange (DNS, connect, answer head, and the answer body, read up to
//!   [`MAX_ANSWER_BODY`]) has `timeout`.
//! - A 2xx lets the request through: the headers named in `copy_headers` are taken from the
//!   answer (every value) and set on the proxied request. The dispatcher removes the
//!   client's own copies of those names whatever the answer, so a client cannot send its
//!   own `Remote-User`.
//! - Any other status (401, 403, a 302 to the login page) goes back to the client as it
//!   is: the status, its `Location`, every `Set-Cookie`, `WWW-Authenticate`,
//!   `Content-Type`, `Retry-After` and the body.
//! - A service that cannot be asked (no address, connection refused, timed out, a malformed
//!   answer, a 1xx, a body over the limit): 503, never a pass, logged at warn with the
//!   policy's url and the cause. A failed connection has the name resolved again (at most
//!   once a second), like an upstream's.

use super::{DenyReason, Refusal, RequestFacts};
use crate::state::Shared;
use bytes::Bytes;
use gateway_config::ForwardAuth;
use http::{header, HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use thread_local::ThreadLocal;

/// Longest auth answer body read (and passed back to the client); longer is a failure (503).
pub const MAX_ANSWER_BODY: usize = 64 * 1024;

/// Idle connections to the auth service are closed after this (checked when one is taken).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle connections kept per worker thread.
const MAX_IDLE: usize = 16;

/// Client request headers sent on to the auth service as they are.
const FORWARDED: [HeaderName; 5] = [
    header::COOKIE,
    header::AUTHORIZATION,
    header::ACCEPT,
    header::USER_AGENT,
    HeaderName::from_static("x-requested-with"),
];

/// Headers of a refusing answer passed back to the client.
const PASSED_BACK: [HeaderName; 5] = [
    header::LOCATION,
    header::SET_COOKIE,
    header::WWW_AUTHENTICATE,
    header::CONTENT_TYPE,
    header::RETRY_AFTER,
];

type AuthClient = Client<HttpConnector, Empty<Bytes>>;

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");

pub struct ForwardAuthFilter {
    cfg: ForwardAuth,
    copy_headers: Vec<HeaderName>,
    /// `Host` of the auth request: the url's authority (port left out when 80).
    host: Option<HeaderValue>,
    /// One pooled client per worker thread.
    clients: ThreadLocal<AuthClient>,
}

fn client() -> AuthClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    // Bounded by the policy's timeout, around the whole exchange.
    connector.set_connect_timeout(None);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(MAX_IDLE)
        .build(connector)
}

/// Why the auth service could not answer (logged; the client gets 503).
enum Failure {
    Dns(String),
    Exchange(String),
    TimedOut,
    Malformed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Dns(e) => write!(f, "cannot resolve the auth service: {e}"),
            Failure::Exchange(e) => write!(f, "cannot ask the auth service: {e}"),
            Failure::TimedOut => f.write_str("the auth service did not answer within the timeout"),
            Failure::Malformed(e) => write!(f, "the auth service answered something unusable: {e}"),
        }
    }
}

/// The auth service's answer, read whole.
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl ForwardAuthFilter {
    pub fn new(cfg: &ForwardAuth) -> Self {
        let host = if cfg.host.contains(':') {
            format!("[{}]", cfg.host)
        } else {
            cfg.host.clone()
        };
        let authority = if cfg.port == 80 {
            host
        } else {
            format!("{host}:{}", cfg.port)
        };
        ForwardAuthFilter {
            cfg: cfg.clone(),
            copy_headers: cfg
                .copy_headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            host: HeaderValue::from_str(&authority).ok(),
            clients: ThreadLocal::new(),
        }
    }

    /// The `copy_headers` names (removed from the client's request whatever the answer).
    pub fn copy_header_names(&self) -> &[HeaderName] {
        &self.copy_headers
    }

    /// The headers to copy onto the proxied request (2xx), or the auth service's answer
    /// (any other status), or 503 when it cannot be asked.
    pub async fn check(
        &self,
        facts: &RequestFacts<'_>,
        shared: &Shared,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Refusal> {
        let asked = pingora_timeout::fast_timeout::fast_timeout(self.cfg.timeout, self.ask(facts, shared));
        let answer = match asked.await {
            Ok(Ok(a)) => a,
            Ok(Err(failure)) => return Err(self.unavailable(&failure)),
            Err(_) => return Err(self.unavailable(&Failure::TimedOut)),
        };
        if (200..300).contains(&answer.status) {
            let mut copied = Vec::new();
            for name in &self.copy_headers {
                for v in answer.headers.get_all(name) {
                    copied.push((name.clone(), v.clone()));
                }
            }
            return Ok(copied);
        }
        let mut r = Refusal::new(answer.status, DenyReason::ForwardAuth);
        for name in &PASSED_BACK {
            for v in answer.headers.get_all(name) {
                r.headers.push((name.clone(), v.clone()));
            }
        }
        r.body = Some(answer.body);
        Err(r)
    }

    fn unavailable(&self, failure: &Failure) -> Refusal {
        tracing::warn!(url = %self.cfg.url, "forward_auth: {failure}; answering 503");
        Refusal::new(503, DenyReason::ForwardAuth)
    }

    /// One exchange with the auth service (the caller bounds it with the timeout).
    async fn ask(&self, facts: &RequestFacts<'_>, shared: &Shared) -> Result<Answer, Failure> {
        let (host, port) = (&self.cfg.host, self.cfg.port);
        let addr = shared
            .dns
            .resolve(host, port)
            .await
            .map_err(|e| Failure::Dns(gateway_tls::error_chain(&e)))?;
        let uri: http::Uri = format!("http://{addr}{}", self.cfg.path)
            .parse()
            .map_err(|e: http::uri::InvalidUri| Failure::Malformed(format!("url path: {e}")))?;
        let mut req = Request::new(Empty::<Bytes>::new());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = uri;
        self.question_headers(facts, req.headers_mut());
        let client = self.clients.get_or(client);
        let resp = client.request(req).await.map_err(|e| {
            if e.is_connect() {
                shared.dns.invalidate(host, port);
            }
            Failure::Exchange(gateway_tls::error_chain(&e))
        })?;
        let status = resp.status().as_u16();
        if status < 200 {
            return Err(Failure::Malformed(format!("status {status}")));
        }
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_ANSWER_BODY)
            .collect()
            .await
            .map_err(|e| Failure::Malformed(format!("the body: {}", gateway_tls::error_chain(&*e))))?
            .to_bytes();
        Ok(Answer {
            status,
            headers: parts.headers,
            body,
        })
    }

    /// The auth request's headers (module comment).
    fn question_headers(&self, facts: &RequestFacts<'_>, h: &mut http::HeaderMap) {
        let req = facts.req;
        if let Some(host) = &self.host {
            h.insert(header::HOST, host.clone());
        }
        for name in &FORWARDED {
            let mut values = req.headers.get_all(name).iter();
            let Some(first) = values.next() else { continue };
            if *name == header::COOKIE {
                // HTTP/2 may carry several cookie fields; one line for HTTP/1.1 (RFC 9113 §8.2.3).
                let mut joined = first.as_bytes().to_vec();
                for v in values {
                    joined.extend_from_slice(b"; ");
                    joined.extend_from_slice(v.as_bytes());
                }
                if let Ok(v) = HeaderValue::from_bytes(&joined) {
                    h.insert(header::COOKIE, v);
                }
            } else {
                h.insert(name.clone(), first.clone());
            }
        }
        h.insert(X_FORWARDED_METHOD, method_value(&req.method));
        h.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if facts.scheme == "http" { "http" } else { "https" }),
        );
        let host = crate::headers::request_host(req).unwrap_or("");
        let uri = req.uri.path_and_query().map_or("/", |p| p.as_str());
        if let Ok(v) = HeaderValue::from_str(host) {
            h.insert(X_FORWARDED_HOST, v);
        }
        if let Ok(v) = HeaderValue::from_str(uri) {
            h.insert(X_FORWARDED_URI, v);
        }
        if let Some(client) = facts.client {
            if let Ok(v) = HeaderValue::from_str(&client.to_string()) {
                h.insert(X_FORWARDED_FOR, v);
            }
        }
        h.insert(X_ORIGINAL_METHOD, method_value(&req.method));
        if let Ok(v) = HeaderValue::from_str(&format!("{}://{host}{uri}", facts.scheme)) {
            h.insert(X_ORIGINAL_URL, v);
        }
    }
}

fn method_value(m: &Method) -> HeaderValue {
    // A method is a token: always a valid field value.
    HeaderValue::from_str(m.as_str()).unwrap_or_else(|_| HeaderValue::from_static("GET"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url_host: &str, port: u16) -> ForwardAuth {
        ForwardAuth {
            url: format!("http://{url_host}:{port}/api/verify"),
            host: url_host.trim_matches(['[', ']']).to_owned(),
            port,
            path: "/api/verify".into(),
            copy_headers: vec!["Remote-User".into(), "bad name".into()],
            timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn the_question_carries_the_client_credentials_and_the_original_request() {
        let f = ForwardAuthFilter::new(&cfg("authelia", 9091));
        assert_eq!(f.copy_header_names(), &[HeaderName::from_static("remote-user")]);
        let mut req = pingora_http::RequestHeader::build("POST", b"/app/x?q=1", None).unwrap();
        req.insert_header("host", "example.com:8443").unwrap();
        req.append_header("cookie", "a=1").unwrap();
        req.append_header("cookie", "session=good").unwrap();
        req.insert_header("authorization", "Bearer t").unwrap();
        req.insert_header("remote-user", "admin").unwrap();
        req.insert_header("content-length", "3").unwrap();
        let facts = RequestFacts {
            req: &req,
            client: Some("192.0.2.7".parse().unwrap()),
            scheme: "https",
        };
        let mut h = http::HeaderMap::new();
        f.question_headers(&facts, &mut h);
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("-");
        for (name, want) in [
            ("host", "authelia:9091"),
            ("cookie", "a=1; session=good"),
            ("authorization", "Bearer t"),
            ("x-forwarded-method", "POST"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "example.com:8443"),
            ("x-forwarded-uri", "/app/x?q=1"),
            ("x-forwarded-for", "192.0.2.7"),
            ("x-original-method", "POST"),
            ("x-original-url", "https://example.com:8443/app/x?q=1"),
            // Nothing else of the client's request: no spoofed copy header, no body framing.
            ("remote-user", "-"),
            ("content-length", "-"),
        ] {
            assert_eq!(get(name), want, "{name}");
        }
    }

    #[test]
    fn the_host_is_the_urls_authority() {
        let f = ForwardAuthFilter::new(&cfg("auth", 80));
        assert_eq!(f.host.as_ref().unwrap(), "auth");
        let f = ForwardAuthFilter::new(&cfg("[::1]", 9091));
        assert_eq!(f.host.as_ref().unwrap(), "[::1]:9091");
    }
}
