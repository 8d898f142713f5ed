//! Assembling Pingora services from a configuration.

use crate::dns::DnsRefresher;
use crate::edge::Edge;
use crate::proxy::Gateway;
use crate::redirect::Redirect;
use crate::state::Shared;
use gateway_config::Config;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use std::path::Path;
use std::sync::Arc;

/// Pingora's server settings derived from `proxy.toml`.
///
/// `run_dir` holds the pid file and the upgrade socket used for zero-downtime upgrades.
pub fn server_conf(cfg: &Config, run_dir: &Path) -> ServerConf {
    // Pingora waits the whole grace period, then gives runtimes a final timeout: split the
    // configured grace so the process is gone within it (docker kills after 10 s).
    let grace = cfg.server.grace_period.as_secs();
    let pid = run_dir.join("gateway.pid");
    ServerConf {
        threads: cfg.server.threads,
        grace_period_seconds: Some(grace.saturating_sub(1)),
        graceful_shutdown_timeout_seconds: Some(1.min(grace)),
        // Pingora's pool is one LRU keyed by peer; size it to hold every upstream's keepalive.
        upstream_keepalive_pool_size: cfg.upstreams.iter().map(|u| u.keepalive).sum::<usize>().max(1),
        // Total attempts, not retries: one try, and errors are marked non-retryable (fast 502).
        max_retries: 1,
        // Like nginx workers: each thread runs its own connections; measured faster than
        // work stealing on 2 cores (fewer cross-thread wake-ups).
        work_stealing: cfg.server.work_stealing,
        pid_file: pid.display().to_string(),
        upgrade_sock: run_dir.join("gateway_upgrade.sock").display().to_string(),
        ..ServerConf::default()
    }
}

/// Adds the HTTPS, plain-HTTP and background services to `server`.
pub fn add_services(server: &mut Server, shared: Arc<Shared>) {
    let conf = server.configuration.clone();
    let snap = shared.snapshot.load_full();
    let listen = &snap.config.listen;

    let proxy = Arc::new(pingora_proxy::http_proxy(
        &conf,
        Gateway {
            shared: shared.clone(),
        },
    ));
    let mut https = Service::new(
        "https".into(),
        Edge {
            proxy,
            shared: shared.clone(),
        },
    );
    // Cipher suites: rustls offers only forward-secret AEAD suites; versions TLS 1.2 and 1.3.
    let mut tls = TlsSettings::intermediate("", "").expect("settings without files");
    tls.set_cert_resolver(shared.certs.clone());
    tls.enable_h2();
    // Pingora's default 64 KiB read buffer per connection was most of an idle TLS
    // connection's memory (94 KB each at 10,000 idle connections).
    // rustls reads 4 KiB at a time into its own buffer and a buffered reader passes reads
    // at least as large as its buffer straight through, so a small one costs no syscalls
    // (heap profile of an idle connection: benches/RESULTS.md).
    https.add_listener(
        ListenerConfig::tcp(listen.https.to_string())
            .tls(tls)
            .l4_buffer(L4BufferSettings::new(1024, 1460)),
    );
    server.add_service(https);

    if let Some(addr) = listen.http {
        let mut http = Service::new(
            "http".into(),
            Redirect {
                shared: shared.clone(),
            },
        );
        http.add_tcp(&addr.to_string());
        server.add_service(http);
    }
    server.add_service(background_service("dns", DnsRefresher(shared.dns.clone())));
}
