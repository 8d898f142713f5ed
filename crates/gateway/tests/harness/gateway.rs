//! The gateway binary as a child process.

use super::process::{GroupGuard, ProcessGuard};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Path of the `gateway` binary under test: Cargo builds it, with this package's features
/// and profile, before it builds the integration tests (`CARGO_BIN_EXE_gateway`).
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gateway"))
}

/// What a finished command wrote: its stdout, then its stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `gateway ARGS... --run-dir <gw's>`, with a deadline of 60 s.
pub async fn cli(gw: &Gateway, args: &[&str]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args).arg("--run-dir").arg(gw.run_dir());
    super::run_cmd_async(cmd, Duration::from_secs(60)).await
}

/// `gateway check --config <file>`, with a deadline of 60 s.
pub fn check(file: &Path) -> Output {
    let mut cmd = Command::new(binary());
    cmd.arg("check").arg("--config").arg(file);
    super::run_cmd(&mut cmd, Duration::from_secs(60))
}

/// Fills `{HTTPS}`, `{HTTP}`, `{METRICS}` and `{DIR}` in a configuration or an environment value.
fn fill(text: &str, https: SocketAddr, http: SocketAddr, metrics: SocketAddr, dir: &Path) -> String {
    text.replace("{HTTPS}", &https.to_string())
        .replace("{HTTP}", &http.to_string())
        .replace("{METRICS}", &metrics.to_string())
        .replace("{DIR}", &dir.display().to_string())
}

/// A running gateway; killed (its whole process group) when dropped, with every process
/// it was before ([`Gateway::spawn`] again) and every successor adopted after an upgrade.
pub struct Gateway {
    /// The current process, in a process group of its own; the `Gateway` is its guard.
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub metrics: SocketAddr,
    /// The environment of the last start (for `${NAME}` in the listen addresses).
    env: Vec<(String, String)>,
    /// Processes replaced by [`Gateway::spawn`] while still running.
    previous: Vec<ProcessGuard>,
    /// Successors started by `gateway upgrade` (not our children).
    successors: Vec<GroupGuard>,
}

impl Gateway {
    /// Writes `toml` (with `{HTTPS}`, `{HTTP}`, `{METRICS}`, `{DIR}` filled in) and starts it.
    pub async fn start(toml: &str) -> Gateway {
        Self::start_with_env(toml, &[]).await
    }

    pub async fn start_with_env(toml: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let (https, http, metrics) = (super::free_addr(), super::free_addr(), super::free_addr());
        let fill = |text: &str| fill(text, https, http, metrics, dir.path());
        let text = fill(toml);
        let config = dir.path().join("proxy.toml");
        std::fs::write(&config, text).expect("write config");
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), fill(v))).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut g = Gateway {
            child: None,
            dir,
            config,
            https,
            http,
            metrics,
            env: Vec::new(),
            previous: Vec::new(),
            successors: Vec::new(),
        };
        g.spawn(false, &env);
        g.wait_ready().await;
        g
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// `gateway upgrade` for this gateway's file and run directory, its log beside the
    /// gateway's own; the caller runs it with a deadline (`run_cmd_async`).
    pub fn upgrade_command(&self) -> Command {
        let mut cmd = Command::new(binary());
        cmd.arg("upgrade")
            .arg("--config")
            .arg(&self.config)
            .arg("--run-dir")
            .arg(self.run_dir())
            .arg("--log")
            .arg(self.dir.path().join("stderr.log"));
        cmd
    }

    /// Starts the process (again, or as the `--upgrade` successor), in a process group of
    /// its own, guarded by the `Gateway` from the start. A process still held in `child` is
    /// kept running (and guarded) meanwhile.
    pub fn spawn(&mut self, upgrade: bool, env: &[(&str, &str)]) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stdout.log"))
            .unwrap();
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .unwrap();
        let mut cmd = Command::new(binary());
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .arg("--run-dir")
            .arg(self.run_dir());
        if upgrade {
            cmd.arg("--upgrade");
        }
        cmd.env("RUST_LOG", "info,pingora_core=warn,pingora_proxy=warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        self.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if let Some(old) = self.child.take() {
            self.previous
                .push(ProcessGuard::adopt(old, "an earlier gateway process"));
        }
        let child = cmd.spawn().expect("start gateway");
        super::process::register(child.id() as i32);
        self.child = Some(child);
    }

    /// The listeners of the configuration file as it is now: `https`, `http` and `metrics`
    /// of `[listen]` (`"off"` left out); the harness's own addresses when it names none.
    pub fn listeners(&self) -> Vec<SocketAddr> {
        let text = std::fs::read_to_string(&self.config).unwrap_or_default();
        let found = listen_addrs(&text, &self.env);
        if found.is_empty() {
            vec![self.https, self.http, self.metrics]
        } else {
            found
        }
    }

    /// Polls every listener of the configuration (HTTPS, HTTP, metrics) until each accepts
    /// connections, and the pid file until it names this process (written once signals are
    /// handled); fails at once, with the log, if the process exits meanwhile.
    pub async fn wait_ready(&mut self) {
        let addrs = self.listeners();
        let logs = self.dir.path().join("stderr.log");
        let pid_file = self.run_dir().join("gateway.pid");
        let child = self.child.as_mut().expect("started");
        let pid = child.id().to_string();
        let what = format!("the gateway to listen on {addrs:?} and write its pid file");
        super::poll_until(Duration::from_secs(30), &what, || {
            let exited = child.try_wait().ok().flatten();
            let logs = logs.clone();
            let addrs = addrs.clone();
            let signals_handled = std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == pid);
            async move {
                if let Some(status) = exited {
                    panic!(
                        "gateway exited early ({status}):\n{}",
                        std::fs::read_to_string(logs).unwrap_or_default()
                    );
                }
                super::all_accept(&addrs).await?;
                signals_handled.then_some(())
            }
        })
        .await;
    }

    /// The stderr log's size in bytes.
    pub fn stderr_len(&self) -> u64 {
        std::fs::metadata(self.dir.path().join("stderr.log")).map_or(0, |m| m.len())
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https.port())
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    /// The pid of the current process: the child, or else (after an upgrade, the child
    /// taken) the one the pid file names.
    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| c.id() as i32)
            .unwrap_or_else(|| self.pid_file())
    }

    /// The pid in the run directory's pid file.
    pub fn pid_file(&self) -> i32 {
        let path = self.run_dir().join("gateway.pid");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// Rewrites the configuration file in place (the gateway watches it).
    pub fn write_config(&self, toml: &str) {
        let text = fill(toml, self.https, self.http, self.metrics, self.dir.path());
        let tmp = self.dir.path().join("proxy.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, &self.config).unwrap();
    }

    /// `gateway reload`, which must succeed (it returns once the file is applied); what it
    /// printed.
    pub async fn reload(&self) -> String {
        let out = cli(self, &["reload"]).await;
        assert!(out.status.success(), "gateway reload: {}", text(&out));
        text(&out)
    }

    /// The first line of stdout (the access log) that contains `needle`, polled for up to 10 s.
    pub async fn access_line(&self, needle: &str) -> String {
        super::line_with(|| self.stdout(), needle).await
    }

    /// The first line of stderr (the log) that contains `needle`, polled for up to `limit`.
    pub async fn log_line(&self, limit: Duration, needle: &str) -> String {
        super::line_within(limit, || self.stderr(), needle).await
    }

    /// Waits up to `limit` until `check` holds for stderr (the log).
    pub async fn wait_log(&self, limit: Duration, what: &str, check: impl Fn(&str) -> bool) {
        super::until(limit, what, || check(&self.stderr()).then_some(())).await
    }

    /// Stops with SIGTERM and waits up to `limit`; returns whether it exited in time (if not,
    /// it is killed).
    pub fn stop(&mut self, limit: Duration) -> bool {
        let Some(mut child) = self.take_process() else {
            return true;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
        let exited = child.wait_exit(limit).is_some();
        child.kill_group();
        exited
    }

    /// Takes the current child, leaving the gateway object free to spawn a successor. The
    /// caller stops it from then on: wrap it at once (`process::KillOnDrop`,
    /// `ProcessGuard::adopt`), or take it guarded with [`Gateway::take_process`].
    pub fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }

    /// [`Gateway::take_child`], under a guard that kills it (and its group) when dropped.
    pub fn take_process(&mut self) -> Option<ProcessGuard> {
        self.child.take().map(|c| ProcessGuard::adopt(c, "the gateway"))
    }

    /// After `gateway upgrade`, whether it succeeded or not: every process it started for
    /// this gateway (`run --upgrade` with this configuration file, found in /proc; each in a
    /// process group of its own, not our children) is guarded from now on, killed with the
    /// gateway. Returns the pid the pid file names (the successor, when the upgrade worked).
    pub fn adopt_successor(&mut self) -> i32 {
        for pid in upgrade_processes(&self.config) {
            if !self.successors.iter().any(|g| g.pid() == pid) {
                self.successors.push(GroupGuard::new(pid, &binary()));
            }
        }
        self.pid_file()
    }
}

/// Processes running `gateway run --upgrade` with `config`, from /proc.
fn upgrade_processes(config: &Path) -> Vec<i32> {
    use std::os::unix::ffi::OsStrExt;
    let config = config.as_os_str().as_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
            args.iter().any(|a| *a == &b"--upgrade"[..]) && args.contains(&config)
        })
        .collect()
}

impl Drop for Gateway {
    fn drop(&mut self) {
        drop(self.take_process());
        self.previous.clear();
        self.successors.clear();
        if std::thread::panicking() {
            eprintln!("--- gateway stderr ---\n{}", self.stderr());
        }
    }
}

/// The listen addresses of a configuration text (`https`, `http` and `metrics` under
/// `[listen]`), `${NAME}` and `${NAME:-default}` expanded from `env`, then the environment.
/// Values that are no socket address (`"off"`) are left out.
fn listen_addrs(text: &str, env: &[(String, String)]) -> Vec<SocketAddr> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line
                .trim_matches(|c: char| c == '[' || c == ']')
                .trim()
                .to_owned();
            continue;
        }
        if section != "listen" {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !["https", "http", "metrics"].contains(&key.trim()) {
            continue;
        }
        // One quoted address or a list of them: every quoted string on the line.
        for value in value.split('"').skip(1).step_by(2) {
            if let Ok(addr) = expand(value, env).parse::<SocketAddr>() {
                out.push(addr);
            }
        }
    }
    out
}

/// `${NAME}` and `${NAME:-default}` in `value`, as the gateway reads them.
fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find("${") {
        let Some(len) = rest[at..].find('}') else {
            break;
        };
        out.push_str(&rest[..at]);
        let inner = &rest[at + 2..at + len];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let set = env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
            .filter(|v| !v.is_empty() || default.is_none());
        out.push_str(&set.or(default.map(str::to_owned)).unwrap_or_default());
        rest = &rest[at + len + 1..];
    }
    out.push_str(rest);
    out
}

/// An echo upstream and a gateway in front of it: [`simple_config`] with `extra_routes`.
pub async fn with_echo(extra_routes: &str) -> (super::upstream::Upstream, Gateway) {
    let up = super::upstream::echo().await;
    let gw = Gateway::start(&simple_config(up.addr, extra_routes)).await;
    (up, gw)
}

/// An echo upstream and a gateway started with [`super::config::from_env`]: `UP_ADDR` names
/// the upstream, `MARK` is `mark` when given.
pub async fn with_env(mark: Option<&str>) -> (super::upstream::Upstream, Gateway) {
    let up = super::upstream::echo().await;
    let addr = up.addr.to_string();
    let mut env = vec![("UP_ADDR", addr.as_str())];
    if let Some(m) = mark {
        env.push(("MARK", m));
    }
    let gw = Gateway::start_with_env(&super::config::from_env(), &env).await;
    (up, gw)
}

/// A minimal gateway configuration for tests: one catch-all route to `upstream`.
pub fn simple_config(upstream: SocketAddr, extra_routes: &str) -> String {
    use super::config::{preamble, route, upstream_at};
    format!(
        "\n{}[logging]\naccess_log = \"combined\"\n{}{extra_routes}\n{}",
        preamble("2s", ""),
        upstream_at("echo", upstream),
        route("all", "/", "echo", ""),
    )
}
