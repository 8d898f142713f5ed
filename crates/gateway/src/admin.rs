//! The metrics listener: `/metrics` (Prometheus text format) and `/healthz`, never public.
//!
//! `[listen] metrics_policy = "NAME"` guards it with that policy's `allow`/`deny` rules,
//! checked on the socket peer (`forwarding.trusted_proxies` does not apply: nothing should
//! sit between Prometheus and this listener). A refused client gets a 403 with a small text
//! body, counted in `gateway_requests_denied_total{route="metrics",reason="ip"}`. `/healthz`
//! answers everyone: it says `ok` and nothing else (what a TCP connect already tells), and
//! `gateway healthcheck` probes it from loopback whatever the list says.

use async_trait::async_trait;
use gateway_proxy::Shared;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use prometheus::Encoder;
use std::sync::Arc;

/// The `route` label of refusals on the metrics listener.
const METRICS_ROUTE: &str = "metrics";

pub struct Admin {
    shared: Arc<Shared>,
}

impl Admin {
    pub fn new(shared: Arc<Shared>) -> Self {
        // The refusal series exists at 0 from the start, like every route's.
        shared
            .metrics
            .requests_denied
            .with_label_values(&[METRICS_ROUTE, "ip"])
            .inc_by(0);
        Admin { shared }
    }

    /// Whether the current configuration's `metrics_policy` lets this client read the
    /// listener (always, without one).
    fn allowed(&self, session: &ServerSession) -> bool {
        let snap = self.shared.snapshot.load();
        let Some(list) = &snap.metrics_access else {
            return true;
        };
        let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        if list.allows(peer) {
            return true;
        }
        self.shared
            .metrics
            .requests_denied
            .with_label_values(&[METRICS_ROUTE, "ip"])
            .inc();
        let client = peer.map_or_else(|| "-".to_owned(), |c| c.to_string());
        tracing::debug!(route = METRICS_ROUTE, reason = "ip", status = 403, client = %client, "request denied");
        false
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        let health = matches!(path.as_str(), "/healthz" | "/health");
        let (status, ctype, body) = if !health && !self.allowed(session) {
            // A refused client gets nothing more on this connection.
            session.set_keepalive(None);
            (403, "text/plain".to_owned(), b"403 Forbidden\n".to_vec())
        } else {
            match path.as_str() {
                "/metrics" => {
                    let m = gateway_proxy::metrics::Metrics::global();
                    let dropped = gateway_proxy::access::dropped_lines();
                    m.access_log_dropped
                        .inc_by(dropped.saturating_sub(m.access_log_dropped.get()));
                    let encoder = prometheus::TextEncoder::new();
                    let mut buf = Vec::new();
                    let _ = encoder.encode(&prometheus::gather(), &mut buf);
                    (200, encoder.format_type().to_owned(), buf)
                }
                "/healthz" | "/health" => (200, "text/plain".to_owned(), b"ok\n".to_vec()),
                _ => (
                    404,
                    "text/plain".to_owned(),
                    b"404 Not Found: try /metrics or /healthz\n".to_vec(),
                ),
            }
        };
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, ctype)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }
}
