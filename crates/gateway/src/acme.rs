//! The ACME client as a Pingora background service, its metrics, and `gateway certs`.

use async_trait::async_trait;
use gateway_config::{CertFiles, Config};
use gateway_proxy::metrics::Metrics;
use gateway_tls::acme::{AcmeManager, Observer, Report};
use gateway_tls::{CertStore, Loaded, Source};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

/// ACME events as Prometheus series.
pub struct MetricsObserver(pub Arc<Metrics>);

impl Observer for MetricsObserver {
    fn order(&self, certificate: &str, issued: bool) {
        let result = if issued { "success" } else { "failure" };
        self.0.acme_orders.with_label_values(&[certificate, result]).inc();
    }

    /// The certificate gauges follow at once: the placeholder gauge drops to 0 and the
    /// expiry appears as soon as the CA's certificate is served, not at the next reload.
    fn installed(&self, _certificate: &str, served: &gateway_tls::Snapshot) {
        publish_certificates(&self.0, served);
    }

    fn storage(&self, certificate: &str, failed_writes: u64, problem: Option<&str>) {
        self.0
            .acme_storage_errors
            .with_label_values(&[certificate])
            .inc_by(failed_writes);
        self.0
            .acme_storage_writable
            .with_label_values(&[certificate])
            .set(i64::from(problem.is_none()));
    }

    fn lease_error(&self, certificate: &str) {
        self.0.acme_storage_errors.with_label_values(&[certificate]).inc();
    }

    fn lease(&self, certificate: &str, held: bool) {
        self.0
            .acme_lease_held
            .with_label_values(&[certificate])
            .set(i64::from(held));
    }
}

/// `gateway_certificate_expiry_timestamp_seconds` of every real certificate served and
/// `gateway_certificate_placeholder` (1 where a generated stand-in is served instead: its
/// far-future expiry would only hide the missing certificate from an expiry alert), from the
/// store's entries; series of certificates no longer in the store go away.
pub fn publish_certificates(m: &Metrics, served: &gateway_tls::Snapshot) {
    let entries = &served.entries;
    for family in [&m.cert_expiry, &m.cert_placeholder] {
        for mf in prometheus::core::Collector::collect(family) {
            for metric in mf.get_metric() {
                for l in metric.get_label() {
                    if l.name() == "certificate" && !entries.iter().any(|e| e.name == l.value()) {
                        let _ = family.remove_label_values(&[l.value()]);
                    }
                }
            }
        }
    }
    for e in entries {
        let Some(c) = &e.cert else { continue };
        let placeholder = c.self_signed;
        m.cert_placeholder
            .with_label_values(&[&e.name])
            .set(i64::from(placeholder));
        if placeholder {
            let _ = m.cert_expiry.remove_label_values(&[&e.name]);
        } else {
            m.cert_expiry
                .with_label_values(&[&e.name])
                .set(crate::reload::unix_seconds(c.not_after));
        }
    }
}

pub struct AcmeService(pub Arc<AcmeManager>);

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.clone().run(shutdown).await;
    }
}

fn when(t: SystemTime) -> String {
    gateway_tls::storage::rfc3339(t)
}

/// One file-backed certificate: what loaded, or why not.
fn write_files(out: &mut String, c: &CertFiles, loaded: Result<&Loaded, String>) {
    let _ = writeln!(out, "certificate {} (files)", c.name);
    let _ = writeln!(out, "  files:    {} / {}", c.cert.display(), c.key.display());
    match loaded {
        Ok(l) => {
            let names = if c.hosts.is_empty() { &l.names } else { &c.hosts };
            let _ = writeln!(out, "  names:    {}", names.join(", "));
            let _ = writeln!(out, "  issuer:   {}", l.issuer);
            let _ = writeln!(out, "  expires:  {}", when(l.not_after));
            let _ = writeln!(
                out,
                "  renewal:  by whoever writes the files (certbot); re-read on change or SIGHUP"
            );
        }
        Err(e) => {
            let _ = writeln!(out, "  error:    {e}");
        }
    }
}

/// One ACME certificate.
fn write_acme(out: &mut String, r: &Report) {
    let _ = writeln!(out, "certificate {} (ACME, {})", r.name, r.directory);
    let _ = writeln!(out, "  names:    {}", r.names.join(", "));
    let _ = writeln!(out, "  challenge: {}", r.challenge);
    if let Some(p) = &r.profile {
        let _ = writeln!(out, "  profile:  {p}");
    }
    if let Some(p) = &r.status.last_propagation {
        let _ = writeln!(out, "  propagated: {p}");
    }
    let _ = writeln!(out, "  stored:   {}", r.path.display());
    let _ = writeln!(out, "  lease:    {}", r.lease);
    if let Some(by) = &r.status.issued_by {
        let _ = writeln!(out, "  from:     {by}");
    }
    for why in &r.refused {
        let _ = writeln!(out, "  refused:  {why}");
    }
    let _ = writeln!(
        out,
        "  issuer:   {}",
        r.issuer.as_deref().unwrap_or("(not issued yet)")
    );
    let _ = writeln!(
        out,
        "  expires:  {}",
        r.not_after.map(when).unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(
        out,
        "  renewal:  {}",
        r.status.next_renewal.as_deref().unwrap_or("at the next start")
    );
    let _ = writeln!(
        out,
        "  error:    {}",
        r.status.last_error.as_deref().unwrap_or("none")
    );
}

fn nothing_configured(out: &mut String) {
    out.push_str("no certificates configured: a self-signed certificate is generated at start\n");
}

/// `gateway certs` as the running process sees it (asked on the control socket): the files
/// as they were loaded (the store's certificate and last error), and for ACME the manager's
/// memory (`AcmeManager::live_report`), so a storage that cannot be written, or a
/// `status.json` that cannot be read, shows as what it is. The flag is the exit status
/// (always true: errors are in the text).
pub fn render_certs(cfg: &Config, store: &CertStore, acme: Option<&AcmeManager>) -> (String, bool) {
    let mut out = String::new();
    let snap = store.snapshot();
    for c in &cfg.tls.certificates {
        let entry = snap
            .entries
            .iter()
            .find(|e| e.name == c.name && matches!(e.source, Source::Files { .. }));
        let loaded = match entry {
            Some(e) => match (&e.last_error, &e.cert) {
                (Some(err), Some(_)) => Err(format!("{err} (the previous certificate is still served)")),
                (Some(err), None) => Err(err.to_string()),
                (None, Some(l)) => Ok(l),
                (None, None) => Err("not loaded".to_owned()),
            },
            None => Err("not loaded yet".to_owned()),
        };
        write_files(&mut out, c, loaded);
    }
    let reports = match (acme, &cfg.acme) {
        (Some(m), _) => m.live_report(),
        (None, Some(a)) => store_report(a, &snap),
        (None, None) => Vec::new(),
    };
    for r in &reports {
        write_acme(&mut out, r);
    }
    if cfg.tls.certificates.is_empty() && reports.is_empty() {
        nothing_configured(&mut out);
    }
    (out, true)
}

/// The stored reports, corrected by what the store serves and the error it records.
fn store_report(acme: &gateway_config::Acme, snap: &gateway_tls::Snapshot) -> Vec<Report> {
    let mut reports = gateway_tls::acme::report(acme);
    for r in &mut reports {
        let Some(e) = snap.entries.iter().find(|e| e.name == r.name) else {
            continue;
        };
        if let Some(l) = e.cert.as_ref().filter(|l| !l.self_signed) {
            r.issuer = Some(l.issuer.clone());
            r.not_after = Some(l.not_after);
        }
        if e.last_error.is_some() {
            r.status.last_error = e.last_error.as_ref().map(|e| e.to_string());
        }
    }
    reports
}

/// The listing from the files alone, when no gateway runs: each certificate file as it
/// loads now, each ACME certificate's storage and `status.json` (a storage this user cannot
/// write is named in its error).
pub fn certs_file_text(cfg: &Config) -> String {
    let mut out = String::new();
    for c in &cfg.tls.certificates {
        let loaded = gateway_tls::pem::load_files(&c.cert, &c.key);
        write_files(&mut out, c, loaded.as_ref().map_err(|e| e.to_string()));
    }
    let reports = cfg
        .acme
        .as_ref()
        .map(gateway_tls::acme::report)
        .unwrap_or_default();
    for r in &reports {
        write_acme(&mut out, r);
    }
    if cfg.tls.certificates.is_empty() && reports.is_empty() {
        nothing_configured(&mut out);
    }
    out
}

/// `gateway certs --file` (or no gateway running): every certificate, its names, issuer,
/// expiry, next renewal, last error, read from the files.
pub fn certs(config: &Path) -> ExitCode {
    let cfg = match gateway_config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", certs_file_text(&cfg));
    ExitCode::SUCCESS
}
