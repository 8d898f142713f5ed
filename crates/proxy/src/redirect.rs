//! The plain-HTTP listener: `301 https://$host$request_uri` for every method, except ACME
//! HTTP-01 challenges, answered from memory (built-in ACME) or a certbot webroot.
//!
//! Every request is logged in the access log (same format as the HTTPS listener, `$scheme`
//! `http`) and counted in `gateway_requests_total` under the fixed route labels
//! [`REDIRECT_ROUTE`] and [`CHALLENGE_ROUTE`] (never from the request: no series per path).

use crate::state::Shared;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use std::sync::Arc;

const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// `route` label and `$route` of a redirect.
pub const REDIRECT_ROUTE: &str = "redirect";
/// `route` label and `$route` of an ACME HTTP-01 challenge request (answered or 404).
pub const CHALLENGE_ROUTE: &str = "acme-challenge";

pub struct Redirect {
    pub shared: Arc<Shared>,
}

/// The `Location` for a plain-HTTP request: same host (port dropped), same target.
pub fn location(host: Option<&str>, target: &str, https_port: u16) -> String {
    let name = host
        .map(gateway_routing::normalize_host)
        .unwrap_or_else(|| "localhost".into());
    let name = if name.contains(':') && !name.starts_with('[') {
        format!("[{name}]")
    } else {
        name.into_owned()
    };
    if https_port == 443 {
        format!("https://{name}{target}")
    } else {
        format!("https://{name}:{https_port}{target}")
    }
}

#[async_trait]
impl ServeHttp for Redirect {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let started = std::time::Instant::now();
        let snap = self.shared.snapshot.load();
        // gateway error pages: `$request_id`, and the 404's page and `X-Request-Id`.
        let request_id: u128 = rand::random();
        let mut page_type = None;
        let req = session.req_header();
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let host = crate::headers::request_host(req).map(str::to_owned);
        let challenge = req.uri.path().starts_with(CHALLENGE_PREFIX);
        let answer = match req.uri.path().strip_prefix(CHALLENGE_PREFIX) {
            Some(token) => Some(
                match self.shared.challenges.answer(
                    token,
                    snap.config.acme.as_ref().map(|a| a.storage.as_path()),
                    snap.config.server.acme_webroot.as_deref(),
                ) {
                    Some(b) => Some(b),
                    None => self.shared.challenges.answer_remote(token).await,
                },
            ),
            None => None,
        };
        let (status, body, location) = if let Some(answer) = answer {
            match answer {
                Some(body) => (StatusCode::OK, body, None),
                None => {
                    let format = crate::error_page::Format::of(&req.headers);
                    let page =
                        crate::error_page::render(Some(&snap.error_pages), 404, false, format, request_id);
                    page_type = Some(page.content_type);
                    (StatusCode::NOT_FOUND, page.body.to_vec(), None)
                }
            }
        } else {
            let loc = location(host.as_deref(), &target, snap.config.listen.public_https_port);
            (
                StatusCode::MOVED_PERMANENTLY,
                b"301 Moved Permanently\n".to_vec(),
                Some(loc),
            )
        };
        let mut b = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, page_type.unwrap_or("text/plain"));
        if page_type.is_some() {
            b = b
                .header(http::header::VARY, "Accept")
                .header(http::header::CACHE_CONTROL, "no-store")
                .header(crate::respond::REQUEST_ID, format!("{request_id:032x}"));
        }
        for ((n, _), v) in &snap.security_headers {
            b = b.header(n, v);
        }
        if let Some(l) = location {
            b = b.header(http::header::LOCATION, l);
        }
        let body = if session.req_header().method == http::Method::HEAD {
            Vec::new()
        } else {
            body
        };
        let route = if challenge {
            CHALLENGE_ROUTE
        } else {
            REDIRECT_ROUTE
        };
        self.account(
            session,
            &snap,
            route,
            status.as_u16(),
            body.len() as u64,
            started,
            request_id,
        );
        b.header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }
}

impl Redirect {
    /// The access line and the request metrics of one answer (`bytes`: the body sent).
    #[allow(clippy::too_many_arguments)] // gateway error pages: `request_id` made it eight
    fn account(
        &self,
        session: &ServerSession,
        snap: &crate::state::Snapshot,
        route: &'static str,
        status: u16,
        bytes: u64,
        started: std::time::Instant,
        request_id: u128,
    ) {
        let req = session.req_header();
        let m = &self.shared.metrics;
        let elapsed = started.elapsed();
        m.requests
            .with_label_values(&[
                route,
                crate::metrics::method_label(&req.method),
                crate::metrics::status_class(status),
            ])
            .inc();
        m.duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        m.bytes_sent.inc_by(bytes);
        crate::access::log(
            &snap.config.logging.access_log,
            &crate::access::Entry {
                client: crate::state::client_addr(session.client_addr()),
                req,
                scheme: "http",
                status,
                bytes,
                duration: elapsed,
                route,
                upstream: "-",
                upstream_addr: None,
                remote_user: None,
                request_id,
                tls: None,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::location;

    #[test]
    fn redirect_location() {
        assert_eq!(location(Some("ex.com:80"), "/a?b=1", 443), "https://ex.com/a?b=1");
        assert_eq!(location(Some("ex.com"), "/", 8443), "https://ex.com:8443/");
        assert_eq!(location(None, "/x", 443), "https://localhost/x");
    }
}
