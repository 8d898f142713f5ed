//! The metrics listener: `/metrics` (Prometheus text format) and `/healthz`, never public.

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use prometheus::Encoder;

pub struct Admin;

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (status, ctype, body) = match session.req_header().uri.path() {
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
        };
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, ctype)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }
}
