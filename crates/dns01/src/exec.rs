//! `kind = "exec"`: the admin's program publishes the record, for every DNS host without a
//! built-in provider (DNSPod, Huawei Cloud, ...). The calling convention is lego's `exec`
//! provider's: `COMMAND present FQDN VALUE` and `COMMAND cleanup FQDN VALUE`, FQDN with its
//! trailing dot (`_acme-challenge.example.com.`), exit status 0 for success. The program runs
//! without a shell, with the gateway's environment, and is killed after `timeout`.

use crate::{Dns01Error, Provider, Record};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The most of the program's output kept for an error message.
const OUTPUT_LIMIT: usize = 2048;

#[derive(Debug)]
pub struct Exec {
    command: PathBuf,
    timeout: Duration,
}

impl Exec {
    pub fn new(c: &gateway_config::ExecHook) -> Exec {
        Exec {
            command: c.command.clone(),
            timeout: c.timeout,
        }
    }

    /// Runs `command action fqdn. value`. Errors ([`Dns01Error::Exec`]): the program cannot
    /// be started, exits non-zero (its stderr, then stdout, up to 2 KiB, is in the message)
    /// or runs past the timeout (it is killed).
    async fn run(&self, action: &'static str, r: &Record) -> Result<(), Dns01Error> {
        let err = |detail: String| Dns01Error::Exec {
            command: self.command.display().to_string(),
            action,
            detail,
        };
        let mut child = tokio::process::Command::new(&self.command)
            .arg(action)
            .arg(format!("{}.", r.fqdn))
            .arg(&r.value)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so a timeout kills what the hook started too (a `curl`
            // or `sleep` left running could add the record after the gateway gave up).
            .process_group(0)
            .spawn()
            .map_err(|e| err(format!("cannot be started: {e}")))?;
        let pgid = child.id();
        let mut out = child.stdout.take();
        let mut errout = child.stderr.take();
        // Both pipes are read at once: a program that fills one while the other is read
        // would otherwise block forever.
        let read = async {
            let o = async {
                let mut v = Vec::new();
                if let Some(s) = out.as_mut() {
                    let _ = s.read_to_end(&mut v).await;
                }
                v
            };
            let e = async {
                let mut v = Vec::new();
                if let Some(s) = errout.as_mut() {
                    let _ = s.read_to_end(&mut v).await;
                }
                v
            };
            let (o, e) = tokio::join!(o, e);
            (child.wait().await, o, e)
        };
        let (status, o, e) = match tokio::time::timeout(self.timeout, read).await {
            Ok(r) => r,
            Err(_) => {
                if let Some(pid) = pgid.and_then(|p| i32::try_from(p).ok()) {
                    // SIGKILL to the whole group; the hook itself is killed on drop too.
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                return Err(err(format!(
                    "ran past its timeout of {:?} and was killed with its process group",
                    self.timeout
                )));
            }
        };
        let status = status.map_err(|e| err(format!("could not be waited for: {e}")))?;
        if status.success() {
            return Ok(());
        }
        let text = if e.iter().any(|b| !b.is_ascii_whitespace()) {
            e
        } else {
            o
        };
        let mut text = String::from_utf8_lossy(&text[..text.len().min(OUTPUT_LIMIT)])
            .trim()
            .to_owned();
        if text.is_empty() {
            text = "(no output)".into();
        }
        Err(err(format!("failed ({status}): {text}")))
    }
}

#[async_trait::async_trait]
impl Provider for Exec {
    fn kind(&self) -> &'static str {
        "exec"
    }

    async fn present(&self, r: &Record) -> Result<(), Dns01Error> {
        self.run("present", r).await
    }

    async fn cleanup(&self, r: &Record) -> Result<(), Dns01Error> {
        self.run("cleanup", r).await
    }
}
