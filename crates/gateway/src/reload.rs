//! Reloading `proxy.toml` and certificate files while serving: on SIGHUP and when a watched
//! file changes (debounced). A broken file keeps the running configuration.

use async_trait::async_trait;
use gateway_config::Config;
use gateway_proxy::Shared;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

pub struct Reloader {
    pub path: PathBuf,
    pub shared: Arc<Shared>,
    /// The ACME client, told about every reloaded `[acme]` section.
    pub acme: Option<Arc<gateway_tls::acme::AcmeManager>>,
    /// SIGHUPs, forwarded by the main loop's handler (`crate::signal::Signals`, which is
    /// installed before the pid file is written); taken when the service starts.
    pub hup: std::sync::Mutex<Option<mpsc::UnboundedReceiver<()>>>,
}

/// `(name, names)` of the ACME-managed certificates, kept by the store across reloads.
pub fn managed(cfg: &Config) -> Vec<(String, Vec<String>)> {
    cfg.acme
        .iter()
        .flat_map(|a| a.certificates.iter().map(|c| (c.name.clone(), c.names.clone())))
        .collect()
}

/// Names for the self-signed stand-in served while no configured certificate is usable:
/// the routes' hosts and the ACME names (`localhost` when there are none).
pub fn fallback_names(cfg: &Config) -> Vec<String> {
    let mut names: Vec<String> = cfg
        .routes
        .iter()
        .filter_map(|r| match &r.host {
            Some(gateway_config::HostMatch::Exact(h)) => Some(h.clone()),
            Some(gateway_config::HostMatch::Suffix(s)) => Some(format!("*{s}")),
            None => None,
        })
        .chain(
            cfg.acme
                .iter()
                .flat_map(|a| a.certificates.iter().flat_map(|c| c.names.clone())),
        )
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Applies certificates from a configuration, logging what could not be loaded.
pub fn apply_certs(shared: &Shared, cfg: &Config) {
    let msgs = shared.certs.configure(
        &cfg.tls.certificates,
        &managed(cfg),
        cfg.tls.default_certificate.as_deref(),
        &fallback_names(cfg),
    );
    after_certificate_load(shared, msgs);
}

/// Logs what a certificate (re)load said, counts refused files, publishes the gauges.
pub fn after_certificate_load(shared: &Shared, msgs: Vec<String>) {
    for msg in msgs {
        tracing::warn!("{msg}");
    }
    for e in &shared.certs.snapshot().entries {
        if e.last_error.is_some() && matches!(e.source, gateway_tls::store::Source::Files { .. }) {
            shared
                .metrics
                .cert_load_failures
                .with_label_values(&[&e.name])
                .inc();
        }
    }
    publish_expiry(shared);
}

/// Seconds since the Unix epoch, the unit of the timestamp gauges.
pub fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// `gateway_certificate_expiry_timestamp_seconds` of every real certificate served and
/// `gateway_certificate_placeholder` = 1 where a generated stand-in is served instead (its
/// far-future expiry would only hide the missing certificate from an expiry alert).
pub fn publish_expiry(shared: &Shared) {
    let m = &shared.metrics;
    let entries = &shared.certs.snapshot().entries;
    // Series of certificates no longer configured go away.
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
                .set(unix_seconds(c.not_after));
        }
    }
}

impl Reloader {
    /// Reads the file again; on success swaps the snapshot, on failure keeps it.
    pub fn reload(&self, why: &str) {
        let m = &self.shared.metrics;
        m.reloads.inc();
        match gateway_config::load(&self.path) {
            Ok(cfg) => {
                let old = self.shared.snapshot.load_full();
                let (o, n) = (&old.config.server, &cfg.server);
                if old.config.listen != cfg.listen
                    || (old.config.tls.session_cache, old.config.tls.session_tickets)
                        != (cfg.tls.session_cache, cfg.tls.session_tickets)
                    || (o.threads, o.work_stealing, o.reuseport) != (n.threads, n.work_stealing, n.reuseport)
                    || o.grace_period != n.grace_period
                {
                    tracing::warn!(
                        "listener addresses, threads, work_stealing, reuseport, grace_period or the TLS session cache changed: they need new sockets or runtimes, so they take effect only after `gateway upgrade` or a restart; the rest is applied now"
                    );
                }
                apply_certs(&self.shared, &cfg);
                // After apply_certs: the store knows the managed names before loops start.
                match &self.acme {
                    Some(acme) => acme.reconfigure(cfg.acme.as_ref()),
                    None if old.config.acme != cfg.acme => tracing::warn!(
                        "the [acme] section changed: it takes effect after `gateway upgrade` or a restart"
                    ),
                    None => {}
                }
                let routes = cfg.routes.len();
                self.shared.apply(cfg);
                m.last_reload_success.set(unix_seconds(SystemTime::now()));
                tracing::info!(trigger = why, routes, file = %self.path.display(), "configuration reloaded");
            }
            Err(errors) => {
                m.reload_failures.inc();
                for e in &errors.0 {
                    tracing::error!("{e}");
                }
                tracing::error!(
                    trigger = why,
                    "configuration refused; still serving the previous one"
                );
                // Certificates may have changed on their own (certbot renewal).
                let msgs = self.shared.certs.reload_files();
                after_certificate_load(&self.shared, msgs);
            }
        }
    }

    /// Paths whose change should trigger a reload: the config and every certificate file.
    fn interesting(&self) -> Vec<PathBuf> {
        let snap = self.shared.snapshot.load();
        let mut v = vec![self.path.clone()];
        for c in &snap.config.tls.certificates {
            v.push(c.cert.clone());
            v.push(c.key.clone());
        }
        v
    }

    fn watch(&self, tx: mpsc::UnboundedSender<()>) -> Option<RecommendedWatcher> {
        let interesting = self.interesting();
        let wanted = interesting.clone();
        let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev {
                if matches!(ev.kind, notify::EventKind::Access(_)) {
                    return;
                }
                // Editors replace files and certbot swaps symlinked directories: a change to
                // the file or to any directory on its way counts.
                let hit = ev
                    .paths
                    .iter()
                    .any(|p| wanted.iter().any(|w| w == p || w.starts_with(p)));
                if hit {
                    let _ = tx.send(());
                }
            }
        })
        .map_err(|e| tracing::warn!(error = %e, "cannot watch files; reload with SIGHUP or `gateway reload`"))
        .ok()?;
        let mut dirs: Vec<PathBuf> = Vec::new();
        for p in &interesting {
            let mut dir = p.parent().map(Path::to_path_buf);
            while let Some(d) = dir {
                if d.is_dir() {
                    if !dirs.contains(&d) {
                        dirs.push(d);
                    }
                    break;
                }
                dir = d.parent().map(Path::to_path_buf);
            }
        }
        for d in dirs {
            if let Err(e) = w.watch(&d, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory");
            }
        }
        Some(w)
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = self.hup.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watch_enabled = self.shared.snapshot.load().config.server.watch_config;
        let mut watcher = if watch_enabled {
            self.watch(tx.clone())
        } else {
            None
        };
        loop {
            let why = tokio::select! {
                _ = shutdown.changed() => return,
                Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                Some(_) = rx.recv() => {
                    // Debounce: editors and `docker cp` produce bursts of events.
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    while rx.try_recv().is_ok() {}
                    "file change"
                }
            };
            self.reload(why);
            if self.shared.snapshot.load().config.server.watch_config {
                drop(watcher.take());
                watcher = self.watch(tx.clone());
            } else {
                watcher = None;
            }
        }
    }
}
