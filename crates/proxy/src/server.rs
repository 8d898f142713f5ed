//! Assembling Pingora services from a configuration.

use crate::dns::DnsRefresher;
use crate::edge::{Edge, Guarded};
use crate::redirect::Redirect;
use crate::state::Shared;
use gateway_config::Config;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;
use std::path::Path;
use std::sync::Arc;

/// Where a new process started with `--upgrade` waits for the listening sockets (Pingora's
/// `upgrade_sock`); `gateway upgrade` watches it to know when that process is ready.
pub fn upgrade_sock_path(run_dir: &Path) -> std::path::PathBuf {
    run_dir.join("gateway_upgrade.sock")
}

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
        // Pingora's pool is one LRU keyed by peer, one per worker thread (edge.rs): size it to hold
        // every upstream's keepalive, which is then per thread like nginx's per worker.
        upstream_keepalive_pool_size: cfg.upstreams.iter().map(|u| u.keepalive).sum::<usize>().max(1),
        // Total attempts, not retries. Connection failures are never retried (fast 502,
        // `fail_to_connect`); the second attempt is only for an idempotent request that met a
        // pooled connection the upstream had just closed, and goes to a new connection
        // (`error_while_proxy` and `upstream_peer` in proxy.rs).
        // Attempts per request: `next_upstream_tries` at most, plus the one retry after a
        // stale pooled connection; the phases decide each retry (proxy.rs).
        max_retries: gateway_config::MAX_TRIES as usize + 1,
        // Like nginx workers: each thread runs its own connections; measured faster than
        // work stealing on 2 cores (fewer cross-thread wake-ups).
        work_stealing: cfg.server.work_stealing,
        pid_file: pid.display().to_string(),
        upgrade_sock: upgrade_sock_path(run_dir).display().to_string(),
        ..ServerConf::default()
    }
}

/// rustls behind Pingora, certificates from the SNI store, HTTP/2 offered through ALPN, and
/// `sessions` as the TLS session cache (one for all listeners, so a returning client resumes
/// whichever thread accepts it).
fn tls_settings(
    shared: &Shared,
    sessions: &Arc<dyn StoresServerSessions>,
    tickets: &Option<Arc<dyn rustls::server::ProducesTickets>>,
) -> TlsSettings {
    // Cipher suites: rustls offers only forward-secret AEAD suites; versions TLS 1.2 and 1.3.
    let mut tls = TlsSettings::intermediate("", "").expect("settings without files");
    tls.set_cert_resolver(shared.certs.clone());
    tls.enable_h2();
    let sessions = sessions.clone();
    let tickets = tickets.clone();
    tls.set_server_config_hook(Arc::new(move |config: &mut ServerConfig| {
        config.session_storage = sessions.clone();
        // TLS-ALPN-01 (RFC 8737): a CA's validation offers only `acme-tls/1`; without it in
        // the list rustls would refuse that handshake (no_application_protocol). The
        // certificate store answers it with the challenge certificate.
        config
            .alpn_protocols
            .push(gateway_tls::store::ACME_TLS_ALPN.to_vec());
        if let Some(t) = &tickets {
            config.ticketer = t.clone();
        }
    }));
    tls
}

/// The key of worker `n`'s socket in Pingora's listening-socket table, which is handed to
/// the new process on `gateway upgrade`: one distinct key per reuseport socket, all naming
/// the same address (leading zeros in the port parse to the same number).
fn listener_key(addr: std::net::SocketAddr, n: usize) -> String {
    let ip = match addr {
        std::net::SocketAddr::V4(a) => a.ip().to_string(),
        std::net::SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    format!("{ip}:{}{}", "0".repeat(n), addr.port())
}

/// The addresses to bind, each with its `IPV6_V6ONLY` setting: `[::]:P` listed beside an
/// IPv4 wildcard on the same port is IPv6 only (otherwise the two would collide), alone it
/// is left dual-stack (Linux's default: IPv4 clients arrive as `::ffff:a.b.c.d`). On a host
/// without IPv6 (`ipv6.disable=1`, some containers) `[::]` becomes `0.0.0.0` with a warning,
/// so the shipped dual-stack defaults still start.
fn bindable(addrs: &[std::net::SocketAddr]) -> Vec<(std::net::SocketAddr, Option<bool>)> {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    static V6: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let has_v6 = *V6.get_or_init(|| std::net::TcpListener::bind("[::]:0").is_ok());
    let mut out: Vec<(SocketAddr, Option<bool>)> = Vec::new();
    for &a in addrs {
        let a = if a.is_ipv6() && !has_v6 {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), a.port());
            tracing::warn!(address = %a, instead = %v4, "this host has no IPv6: listening on IPv4 only");
            v4
        } else {
            a
        };
        if out.iter().any(|(b, _)| *b == a) {
            continue;
        }
        let v4_wildcard_too = addrs
            .iter()
            .any(|b| b.port() == a.port() && b.ip() == IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let v6only = (a.ip().is_unspecified() && a.is_ipv6() && v4_wildcard_too).then_some(true);
        out.push((a, v6only));
    }
    out
}

/// Adds the HTTPS, plain-HTTP and background services to `server`.
pub fn add_services(server: &mut Server, shared: Arc<Shared>) {
    let conf = server.configuration.clone();
    let snap = shared.snapshot.load_full();
    let listen = &snap.config.listen;

    // `reuseport`: like nginx workers with `listen ... reuseport`, each thread gets its own
    // HTTPS service, listening socket and accept loop, and a connection stays on one thread
    // from accept to close. Otherwise Pingora's one accept loop registers every accepted
    // socket with the accepting thread's event loop while the connection runs on a random
    // thread. Measured side by side (benches/RESULTS.md): reuseport +5 % h1 and +13-20 % h2
    // requests/s; each service builds its own rustls config, so they share one session
    // cache (without it, half of all resumptions missed and new TLS connections/s fell
    // 20 %). One socket duplicated into per-thread accept loops was worse on all three
    // (the first thread to wake accepts the whole burst of new connections).
    let https_addrs = bindable(&listen.https);
    let reuseport =
        snap.config.server.reuseport && !conf.work_stealing && https_addrs.iter().all(|(a, _)| a.port() != 0);
    let workers = if reuseport { conf.threads.max(1) } else { 1 };
    // One session cache and one ticket key set for all services (and so all threads); built
    // once, so they outlive reloads.
    let sessions: Arc<dyn StoresServerSessions> = if snap.config.tls.session_cache > 0 {
        ServerSessionMemoryCache::new(snap.config.tls.session_cache)
    } else {
        Arc::new(rustls::server::NoServerSessionStorage {})
    };
    let tickets: Option<Arc<dyn rustls::server::ProducesTickets>> = if snap.config.tls.session_tickets {
        match rustls::crypto::ring::Ticketer::new() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create TLS session ticket keys; resumption by session ID only");
                None
            }
        }
    } else {
        None
    };
    for worker in 0..workers {
        let name = if workers == 1 {
            "https".to_string()
        } else {
            format!("https-{worker}")
        };
        let mut https = Service::new(name, Edge::new(conf.clone(), shared.clone()));
        if workers > 1 {
            https.threads = Some(1);
        }
        for &(addr, v6only) in &https_addrs {
            let mut socket = TcpSocketOptions::default();
            socket.so_reuseport = Some(workers > 1);
            socket.ipv6_only = v6only;
            https.add_listener(
                ListenerConfig::tcp(listener_key(addr, worker))
                    .tcp_socket_options(socket)
                    .tls(tls_settings(&shared, &sessions, &tickets))
                    // No read buffer below TLS: rustls reads 4 KiB at a time into its own
                    // buffer, so Pingora's (64 KiB by default) only held memory, 94 KB per
                    // idle connection at first. The write buffer stays: it joins rustls'
                    // records into one send per response (unbuffered, a response took two
                    // writev).
                    .l4_buffer(L4BufferSettings::new(0, 1460)),
            );
        }
        if listen.proxy_protocol {
            https
                .endpoints()
                .set_pre_tls_callback(crate::proxy_protocol::ProxyProtocol::new(shared.clone(), "https"));
        }
        server.add_service(https);
    }

    let http_addrs = bindable(&listen.http);
    if !http_addrs.is_empty() {
        let mut http = Service::new(
            "http".into(),
            Guarded {
                app: Arc::new(Redirect {
                    shared: shared.clone(),
                }),
                shared: shared.clone(),
            },
        );
        for (addr, v6only) in http_addrs {
            let mut socket = TcpSocketOptions::default();
            socket.ipv6_only = v6only;
            http.add_tcp_with_settings(&addr.to_string(), socket);
        }
        if listen.proxy_protocol {
            http.endpoints()
                .set_pre_tls_callback(crate::proxy_protocol::ProxyProtocol::new(shared.clone(), "http"));
        }
        server.add_service(http);
    }
    server.add_service(background_service("dns", DnsRefresher(shared.dns.clone())));
    server.add_service(background_service(
        "upstreams",
        crate::upstream::UpstreamService {
            upstreams: shared.upstreams.clone(),
            dns: shared.dns.clone(),
        },
    ));
}

#[cfg(test)]
mod tests {
    use super::listener_key;
    use std::net::{SocketAddr, ToSocketAddrs};

    #[test]
    fn listener_keys_are_distinct_and_name_the_same_address() {
        for addr in ["127.0.0.1:443", "[::1]:8443", "0.0.0.0:80"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let keys: Vec<String> = (0..4).map(|n| listener_key(addr, n)).collect();
            assert_eq!(keys[0], addr.to_string());
            for k in &keys {
                assert_eq!(keys.iter().filter(|o| *o == k).count(), 1);
                assert_eq!(k.to_socket_addrs().unwrap().next(), Some(addr), "{k}");
            }
        }
    }
}
