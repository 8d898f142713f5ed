//! `gateway reload`: tell the running process to reload, through its pid file.

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;

pub fn send(run_dir: &Path, sig: Signal) -> anyhow::Result<i32> {
    let path = crate::run::pid_path(run_dir);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is the gateway running with this --run-dir?)",
            path.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold a pid", path.display()))?;
    kill(Pid::from_raw(pid), sig).with_context(|| format!("signalling process {pid}"))?;
    Ok(pid)
}
