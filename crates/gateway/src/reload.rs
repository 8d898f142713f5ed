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
use tokio::sync::{mpsc, oneshot};

pub struct Reloader {
    pub path: PathBuf,
    pub shared: Arc<Shared>,
    /// The configuration the process started with: restart-only settings are compared with
    /// it, so every reload names those still waiting for a restart (a file watch that applied
    /// the file first does not hide them from a later `gateway reload`).
    pub boot: Arc<Config>,
    /// The ACME client, told about every reloaded `[acme]` section.
    pub acme: Arc<gateway_tls::acme::AcmeManager>,
    /// SIGHUPs, forwarded by the main loop's handler (`crate::signal::Signals`, which is
    /// installed before the pid file is written); taken when the service starts.
    pub hup: std::sync::Mutex<Option<mpsc::UnboundedReceiver<()>>>,
    /// Reloads asked for on the control socket (`gateway reload`), each answered with its
    /// outcome; taken when the service starts.
    pub requests: std::sync::Mutex<Option<mpsc::UnboundedReceiver<oneshot::Sender<ReloadOutcome>>>>,
}

/// What one reload did: `gateway reload` prints it and exits 1 when `applied` is false.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ReloadOutcome {
    /// The new configuration is serving (false: refused, the previous one stays).
    pub applied: bool,
    /// Why the file was refused, one `file:line:col: error: ...` each.
    pub errors: Vec<String>,
    /// What was applied only in part: settings that need a restart, certificate files refused.
    pub warnings: Vec<String>,
    /// Routes of the configuration now serving (when applied).
    pub routes: usize,
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

/// Applies certificates from a configuration, logging what could not be loaded; returns
/// those messages (for `gateway reload`).
pub fn apply_certs(shared: &Shared, cfg: &Config) -> Vec<String> {
    let msgs = shared.certs.configure(
        &cfg.tls.certificates,
        &managed(cfg),
        cfg.tls.default_certificate.as_deref(),
        &fallback_names(cfg),
    );
    after_certificate_load(shared, &msgs)
}

/// Logs what a certificate (re)load said, counts refused files, publishes the gauges. The
/// labelled series of every configured name exist from here on, at 0 until something
/// happens (`Metrics::init_series`; at a reload the new names are created by
/// `Reloader::reload` too, since the snapshot is still the old configuration here).
pub fn after_certificate_load(shared: &Shared, msgs: &[gateway_tls::StoreNotice]) -> Vec<String> {
    shared.metrics.init_series(&shared.snapshot.load().config);
    for msg in msgs {
        tracing::warn!("{msg}");
    }
    for e in &shared.certs.snapshot().entries {
        if !matches!(e.source, gateway_tls::store::Source::Files { .. }) {
            continue;
        }
        let refused = shared.metrics.cert_load_failures.with_label_values(&[&e.name]);
        refused.inc_by(u64::from(e.last_error.is_some()));
    }
    publish_expiry(shared);
    msgs.iter().map(ToString::to_string).collect()
}

/// Seconds since the Unix epoch, the unit of the timestamp gauges.
pub fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// `gateway_certificate_expiry_timestamp_seconds` of every real certificate served and
/// `gateway_certificate_placeholder` = 1 where a generated stand-in is served instead
/// (`crate::acme::publish_certificates`, also called when ACME installs a certificate).
pub fn publish_expiry(shared: &Shared) {
    crate::acme::publish_certificates(&shared.metrics, &shared.certs.snapshot());
}

/// `gateway reload`: the running gateway reloads and says how it went; exit 1 when the file
/// was refused (the gateway keeps serving the previous configuration), as `nginx -t && nginx
/// -s reload` users expect.
pub fn command(run_dir: &Path) -> std::process::ExitCode {
    use crate::control::{request, Request, Response};
    match request(run_dir, &Request::Reload, Duration::from_secs(60)) {
        Ok(Response::Reload(o)) => {
            for w in &o.warnings {
                eprintln!("warning: {w}");
            }
            if o.applied {
                println!("configuration reloaded: {} route(s)", o.routes);
                std::process::ExitCode::SUCCESS
            } else {
                for e in &o.errors {
                    eprintln!("{e}");
                }
                eprintln!(
                    "configuration refused ({} error(s)); the gateway keeps serving the previous one",
                    o.errors.len()
                );
                std::process::ExitCode::FAILURE
            }
        }
        Ok(Response::Error { message }) => {
            eprintln!("gateway reload: {message}");
            std::process::ExitCode::FAILURE
        }
        Ok(other) => {
            eprintln!("gateway reload: unexpected answer: {other:?}");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("gateway reload: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

impl Reloader {
    /// Reads the file again; on success swaps the snapshot, on failure keeps it. Everything
    /// the outcome says is also logged.
    pub fn reload(&self, why: &str) -> ReloadOutcome {
        crate::notify::reloading();
        let m = &self.shared.metrics;
        m.reloads.inc();
        let mut outcome = ReloadOutcome::default();
        match gateway_config::load(&self.path) {
            Ok(cfg) => {
                let old = self.shared.snapshot.load_full();
                let fixed = self.boot.restart_only_changes(&cfg);
                if !fixed.is_empty() {
                    let w = format!(
                        "changed, but fixed until `gateway upgrade` or a restart (new sockets, runtimes or sessions): {}; everything else is applied now",
                        fixed.join(", ")
                    );
                    tracing::warn!("{w}");
                    outcome.warnings.push(w);
                }
                m.init_series(&cfg);
                outcome.warnings.extend(apply_certs(&self.shared, &cfg));
                // After apply_certs: the store knows the managed names before loops start.
                self.acme.reconfigure(cfg.acme.as_ref());
                outcome.routes = cfg.routes.len();
                for w in crate::telemetry::apply_reload(&old.config.logging, &cfg.logging) {
                    tracing::warn!("{w}");
                    outcome.warnings.push(w);
                }
                self.shared.apply(cfg);
                m.last_reload_success.set(unix_seconds(SystemTime::now()));
                outcome.applied = true;
                tracing::info!(trigger = why, routes = outcome.routes, file = %self.path.display(), "configuration reloaded");
            }
            Err(errors) => {
                m.reload_failures.inc();
                for e in &errors.0 {
                    tracing::error!("{e}");
                    outcome.errors.push(e.to_string());
                }
                tracing::error!(
                    trigger = why,
                    "configuration refused; still serving the previous one"
                );
                // Certificates may have changed on their own (certbot renewal).
                let msgs = self.shared.certs.reload_files();
                outcome
                    .warnings
                    .extend(after_certificate_load(&self.shared, &msgs));
            }
        }
        crate::notify::reloaded();
        outcome
    }

    /// Paths whose change should trigger a reload: the config, every certificate file and
    /// every htpasswd file.
    fn interesting(&self) -> Vec<PathBuf> {
        let snap = self.shared.snapshot.load();
        let mut v = vec![self.path.clone()];
        for c in &snap.config.tls.certificates {
            v.push(c.cert.clone());
            v.push(c.key.clone());
        }
        // An htpasswd file is re-read with the configuration (basic_auth).
        for p in &snap.config.policies {
            if let Some(f) = p.basic_auth.as_ref().and_then(|b| b.htpasswd_file.clone()) {
                v.push(f);
            }
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
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watch_enabled = self.shared.snapshot.load().config.server.watch_config;
        let mut watcher = if watch_enabled {
            self.watch(tx.clone())
        } else {
            None
        };
        loop {
            let mut answer = None;
            let why = tokio::select! {
                _ = shutdown.changed() => return,
                Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                Some(tx) = async { match requests.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    answer = Some(tx);
                    "gateway reload"
                }
                Some(_) = rx.recv() => {
                    // Debounce: editors and `docker cp` produce bursts of events.
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    while rx.try_recv().is_ok() {}
                    "file change"
                }
            };
            // Synchronous on purpose: this background service has its own runtime thread
            // (Pingora gives each service one), so reading files and PEM here never holds up
            // a thread that serves requests, and reloads never overlap.
            let outcome = self.reload(why);
            if let Some(tx) = answer {
                let _ = tx.send(outcome);
            }
            if self.shared.snapshot.load().config.server.watch_config {
                drop(watcher.take());
                watcher = self.watch(tx.clone());
            } else {
                watcher = None;
            }
        }
    }
}
