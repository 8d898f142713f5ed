//! `gateway run`: build the services from `proxy.toml` and serve until signalled.
//!
//! Signals: SIGTERM drains gracefully within `grace_period` (and exits as soon as every
//! connection is done); SIGINT stops at once; SIGHUP reloads; SIGQUIT hands the listening
//! sockets to a new process started with `--upgrade`. All four are handled before the pid
//! file and the control socket are there (`signal::Signals`, `control.rs`).

use crate::{admin::Admin, reload};
use gateway_proxy::metrics::Metrics;
use gateway_proxy::Shared;
use gateway_tls::acme::AcmeManager;
use gateway_tls::CertStore;
use pingora::server::configuration::Opt;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora_core::services::listening::Service;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct RunArgs {
    pub config: PathBuf,
    pub upgrade: bool,
    pub run_dir: PathBuf,
}

pub fn pid_path(run_dir: &Path) -> PathBuf {
    run_dir.join("gateway.pid")
}

/// A listen address for a log field: `127.0.0.1:80`, or `off`.
fn or_off(addr: Option<std::net::SocketAddr>) -> String {
    addr.map_or_else(|| "off".to_owned(), |a| a.to_string())
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = std::path::absolute(&args.config).unwrap_or(args.config.clone());
    let cfg = match gateway_config::load(&config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            anyhow::bail!(
                "{}: configuration refused ({} error(s))",
                config.display(),
                errors.0.len()
            );
        }
    };
    crate::telemetry::init(&cfg.logging, Metrics::global().tls_handshake_failures.clone());
    crate::preflight::prepare_run_dir(&args.run_dir)?;
    // With --upgrade the sockets come from the running process, which holds the addresses.
    if !args.upgrade {
        let problems = crate::preflight::check_listeners(&cfg);
        if !problems.is_empty() {
            for p in &problems {
                eprintln!("{p}");
            }
            anyhow::bail!(
                "{}: cannot listen on {} address(es)",
                config.display(),
                problems.len()
            );
        }
    }
    // Also for an upgrade's successor: it stores certificates just the same.
    if let Some(problem) = crate::preflight::check_storage(&cfg) {
        eprintln!("{problem}");
        anyhow::bail!("{}: the ACME storage cannot be written", config.display());
    }
    let _access_log =
        gateway_proxy::access::start_writer(cfg.logging.access_log_file.as_deref()).map_err(|e| {
            anyhow::anyhow!(
                "{}: cannot open the access log file {}: {e}",
                config.display(),
                cfg.logging
                    .access_log_file
                    .as_deref()
                    .unwrap_or(std::path::Path::new("-"))
                    .display()
            )
        })?;

    let certs = CertStore::new();
    let shared = Shared::new(cfg.clone(), certs.clone(), Metrics::global());
    reload::apply_certs(&shared, &cfg);
    // Always created, even without [acme]: a reload may add certificates.
    let acme = Arc::new(AcmeManager::new(
        cfg.acme.clone(),
        certs.clone(),
        shared.challenges.clone(),
        Arc::new(crate::acme::MetricsObserver(shared.metrics.clone())),
    ));
    acme.prepare();
    reload::publish_expiry(&shared);
    shared
        .metrics
        .last_reload_success
        .set(reload::unix_seconds(std::time::SystemTime::now()));

    let opt = Opt {
        upgrade: args.upgrade,
        ..Opt::default()
    };
    let mut server =
        Server::new_with_opt_and_conf(Some(opt), gateway_proxy::server_conf(&cfg, &args.run_dir));
    server.bootstrap();
    gateway_proxy::add_services(&mut server, shared.clone());
    if let Some(addr) = cfg.listen.metrics {
        let mut admin = Service::new(
            "metrics".into(),
            gateway_proxy::Guarded {
                app: Arc::new(Admin::new(shared.clone())),
                shared: shared.clone(),
            },
        );
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }
    server.add_service(background_service("acme", crate::acme::AcmeService(acme.clone())));
    let (hup_tx, hup_rx) = tokio::sync::mpsc::unbounded_channel();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
    server.add_service(background_service(
        "reload",
        reload::Reloader {
            path: config.clone(),
            shared: shared.clone(),
            boot: Arc::new(cfg.clone()),
            acme: acme.clone(),
            hup: std::sync::Mutex::new(Some(hup_rx)),
            requests: std::sync::Mutex::new(Some(reload_rx)),
        },
    ));
    let control = crate::control::Control::new(
        shared.clone(),
        acme,
        reload_tx,
        config.clone(),
        args.run_dir.clone(),
    );

    // Written by `Signals` once SIGQUIT/SIGTERM/SIGINT/SIGHUP are handled: before that, any
    // of them would kill the process (`gateway upgrade` waits for it before its next step).
    let pid = pid_path(&args.run_dir);
    tracing::info!(
        https = %gateway_config::addr_list(&cfg.listen.https),
        http = %gateway_config::addr_list(&cfg.listen.http),
        metrics = %or_off(cfg.listen.metrics),
        routes = cfg.routes.len(),
        config = %config.display(),
        pid_file = %pid.display(),
        "gateway starting"
    );
    server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(crate::signal::Signals {
            pid_file: pid.clone(),
            hup: hup_tx,
            control: control.clone(),
            successor: args.upgrade,
            listeners: cfg
                .listen
                .https
                .iter()
                .chain(&cfg.listen.http)
                .copied()
                .chain(cfg.listen.metrics)
                .collect(),
        }),
    });
    control.remove_own_socket();
    // A newer process may have taken over the pid file during an upgrade.
    if std::fs::read_to_string(&pid).is_ok_and(|s| s.trim() == std::process::id().to_string()) {
        let _ = std::fs::remove_file(&pid);
    }
    Ok(())
}
