//! The control socket, `<run dir>/control.sock`: how the CLI talks to the running gateway.
//!
//! `nginx -s reload` signals the pid read from a file and learns nothing of the outcome. Here
//! `gateway reload`, `upgrade`, `healthcheck`, `certs` and `route` connect to the Unix socket
//! the running process bound in its run directory (0700: only its user gets in), send one
//! JSON line and read one JSON answer: the reload's errors and warnings, the successor's pid,
//! the process's own view of its certificates and routes (its environment, its file). No
//! command signals a pid read from a file, so a stale pid file can never make one signal
//! another process; a socket file left by a dead gateway refuses the connection.
//!
//! The socket is bound once the signal handlers are installed (`signal::Signals`), with the
//! pid file; a successor binds it anew after the handover (the path then leads to it), and a
//! process removes it on exit only while it is still its own (same inode).

use crate::reload::ReloadOutcome;
use anyhow::{bail, Context};
use gateway_proxy::Shared;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// `<run dir>/control.sock`.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("control.sock")
}

/// A request: one JSON object on one line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Status,
    Reload,
    Upgrade { binary: Option<PathBuf> },
    Certs,
    Route { url: String },
    Upstreams,
    Maintenance { route: String, on: bool },
}

/// What `status` answers: the process and where it serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    pub config: PathBuf,
    pub run_dir: PathBuf,
    pub https: String,
    /// The metrics listener (`/healthz`), when on.
    pub metrics: Option<String>,
    /// Start time, seconds since the Unix epoch.
    pub started: i64,
    /// Seconds since the Unix epoch of the last configuration applied.
    pub last_reload: i64,
}

/// An answer: one JSON object on one line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Response {
    Status(Status),
    Reload(ReloadOutcome),
    /// The successor listens on the upgrade socket; `old` hands the sockets over to it now.
    Upgrade {
        old: u32,
        new: u32,
    },
    /// Text for the terminal (`certs`, `route`); `ok` is the command's exit status.
    Text {
        text: String,
        ok: bool,
    },
    Error {
        message: String,
    },
}

/// The running gateway's side of the socket.
pub struct Control {
    pub shared: Arc<Shared>,
    /// The ACME client (next renewals, refused pairs, storage state for `certs`).
    pub acme: Arc<gateway_tls::acme::AcmeManager>,
    /// Reloads asked for here, run by `reload::Reloader` (one at a time, with SIGHUPs and file
    /// changes), each answered with its outcome.
    pub reload: mpsc::UnboundedSender<oneshot::Sender<ReloadOutcome>>,
    pub config: PathBuf,
    pub run_dir: PathBuf,
    /// The binary's path when the process started (a new binary installed there since is
    /// what an upgrade runs; `/proc/self/exe` would still be the old one).
    pub exe: PathBuf,
    pub started: SystemTime,
    bound: AtomicBool,
    /// Inode of the socket this process bound (0: none), to remove only its own on exit.
    inode: AtomicU64,
    upgrading: AtomicBool,
}

impl Control {
    pub fn new(
        shared: Arc<Shared>,
        acme: Arc<gateway_tls::acme::AcmeManager>,
        reload: mpsc::UnboundedSender<oneshot::Sender<ReloadOutcome>>,
        config: PathBuf,
        run_dir: PathBuf,
    ) -> Arc<Self> {
        Arc::new(Control {
            shared,
            acme,
            reload,
            config,
            run_dir,
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("gateway")),
            started: SystemTime::now(),
            bound: AtomicBool::new(false),
            inode: AtomicU64::new(0),
            upgrading: AtomicBool::new(false),
        })
    }

    /// Binds the socket (replacing a stale one, or the predecessor's after an upgrade) and
    /// serves it on the current Tokio runtime. Called once the signal handlers are installed;
    /// later calls (after a failed handover) do nothing.
    pub fn start(self: &Arc<Self>) {
        if self.bound.swap(true, Ordering::AcqRel) {
            return;
        }
        let path = socket_path(&self.run_dir);
        let _ = std::fs::remove_file(&path);
        let listener = match UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(socket = %path.display(), error = %e, "cannot bind the control socket: `gateway reload`, `upgrade` and `healthcheck` will not reach this process");
                return;
            }
        };
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        if let Ok(meta) = std::fs::metadata(&path) {
            self.inode.store(meta.ino(), Ordering::Release);
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let me = me.clone();
                        tokio::spawn(async move { me.handle(stream).await });
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "control socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }

    /// Removes the socket file if it is still the one this process bound.
    pub fn remove_own_socket(&self) {
        let path = socket_path(&self.run_dir);
        let ours = self.inode.load(Ordering::Acquire);
        if ours != 0 && std::fs::metadata(&path).is_ok_and(|m| m.ino() == ours) {
            let _ = std::fs::remove_file(&path);
        }
    }

    async fn handle(self: Arc<Self>, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let mut reader = BufReader::new(read).take(64 * 1024);
        let read = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
        let mut after = None;
        let response = match read {
            Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
                Ok(req) => {
                    let (r, then) = self.answer(req).await;
                    after = then;
                    r
                }
                Err(e) => Response::Error {
                    message: format!("not a control request: {e}"),
                },
            },
            _ => return,
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_default();
        out.push(b'\n');
        let _ = write.write_all(&out).await;
        let _ = write.shutdown().await;
        if let Some(f) = after {
            f();
        }
    }

    /// The answer, and what to do once it is written (hand the sockets over).
    async fn answer(&self, req: Request) -> (Response, Option<Box<dyn FnOnce() + Send>>) {
        match req {
            Request::Status => (Response::Status(self.status()), None),
            Request::Reload => {
                let (tx, rx) = oneshot::channel();
                if self.reload.send(tx).is_err() {
                    return (
                        error("the reloader has stopped (the gateway is shutting down)"),
                        None,
                    );
                }
                match rx.await {
                    Ok(outcome) => (Response::Reload(outcome), None),
                    Err(_) => (
                        error("the reload did not finish (the gateway is shutting down)"),
                        None,
                    ),
                }
            }
            Request::Upgrade { binary } => self.upgrade(binary).await,
            Request::Certs => {
                let snap = self.shared.snapshot.load_full();
                let (text, ok) =
                    crate::acme::render_certs(&snap.config, &self.shared.certs, Some(&self.acme));
                (Response::Text { text, ok }, None)
            }
            Request::Maintenance { route, on } => (self.maintenance(&route, on), None),
            Request::Upstreams => {
                let snap = self.shared.snapshot.load_full();
                let (text, ok) = crate::upstreams::render(&snap.groups);
                (Response::Text { text, ok }, None)
            }
            Request::Route { url } => {
                let snap = self.shared.snapshot.load_full();
                let (mut text, ok) = crate::inspect::route_text(&snap.config, &snap.table, &url);
                let (host, target) = crate::inspect::split_url(&url);
                if let gateway_routing::Decision::Forward { route, .. } = snap.table.decide(host, target) {
                    let name = &route.config.name;
                    if !route.config.maintenance && self.shared.policy.maintenance.active(name, false) {
                        text.push_str(&format!(
                            "maintenance: on (switched at run time; `gateway maintenance off {name}`): 503\n"
                        ));
                    }
                }
                (Response::Text { text, ok }, None)
            }
        }
    }

    /// `gateway maintenance on|off ROUTE`.
    fn maintenance(&self, route: &str, on: bool) -> Response {
        let snap = self.shared.snapshot.load();
        let Some(r) = snap.config.routes.iter().find(|r| r.name == route) else {
            let names: Vec<&str> = snap.config.routes.iter().map(|r| r.name.as_str()).collect();
            return error(&format!(
                "no route is named `{route}`; the routes: {}",
                names.join(", ")
            ));
        };
        let switches = &self.shared.policy.maintenance;
        let changed = switches.set(route, on);
        tracing::info!(route, on, changed, "maintenance switched");
        let text = match (on, r.maintenance) {
            (true, _) => format!("route {route}: maintenance on (503 with Retry-After; the other routes keep serving){}\n", if changed { "" } else { " (it already was)" }),
            (false, true) => format!("route {route}: switched off here, but proxy.toml says `maintenance = true`: it stays in maintenance until the file says otherwise\n"),
            (false, false) => format!("route {route}: maintenance off{}\n", if changed { "" } else { " (it already was)" }),
        };
        Response::Text {
            text,
            ok: on || !r.maintenance,
        }
    }

    fn status(&self) -> Status {
        let cfg = &self.shared.snapshot.load().config;
        Status {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            config: self.config.clone(),
            run_dir: self.run_dir.clone(),
            https: gateway_config::addr_list(&cfg.listen.https),
            metrics: cfg.listen.metrics.map(|a| a.to_string()),
            started: crate::reload::unix_seconds(self.started),
            last_reload: self.shared.metrics.last_reload_success.get(),
        }
    }

    /// Starts the successor (`upgrade::start_successor`: same binary path or `binary`, this
    /// process's environment, arguments and user, a child in its cgroup), and once it
    /// listens on the upgrade socket, answers and then hands the sockets over (SIGQUIT to
    /// this process, Pingora's handover).
    async fn upgrade(&self, binary: Option<PathBuf>) -> (Response, Option<Box<dyn FnOnce() + Send>>) {
        if std::process::id() == 1 {
            return (
                error("this gateway is PID 1 (a container's init): its successor would end with it. In a container, replace the container instead (`docker compose up -d gateway`)"),
                None,
            );
        }
        if self.upgrading.swap(true, Ordering::AcqRel) {
            return (error("an upgrade of this gateway is already under way"), None);
        }
        let exe = binary.unwrap_or_else(|| self.exe.clone());
        let (config, run_dir) = (self.config.clone(), self.run_dir.clone());
        let started =
            tokio::task::spawn_blocking(move || crate::upgrade::start_successor(&exe, &config, &run_dir))
                .await;
        match started {
            Ok(Ok(new)) => {
                let old = std::process::id();
                tracing::info!(
                    successor = new,
                    "upgrade: the successor is ready; handing the listening sockets over"
                );
                let handover: Box<dyn FnOnce() + Send> = Box::new(|| {
                    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGQUIT);
                });
                (Response::Upgrade { old, new }, Some(handover))
            }
            Ok(Err(e)) => {
                self.upgrading.store(false, Ordering::Release);
                tracing::warn!(error = %format!("{e:#}"), "upgrade refused; still serving");
                (error(&format!("{e:#}")), None)
            }
            Err(e) => {
                self.upgrading.store(false, Ordering::Release);
                (error(&format!("the upgrade task failed: {e}")), None)
            }
        }
    }
}

fn error(message: &str) -> Response {
    Response::Error {
        message: message.to_owned(),
    }
}

/// Sends `req` to the gateway running with `run_dir` and returns its answer; `wait` bounds
/// the whole exchange. A missing or refusing socket means no gateway runs there.
pub fn request(run_dir: &Path, req: &Request, wait: Duration) -> anyhow::Result<Response> {
    use std::io::{BufRead, Write};
    let path = socket_path(run_dir);
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => bail!(
            "no gateway is running with the run directory {} ({}: {e}); start one with `gateway run`, or give its --run-dir / GATEWAY_RUN_DIR",
            run_dir.display(),
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", path.display())),
    };
    stream.set_read_timeout(Some(wait))?;
    stream.set_write_timeout(Some(wait))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut answer)
        .with_context(|| format!("waiting for the gateway's answer on {}", path.display()))?;
    if answer.trim().is_empty() {
        bail!("the gateway closed {} without an answer", path.display());
    }
    serde_json::from_str(answer.trim()).with_context(|| format!("reading the answer on {}", path.display()))
}

/// The running gateway's status, or why none answers.
pub fn status(run_dir: &Path, wait: Duration) -> anyhow::Result<Status> {
    match request(run_dir, &Request::Status, wait)? {
        Response::Status(s) => Ok(s),
        Response::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer: {other:?}"),
    }
}
