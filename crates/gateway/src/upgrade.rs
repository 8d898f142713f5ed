//! `gateway upgrade`: replace the running process with a new one (a new binary, or the same
//! one to pick up listener changes) without closing the listening sockets.
//!
//! Pingora's handover: the new process starts with `--upgrade` and waits on the upgrade
//! socket; SIGQUIT makes the old process send its listening sockets there, stop accepting,
//! and finish its in-flight requests within the grace period.

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct UpgradeArgs {
    pub config: PathBuf,
    pub run_dir: PathBuf,
    pub binary: Option<PathBuf>,
    pub log: Option<PathBuf>,
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

pub fn upgrade(a: UpgradeArgs) -> anyhow::Result<()> {
    let pid_file = crate::run::pid_path(&a.run_dir);
    let old = read_pid(&pid_file)
        .with_context(|| format!("no running gateway recorded in {}", pid_file.display()))?;
    if !alive(old) {
        bail!("process {old} from {} is not running", pid_file.display());
    }
    let exe = match a.binary {
        Some(b) => b,
        None => std::env::current_exe().context("locating the gateway binary")?,
    };
    // Refuse before touching anything when the new binary rejects the configuration.
    let check = Command::new(&exe)
        .arg("check")
        .arg("--config")
        .arg(&a.config)
        .output()
        .context("running check")?;
    if !check.status.success() {
        bail!(
            "the new process would refuse the configuration:\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let mut cmd = Command::new(&exe);
    cmd.arg("run")
        .arg("--upgrade")
        .arg("--config")
        .arg(&a.config)
        .arg("--run-dir")
        .arg(&a.run_dir);
    match &a.log {
        Some(path) => {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            cmd.stdout(f.try_clone()?).stderr(f);
        }
        None => {
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        }
    }
    // Its own process group: the admin's terminal closing must not stop the new gateway.
    cmd.stdin(Stdio::null()).process_group(0);
    let child = cmd.spawn().context("starting the new gateway")?;
    let new = child.id() as i32;
    kill(Pid::from_raw(old), Signal::SIGQUIT).with_context(|| format!("signalling process {old}"))?;
    // The new process writes the pid file once it holds the sockets.
    let start = Instant::now();
    while read_pid(&pid_file) != Some(new) {
        if !alive(new) {
            bail!("the new gateway ({new}) exited during the handover; the old one ({old}) keeps serving if it still runs");
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("the new gateway ({new}) did not take over within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("gateway upgraded: process {new} now serves; process {old} finishes its requests and exits");
    Ok(())
}
