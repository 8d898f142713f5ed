//! Prometheus metrics, all in the `prometheus` crate's default registry (the one that
//! `pingora-prometheus`-style exporters and our `/metrics` endpoint both read).
//!
//! Labels come only from configured route and upstream names and fixed vocabularies, so an
//! unknown Host or path never creates a new series.

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};
use std::sync::{Arc, OnceLock};

pub struct Metrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub upstream_retries: IntCounterVec,
    pub open_connections: IntGauge,
    pub open_websockets: IntGauge,
    pub open_sse: IntGauge,
    pub tls_handshakes: IntCounter,
    pub tls_handshake_failures: IntCounter,
    pub bytes_received: IntCounter,
    pub bytes_sent: IntCounter,
    pub cert_expiry: IntGaugeVec,
    /// 1 while a generated self-signed stand-in is served under that certificate's name.
    pub cert_placeholder: IntGaugeVec,
    /// Certificate files that could not be loaded (corrupt PEM, key not matching the chain).
    pub cert_load_failures: IntCounterVec,
    /// Access lines dropped because the writer thread's queue was full.
    pub access_log_dropped: IntCounter,
    pub acme_renewals: IntCounterVec,
    pub acme_failures: IntCounterVec,
    pub reloads: IntCounter,
    pub reload_failures: IntCounter,
    pub last_reload_success: IntGauge,
}

static GLOBAL: OnceLock<Arc<Metrics>> = OnceLock::new();

impl Metrics {
    /// The process-wide metrics (registered once in the default registry).
    pub fn global() -> Arc<Metrics> {
        GLOBAL.get_or_init(|| Arc::new(Metrics::register())).clone()
    }

    fn register() -> Metrics {
        // Registration only fails on a duplicate name, which `OnceLock` rules out.
        let m = Metrics {
            requests: register_int_counter_vec!(
                "gateway_requests_total",
                "Requests by route, method and status class",
                &["route", "method", "status"]
            )
            .expect("register"),
            duration: register_histogram_vec!(
                "gateway_request_duration_seconds",
                "Time from request header to the end of the response, by route",
                &["route"],
                vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
            )
            .expect("register"),
            upstream_errors: register_int_counter_vec!(
                "gateway_upstream_errors_total",
                "Failed upstream connections and responses, by upstream and kind",
                &["upstream", "kind"]
            )
            .expect("register"),
            upstream_retries: register_int_counter_vec!(
                "gateway_upstream_retries_total",
                "Requests sent again on a new connection after a pooled one turned out closed, by upstream",
                &["upstream"]
            )
            .expect("register"),
            open_connections: register_int_gauge!("gateway_open_connections", "Open client connections")
                .expect("register"),
            open_websockets: register_int_gauge!(
                "gateway_open_websockets",
                "Open upgraded (WebSocket) connections"
            )
            .expect("register"),
            open_sse: register_int_gauge!("gateway_open_sse_streams", "Open Server-Sent Events streams")
                .expect("register"),
            tls_handshakes: register_int_counter!("gateway_tls_handshakes_total", "Completed TLS handshakes")
                .expect("register"),
            tls_handshake_failures: register_int_counter!(
                "gateway_tls_handshake_failures_total",
                "Failed TLS handshakes"
            )
            .expect("register"),
            bytes_received: register_int_counter!(
                "gateway_bytes_received_total",
                "Request body bytes received from clients"
            )
            .expect("register"),
            bytes_sent: register_int_counter!(
                "gateway_bytes_sent_total",
                "Response body bytes sent to clients"
            )
            .expect("register"),
            cert_expiry: register_int_gauge_vec!(
                "gateway_certificate_expiry_timestamp_seconds",
                "Not-after time of each served certificate",
                &["certificate"]
            )
            .expect("register"),
            cert_placeholder: register_int_gauge_vec!(
                "gateway_certificate_placeholder",
                "1 while a self-signed placeholder is served instead of the real certificate",
                &["certificate"]
            )
            .expect("register"),
            cert_load_failures: register_int_counter_vec!(
                "gateway_certificate_load_failures_total",
                "Certificate files refused at load or reload (the previous certificate stays)",
                &["certificate"]
            )
            .expect("register"),
            access_log_dropped: register_int_counter!(
                "gateway_access_log_dropped_total",
                "Access lines dropped because the log writer could not keep up"
            )
            .expect("register"),
            acme_renewals: register_int_counter_vec!(
                "gateway_acme_renewals_total",
                "ACME issuance and renewal attempts",
                &["certificate"]
            )
            .expect("register"),
            acme_failures: register_int_counter_vec!(
                "gateway_acme_renewal_failures_total",
                "Failed ACME issuance and renewal attempts",
                &["certificate"]
            )
            .expect("register"),
            reloads: register_int_counter!("gateway_config_reloads_total", "Configuration reloads attempted")
                .expect("register"),
            reload_failures: register_int_counter!(
                "gateway_config_reload_failures_total",
                "Configuration reloads refused"
            )
            .expect("register"),
            last_reload_success: register_int_gauge!(
                "gateway_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful configuration load"
            )
            .expect("register"),
        };
        let build = register_int_gauge_vec!("gateway_build_info", "Build information", &["version"])
            .expect("register");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        m
    }
}

/// `GET`, `POST`... or `OTHER`, so arbitrary methods cannot create series.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}
