//! `gateway upgrade`: replace the running process with a new one (a new binary, or the same
//! one to pick up listener changes) without closing the listening sockets.
//!
//! As nginx does it (`kill -USR2` makes the master start its successor), the running gateway
//! starts its successor itself, asked through the control socket (`control.rs`): the
//! successor gets the running process's environment, arguments, user and cgroup (under
//! systemd it stays in the unit, its journal and sandbox), never the caller's shell.
//!
//! Pingora's handover (vendor/pingora-core `server/mod.rs`, `server/transfer_fd/mod.rs`): the
//! new process, started with `--upgrade`, binds the upgrade socket (`<run dir>/
//! gateway_upgrade.sock`), listens, and accepts for about 6 s; SIGQUIT makes the old process
//! connect there (5 tries, 1 s apart), send its listening sockets, keep accepting for 5 s
//! (`CLOSE_TIMEOUT`), then drain within `grace_period` and exit.
//!
//! The order makes every step safe to fail:
//! 1. one upgrade at a time (a flag in the running process, and a lock in the run directory);
//! 2. the successor's binary must accept the configuration (`check`), then it starts; nothing
//!    is signalled until it *listens* on the upgrade socket (seen in `/proc/net/unix`, and the
//!    socket is its own: `/proc/<pid>/fd`). Until then the running process is untouched: if the
//!    successor fails or is slow, it is stopped and the old one keeps serving;
//! 3. the running process answers the CLI, then sends itself SIGQUIT and hands the sockets
//!    over. Should that fail, the patched Pingora keeps it serving;
//! 4. the CLI is done when the control socket answers from the successor: it binds it once it
//!    handles SIGQUIT, SIGTERM, SIGINT and SIGHUP (`signal::Signals`), so the next `gateway
//!    upgrade` or `gateway reload` may follow at once.
//!
//! Processes still draining from earlier upgrades take no part: they no longer accept and
//! only finish their requests. So upgrades may follow each other without waiting for drains.

use anyhow::{bail, Context};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct UpgradeArgs {
    pub run_dir: PathBuf,
    pub binary: Option<PathBuf>,
}

/// How long the new process may take to listen on the upgrade socket (it reads the
/// configuration and certificate files first, and may generate a self-signed stand-in).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the new process may take, once the old one is signalled, to receive the sockets,
/// start its services and write the pid file.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval of the readiness checks (reads of /proc and of the pid file).
const POLL: Duration = Duration::from_millis(20);
/// Pingora's `CLOSE_TIMEOUT`: the old process accepts for this long after the handover.
const CLOSE_TIMEOUT_SECS: u64 = 5;

/// `__SO_ACCEPTCON` in the Flags column of /proc/net/unix: the socket listens.
const SO_ACCEPTCON: u32 = 0x0001_0000;

/// Inodes of the Unix sockets that listen on `path`, from `/proc/net/unix` (Linux; columns
/// `Num RefCount Protocol Flags Type St Inode Path`, see proc(5)). The path is compared as
/// the new process was given it: both sides derive it from the same `--run-dir`.
fn listening_inodes(path: &Path) -> Vec<u64> {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return Vec::new();
    };
    parse_listening_inodes(&table, &path.display().to_string())
}

fn parse_listening_inodes(table: &str, path: &str) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 || fields[7..].join(" ") != path {
                return None;
            }
            let flags = u32::from_str_radix(fields[3], 16).ok()?;
            if flags & SO_ACCEPTCON == 0 {
                return None;
            }
            fields[6].parse().ok()
        })
        .collect()
}

/// Whether process `pid` holds one of the sockets `inodes` (its `/proc/<pid>/fd` links read
/// `socket:[<inode>]`; readable for processes of the same user).
fn holds_socket(pid: i32, inodes: &[u64]) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
    })
}

/// A process already listening on the upgrade socket (another new process waiting for the
/// sockets), if any.
fn waiting_on(sock: &Path) -> Option<i32> {
    let inodes = listening_inodes(sock);
    if inodes.is_empty() {
        return None;
    }
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|d| d.file_name().to_str()?.parse::<i32>().ok())
        .find(|&pid| holds_socket(pid, &inodes))
}

/// Whether `pid` listens on the upgrade socket `sock`: bound, listening, and its own (a
/// socket file left by another process does not count).
fn listens_on(pid: i32, sock: &Path) -> bool {
    let inodes = listening_inodes(sock);
    !inodes.is_empty() && holds_socket(pid, &inodes)
}

/// An exclusive `flock(2)` on `<run dir>/upgrade.lock`, held until the upgrade is done:
/// two upgrades at once would start two processes waiting on the same upgrade socket.
fn lock(run_dir: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = run_dir.join("upgrade.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => bail!(
            "another `gateway upgrade` is running for {}: wait until it has finished",
            run_dir.display()
        ),
        Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// Stops the new process (it has not been given the sockets) and reaps it.
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `gateway upgrade` (the CLI): asks the running gateway to start its successor, then waits
/// until the successor answers on the control socket.
pub fn upgrade(a: UpgradeArgs) -> anyhow::Result<()> {
    use crate::control::{request, status, Request, Response};
    let binary = match a.binary {
        Some(b) => Some(std::path::absolute(&b).with_context(|| format!("locating {}", b.display()))?),
        None => None,
    };
    let (old, new) = match request(
        &a.run_dir,
        &Request::Upgrade { binary },
        READY_TIMEOUT + Duration::from_secs(15),
    )? {
        Response::Upgrade { old, new } => (old, new),
        Response::Error { message } => bail!("{message}; the running gateway keeps serving"),
        other => bail!("unexpected answer: {other:?}"),
    };
    let start = Instant::now();
    // The successor answers on the control socket a moment before it writes the pid file
    // (signal.rs): "now serves" is printed once both name it, so the pid file an admin reads
    // next is the new one.
    let pid_file = crate::run::pid_path(&a.run_dir);
    let names_new = || std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == new.to_string());
    let mut serving = false;
    loop {
        serving |= status(&a.run_dir, Duration::from_secs(2)).is_ok_and(|s| s.pid == new);
        if serving && names_new() {
            break;
        }
        if start.elapsed() > TAKEOVER_TIMEOUT {
            if serving {
                bail!(
                    "process {new} serves, but {} does not name it after {TAKEOVER_TIMEOUT:?}: see the gateway's log (cannot write the pid file)",
                    pid_file.display()
                );
            }
            bail!(
                "the new gateway ({new}) did not take over within {TAKEOVER_TIMEOUT:?}; process {old} got SIGQUIT: see the gateway's log and `gateway healthcheck`"
            );
        }
        std::thread::sleep(POLL);
    }
    println!(
        "gateway upgraded: process {new} now serves; process {old} accepts for {CLOSE_TIMEOUT_SECS} s more, finishes its requests within server.grace_period, and exits"
    );
    Ok(())
}

/// In the running gateway: starts its successor `exe run --upgrade --config CONFIG
/// --run-dir RUN_DIR` with this process's environment, user and output, and returns its pid
/// once it listens on the upgrade socket. Nothing is signalled here.
pub fn start_successor(exe: &Path, config: &Path, run_dir: &Path) -> anyhow::Result<u32> {
    let _lock = lock(run_dir)?;
    let sock = gateway_proxy::upgrade_sock_path(run_dir);
    if let Some(pid) = waiting_on(&sock) {
        bail!(
            "process {pid} already waits for the sockets on {} (an interrupted upgrade, or `gateway run --upgrade` started by hand); it gives up within seconds: try again then",
            sock.display()
        );
    }
    // Refuse before touching anything when the new binary rejects the configuration.
    let check = Command::new(exe)
        .arg("check")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} check", exe.display()))?;
    if !check.status.success() {
        bail!(
            "the new process would refuse the configuration:\n{}",
            String::from_utf8_lossy(&check.stderr).trim_end()
        );
    }
    let mut child = Command::new(exe)
        .arg("run")
        .arg("--upgrade")
        .arg("--config")
        .arg(config)
        .arg("--run-dir")
        .arg(run_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        // A process group of its own, as `gateway run` started by hand: whatever signals this
        // process's group (a terminal's ^C, a supervisor's group kill) leaves the successor.
        // Under systemd it stays in the unit's cgroup all the same.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let new = child.id() as i32;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().context("watching the new gateway")? {
            bail!("the new gateway ({new}) exited before it was ready ({status}); see its lines in this gateway's log");
        }
        if listens_on(new, &sock) {
            // Not waited for: it outlives this process (and is re-parented when this one exits).
            drop(child);
            return Ok(new as u32);
        }
        if start.elapsed() > READY_TIMEOUT {
            stop(&mut child);
            bail!(
                "the new gateway ({new}) did not listen on {} within {READY_TIMEOUT:?}; it was stopped",
                sock.display()
            );
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_listening_inodes;

    #[test]
    fn only_listening_sockets_on_the_path_count() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 4242 /run/g/gateway_upgrade.sock
0000000000000000: 00000002 00000000 00000000 0001 01 4243 /run/g/gateway_upgrade.sock
0000000000000000: 00000002 00000000 00010000 0001 01   77 /run/other.sock
0000000000000000: 00000003 00000000 00000000 0001 03  4244
";
        assert_eq!(
            parse_listening_inodes(table, "/run/g/gateway_upgrade.sock"),
            vec![4242]
        );
        assert!(parse_listening_inodes(table, "/run/g/none.sock").is_empty());
        assert!(parse_listening_inodes("", "/x").is_empty());
    }

    #[test]
    fn a_second_upgrade_at_the_same_time_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = super::lock(dir.path()).unwrap();
        let err = super::lock(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another `gateway upgrade` is running"), "{err}");
        drop(first);
        if let Err(e) = super::lock(dir.path()) {
            panic!("super::lock(dir.path()): {e:?}");
        }
    }
}
