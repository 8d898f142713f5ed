//! The running process's signal handlers, installed before the pid file and the control
//! socket say the process is there. (The CLI signals nothing: it asks through the control
//! socket, `control.rs`.)
//!
//! Until a process has a handler, SIGQUIT, SIGTERM, SIGINT and SIGHUP kill it (their default
//! action). So `gateway run` writes its pid file only from [`Signals`], Pingora's main loop,
//! once all four are handled: whoever reads the pid file (`gateway reload`, `gateway upgrade`,
//! systemd's `ExecReload`, a test) can signal it safely from then on.

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Pingora's shutdown signals (SIGQUIT: hand the sockets over, SIGTERM: drain, SIGINT: stop
/// now), SIGHUP forwarded to the reloader, and the pid file written once all are handled.
///
/// Given to `Server::run` in place of Pingora's `UnixShutdownSignalWatch`, which installs its
/// handlers only when the main loop starts and panics if it cannot.
pub struct Signals {
    /// `<run dir>/gateway.pid`, written (atomically) once the handlers are installed.
    pub pid_file: PathBuf,
    /// Each SIGHUP, for [`crate::reload::Reloader`]. Unbounded and buffered: a SIGHUP that
    /// arrives before the reloader runs is not lost.
    pub hup: mpsc::UnboundedSender<()>,
    /// The control socket, bound with the pid file.
    pub control: Arc<crate::control::Control>,
    /// Started by `gateway upgrade` (`run --upgrade`): tells systemd it is the main process now.
    pub successor: bool,
    /// The listen addresses: readiness is sent once each has a listening socket.
    pub listeners: Vec<std::net::SocketAddr>,
}

/// A handler for `kind`, or `None` (logged) when it cannot be installed.
fn install(kind: SignalKind, name: &str) -> Option<tokio::signal::unix::Signal> {
    signal(kind)
        .map_err(|e| tracing::error!(error = %e, "cannot handle {name}"))
        .ok()
}

/// The next delivery of `s`; never, when there is no handler or the driver has gone.
async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
    let delivered = match s.as_mut() {
        Some(s) => s.recv().await.is_some(),
        None => false,
    };
    if !delivered {
        *s = None;
        std::future::pending::<()>().await;
    }
}

/// Writes `pid` to `path` through a temporary file and a rename, so a reader never sees a
/// partial number (and never signals a wrong process).
pub fn write_pid_file(path: &Path, pid: u32) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("pid.tmp-{pid}"));
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    /// Every client connection has finished: the grace period after SIGTERM (or after a
    /// handover) ends at once instead of running its whole length.
    fn drained(&self) -> bool {
        self.control.shared.drained()
    }

    async fn recv(&self) -> ShutdownSignal {
        let mut quit = install(SignalKind::quit(), "SIGQUIT");
        let mut term = install(SignalKind::terminate(), "SIGTERM");
        let mut int = install(SignalKind::interrupt(), "SIGINT");
        let mut hup = install(SignalKind::hangup(), "SIGHUP");
        // logrotate's convention (nginx `-s reopen`): the access log file is opened again.
        let mut usr1 = install(SignalKind::user_defined1(), "SIGUSR1");
        // Pingora calls this again after a failed socket handover (the vendored main loop
        // keeps serving): the pid file then names this process again, which is right.
        self.control.start();
        match write_pid_file(&self.pid_file, std::process::id()) {
            Ok(()) => tracing::info!(pid_file = %self.pid_file.display(), "ready for signals"),
            Err(e) => tracing::error!(
                pid_file = %self.pid_file.display(),
                error = %e,
                "cannot write the pid file: `gateway reload` and `gateway upgrade` will not find this process"
            ),
        }
        if self.successor {
            crate::notify::main_pid(std::process::id());
        }
        // Pingora binds the listeners in the services' runtimes, concurrently with this main
        // loop: READY=1 waits until each address has a listening socket of this process.
        tokio::spawn(crate::notify::ready_when_listening(
            self.listeners.clone(),
            std::time::Duration::from_secs(60),
        ));
        loop {
            tokio::select! {
                _ = next(&mut quit) => return ShutdownSignal::GracefulUpgrade,
                _ = next(&mut term) => {
                    crate::notify::stopping();
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = next(&mut int) => {
                    crate::notify::stopping();
                    return ShutdownSignal::FastShutdown;
                }
                _ = next(&mut usr1) => gateway_proxy::access::reopen(),
                _ = next(&mut hup) => {
                    let _ = self.hup.send(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pid_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.pid");
        std::fs::write(&path, "999999\n").unwrap();
        super::write_pid_file(&path, 1234).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1234\n");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left");
    }
}
