//! The gateway binary as a child process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Path of the `gateway` binary under test: Cargo builds it, with this package's features
/// and profile, before it builds the integration tests (`CARGO_BIN_EXE_gateway`).
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gateway"))
}

/// Fills `{HTTPS}`, `{HTTP}`, `{METRICS}` and `{DIR}` in a configuration or an environment value.
fn fill(text: &str, https: SocketAddr, http: SocketAddr, metrics: SocketAddr, dir: &Path) -> String {
    text.replace("{HTTPS}", &https.to_string())
        .replace("{HTTP}", &http.to_string())
        .replace("{METRICS}", &metrics.to_string())
        .replace("{DIR}", &dir.display().to_string())
}

/// A running gateway; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Gateway {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub metrics: SocketAddr,
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
        };
        g.spawn(false, &env);
        g.wait_ready().await;
        g
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Starts the process (again, or as the `--upgrade` successor).
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
            .stderr(err);
        self.child = Some(cmd.spawn().expect("start gateway"));
    }

    /// Polls the HTTPS and metrics listeners until they accept connections, and the pid file
    /// until it names this process (written once it handles SIGHUP, SIGTERM, SIGINT and
    /// SIGQUIT: before that, a signal would kill it).
    pub async fn wait_ready(&mut self) {
        let (https, metrics) = (self.https, self.metrics);
        let logs = self.dir.path().join("stderr.log");
        let pid_file = self.run_dir().join("gateway.pid");
        let child = self.child.as_mut().expect("started");
        let pid = child.id().to_string();
        super::poll_until(Duration::from_secs(30), "the gateway to listen", || {
            let exited = child.try_wait().ok().flatten();
            let logs = logs.clone();
            let signals_handled = std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == pid);
            async move {
                if let Some(status) = exited {
                    panic!(
                        "gateway exited early ({status}):\n{}",
                        std::fs::read_to_string(logs).unwrap_or_default()
                    );
                }
                let a = tokio::net::TcpStream::connect(https).await.ok()?;
                let b = tokio::net::TcpStream::connect(metrics).await.ok()?;
                drop((a, b));
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

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).expect("running")
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

    /// Stops with SIGTERM and waits up to `limit`; returns whether it exited in time.
    pub fn stop(&mut self, limit: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if child.try_wait().ok().flatten().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Takes the current child, leaving the gateway object free to spawn a successor.
    pub fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- gateway stderr ---\n{}", self.stderr());
        }
    }
}

/// A minimal gateway configuration for tests: one catch-all route to `upstream`.
pub fn simple_config(upstream: SocketAddr, extra_routes: &str) -> String {
    format!(
        r#"
[listen]
https = "{{HTTPS}}"
http = "{{HTTP}}"
metrics = "{{METRICS}}"
[server]
grace_period = "2s"
threads = 2
[logging]
access_log = "combined"
[upstreams.echo]
address = "{upstream}"
{extra_routes}
[[routes]]
name = "all"
prefix = "/"
upstream = "echo"
"#
    )
}
