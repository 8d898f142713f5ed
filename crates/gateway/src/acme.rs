//! The ACME client as a Pingora background service, and `gateway certs`.

use async_trait::async_trait;
use gateway_proxy::metrics::Metrics;
use gateway_tls::acme::{AcmeManager, Observer};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

/// ACME events as Prometheus series.
pub struct MetricsObserver(pub Arc<Metrics>);

impl Observer for MetricsObserver {
    fn attempt(&self, certificate: &str) {
        self.0.acme_renewals.with_label_values(&[certificate]).inc();
    }
    fn failure(&self, certificate: &str) {
        self.0.acme_failures.with_label_values(&[certificate]).inc();
    }
    fn issued(&self, certificate: &str, not_after: SystemTime) {
        self.0
            .cert_expiry
            .with_label_values(&[certificate])
            .set(crate::reload::unix_seconds(not_after));
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

/// `gateway certs`: every certificate, its names, issuer, expiry, next renewal, last error.
pub fn certs(config: &Path) -> ExitCode {
    let cfg = match gateway_config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut any = false;
    for c in &cfg.tls.certificates {
        any = true;
        println!("certificate {} (files)", c.name);
        println!("  files:    {} / {}", c.cert.display(), c.key.display());
        match gateway_tls::pem::load_files(&c.cert, &c.key) {
            Ok(l) => {
                let names = if c.hosts.is_empty() {
                    l.names.clone()
                } else {
                    c.hosts.clone()
                };
                println!("  names:    {}", names.join(", "));
                println!("  issuer:   {}", l.issuer);
                println!("  expires:  {}", when(l.not_after));
                println!("  renewal:  by whoever writes the files (certbot); re-read on change or SIGHUP");
            }
            Err(e) => println!("  error:    {e}"),
        }
    }
    if let Some(acme) = &cfg.acme {
        for r in gateway_tls::acme::report(acme) {
            any = true;
            println!("certificate {} (ACME, {})", r.name, r.directory);
            println!("  names:    {}", r.names.join(", "));
            println!("  stored:   {}", r.path.display());
            if let Some(by) = &r.status.issued_by {
                println!("  from:     {by}");
            }
            for why in &r.refused {
                println!("  refused:  {why}");
            }
            println!(
                "  issuer:   {}",
                r.issuer.as_deref().unwrap_or("(not issued yet)")
            );
            println!(
                "  expires:  {}",
                r.not_after.map(when).unwrap_or_else(|| "-".into())
            );
            println!(
                "  renewal:  {}",
                r.status.next_renewal.as_deref().unwrap_or("at the next start")
            );
            println!("  error:    {}", r.status.last_error.as_deref().unwrap_or("none"));
        }
    }
    if !any {
        println!("no certificates configured: a self-signed certificate is generated at start");
    }
    ExitCode::SUCCESS
}
