//! Prometheus metrics, all in the `prometheus` crate's default registry (the one that
//! `pingora-prometheus`-style exporters and our `/metrics` endpoint both read).
//!
//! Labels come only from configured route and upstream names and fixed vocabularies, so an
//! unknown Host or path never creates a new series. [`Metrics::init_series`] creates the
//! labelled counters of every configured name at 0 (at start and at each reload), so the
//! first event is an increase Prometheus sees (`increase(...) > 0` would miss a series that
//! appears at 1). With the `prometheus` crate's `process` feature the default registry also
//! holds its process collector (`process_cpu_seconds_total`, `process_open_fds`,
//! `process_max_fds`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_start_time_seconds`, `process_threads`), registered by the crate itself.

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};
use std::sync::{Arc, OnceLock};

/// Every `kind` of `gateway_upstream_errors_total` (proxy.rs sets them).
pub const UPSTREAM_ERROR_KINDS: [&str; 8] = [
    "dns",
    "unavailable",
    "connect_refused",
    "connect_timeout",
    "connect_error",
    "timeout",
    "protocol",
    "response",
];

/// Every `result` of `gateway_acme_orders_total`.
pub const ACME_ORDER_RESULTS: [&str; 2] = ["success", "failure"];

/// The `method` labels of `gateway_requests_total` ([`method_label`]).
pub const METHOD_LABELS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "OTHER",
];

pub struct Metrics {
    pub requests: IntCounterVec,
    /// Requests refused by a policy, by route and reason (`auth`, `forward_auth`, `ip`,
    /// `rate`, `maintenance`).
    pub requests_denied: IntCounterVec,
    pub duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub upstream_retries: IntCounterVec,
    /// 1 while a server of a group takes requests (active and passive health), by upstream
    /// and server address.
    pub upstream_server_up: IntGaugeVec,
    /// Attempts sent to each server, by upstream and server address.
    pub upstream_requests: IntCounterVec,
    pub open_connections: IntGauge,
    pub open_websockets: IntGauge,
    pub open_sse: IntGauge,
    /// By `version` (`TLSv1.2`, `TLSv1.3`) and key exchange `group` ([`crate::tls_names`]).
    pub tls_handshakes: IntCounterVec,
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
    /// Finished ACME orders by certificate and `result` (`success`, `failure`).
    pub acme_orders: IntCounterVec,
    /// Failed writes to the ACME storage (account, certificate, status, lock).
    pub acme_storage_errors: IntCounterVec,
    /// 0 while something of the certificate's ACME state could not be stored.
    pub acme_storage_writable: IntGaugeVec,
    /// 1 on the instance that holds the certificate's lease (and so orders it).
    pub acme_lease_held: IntGaugeVec,
    /// Connections refused by the PROXY protocol check, by `reason` (`untrusted`,
    /// `malformed`, `timeout`).
    pub proxy_protocol_refused: IntCounterVec,
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
                "Requests sent again after a failed attempt (a pooled connection the upstream had closed, or another server of the group), by upstream",
                &["upstream"]
            )
            .expect("register"),
            upstream_server_up: register_int_gauge_vec!(
                "gateway_upstream_server_up",
                "1 while the server takes requests (health checks pass and it is not out after max_fails failures), by upstream and server address",
                &["upstream", "server"]
            )
            .expect("register"),
            upstream_requests: register_int_counter_vec!(
                "gateway_upstream_requests_total",
                "Attempts sent to each server of a group (a request tried on two servers counts once on each), by upstream and server address",
                &["upstream", "server"]
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
            proxy_protocol_refused: register_int_counter_vec!(
                "gateway_proxy_protocol_refused_total",
                "Connections closed before TLS or HTTP because their PROXY protocol header was missing, malformed, late, or sent by a peer outside forwarding.trusted_proxies, by reason",
                &["reason"]
            )
            .expect("register"),
            tls_handshakes: register_int_counter_vec!(
                "gateway_tls_handshakes_total",
                "Completed TLS handshakes by version and key exchange group",
                &["version", "group"]
            )
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
            requests_denied: register_int_counter_vec!(
                "gateway_requests_denied_total",
                "Requests refused by a route's policy or maintenance switch, by route and reason",
                &["route", "reason"]
            )
            .expect("register"),
            access_log_dropped: register_int_counter!(
                "gateway_access_log_dropped_total",
                "Access lines dropped because the log writer could not keep up"
            )
            .expect("register"),
            acme_orders: register_int_counter_vec!(
                "gateway_acme_orders_total",
                "Finished ACME orders (first issuance or renewal), by result: success (issued) or failure",
                &["certificate", "result"]
            )
            .expect("register"),
            acme_storage_errors: register_int_counter_vec!(
                "gateway_acme_storage_errors_total",
                "Failed reads and writes of the ACME storage (account, certificate, status.json, lease)",
                &["certificate"]
            )
            .expect("register"),
            acme_storage_writable: register_int_gauge_vec!(
                "gateway_acme_storage_writable",
                "1 while the certificate's ACME state is stored, 0 while it is kept in memory only (a restart orders again)",
                &["certificate"]
            )
            .expect("register"),
            acme_lease_held: register_int_gauge_vec!(
                "gateway_acme_lease_held",
                "1 on the instance that holds the certificate's lease in the shared ACME storage (it orders and renews the certificate; the others serve what it stores)",
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

impl Metrics {
    /// Creates at 0 the labelled series of every name `cfg` configures: per route the
    /// request duration and the `5xx` requests of every method (what the 5xx-ratio alert
    /// divides; other classes appear with their first request), per upstream its retries
    /// and each `kind` of error, per certificate its refused files (files) or its orders by
    /// result and storage errors (ACME). Existing series keep their values; series of names
    /// no longer configured stay until the restart.
    pub fn init_series(&self, cfg: &gateway_config::Config) {
        for reason in crate::proxy_protocol::Refusal::ALL {
            self.proxy_protocol_refused
                .with_label_values(&[reason.label()])
                .inc_by(0);
        }
        for version in crate::tls_names::VERSIONS {
            for group in crate::tls_names::GROUPS {
                self.tls_handshakes.with_label_values(&[version, group]).inc_by(0);
            }
        }
        for r in &cfg.routes {
            let route = r.name.as_str();
            for method in METHOD_LABELS {
                self.requests.with_label_values(&[route, method, "5xx"]).inc_by(0);
            }
            // Touching a histogram child creates it with empty buckets.
            let _ = self.duration.with_label_values(&[route]);
            for reason in crate::policy::DenyReason::ALL {
                self.requests_denied
                    .with_label_values(&[route, reason.label()])
                    .inc_by(0);
            }
        }
        for u in &cfg.upstreams {
            let upstream = u.name.as_str();
            self.upstream_retries.with_label_values(&[upstream]).inc_by(0);
            for kind in UPSTREAM_ERROR_KINDS {
                self.upstream_errors
                    .with_label_values(&[upstream, kind])
                    .inc_by(0);
            }
        }
        for c in &cfg.tls.certificates {
            self.cert_load_failures
                .with_label_values(&[c.name.as_str()])
                .inc_by(0);
        }
        for c in cfg.acme.iter().flat_map(|a| a.certificates.iter()) {
            let certificate = c.name.as_str();
            for result in ACME_ORDER_RESULTS {
                self.acme_orders
                    .with_label_values(&[certificate, result])
                    .inc_by(0);
            }
            self.acme_storage_errors
                .with_label_values(&[certificate])
                .inc_by(0);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_the_vocabulary_of_method_label() {
        for m in ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"] {
            let method = http::Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(method_label(&method), m);
        }
        assert_eq!(
            method_label(&http::Method::from_bytes(b"PROPFIND").unwrap()),
            "OTHER"
        );
        assert!(METHOD_LABELS.contains(&"OTHER"));
    }

    /// The `process` feature of the `prometheus` crate registers its process collector in
    /// the default registry, the one `/metrics` gathers.
    #[test]
    fn the_default_registry_holds_the_process_series() {
        let _ = Metrics::global();
        let names: Vec<String> = prometheus::gather().iter().map(|f| f.name().to_owned()).collect();
        for want in [
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        }
    }
}
