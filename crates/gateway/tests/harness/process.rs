//! Processes a test starts, or causes to start (`gateway upgrade` starts gateways that are not
//! the test's children): each is stopped when its guard is dropped, whatever happens.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Interval of the exit checks.
const POLL: Duration = Duration::from_millis(10);

/// A child process, killed (SIGKILL) and reaped when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process that is not this test's child, killed (SIGKILL) when dropped unless it is gone.
pub struct KillPid(pub i32);

impl Drop for KillPid {
    fn drop(&mut self) {
        if !gone(self.0) {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
}

/// Whether process `pid` has exited: no `/proc/<pid>` any more, or a zombie not yet reaped
/// (proc(5): the state is the field after the `)` that closes the command name).
pub fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Waits up to `limit` for `child` to exit; `None` when it is still running (left as is).
pub async fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits up to `limit` for process `pid` (not a child) to be gone; whether it is.
pub async fn wait_gone(pid: i32, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if gone(pid) {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every process, but this one, whose command line has `arg` as one of its arguments (such
/// as a test's own run directory), from `/proc/<pid>/cmdline` (NUL-separated).
pub fn with_arg(arg: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|d| d.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && !gone(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
        })
        .collect()
}

/// Kills (SIGKILL) every process [`with_arg`] `self.0` when dropped: the backstop for
/// processes a failed step left behind without telling their pid (a gateway started by an
/// interrupted `gateway upgrade`).
pub struct KillAllWithArg(pub String);

impl Drop for KillAllWithArg {
    fn drop(&mut self) {
        for pid in with_arg(&self.0) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
