//! The nginx side of the equivalence test: the nginx process (the routing oracle's,
//! `crates/routing/tests/nginx_oracle/nginx.rs`, builds its configuration from the reference
//! locations; here nginx runs a rewritten file given as text, on two ports). Finding nginx,
//! free ports, the recording upstreams and the raw HTTP/1.1 client are the oracle's own
//! (`nginx_oracle/common.rs`, included below); this test's client sends Basic credentials.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

#[path = "../../../routing/tests/nginx_oracle/common.rs"]
mod common;
pub(crate) use common::*;

// ---------------------------------------------------------------------------------------
// nginx

/// The modules whose temporary directories nginx creates (those not left out at build).
pub(crate) fn temp_modules(build: &str) -> Vec<&'static str> {
    let mut out = vec!["client_body"];
    for m in ["proxy", "fastcgi", "uwsgi", "scgi"] {
        if !build.contains(&format!("--without-http_{m}_module")) {
            out.push(m);
        }
    }
    out
}

/// The ports and directory a configuration is written for.
pub(crate) struct Slot<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) http_port: u16,
    pub(crate) https_port: u16,
    pub(crate) build: &'a str,
}

/// nginx in the foreground, one process, everything under a temporary directory; killed on
/// drop. `https` is the port of the file's `ssl` listeners, `http` that of the others.
pub(crate) struct NginxProcess {
    child: Child,
    dir: tempfile::TempDir,
    pub(crate) http: SocketAddr,
    pub(crate) https: SocketAddr,
    pub(crate) version: String,
}

impl NginxProcess {
    /// Writes `conf(slot)` as `nginx.conf` in a new temporary directory and starts nginx
    /// on it; `plain`: the file has plain-HTTP servers too, wait for that port as well.
    pub(crate) fn start(label: &str, plain: bool, conf: &dyn Fn(&Slot<'_>) -> String) -> NginxProcess {
        let bin = nginx_binary();
        let build = nginx_build(&bin);
        let version = build.lines().next().unwrap_or("nginx").trim().to_string();
        let mut last_error = String::new();
        // A free port can be taken between probing and nginx's bind: a few attempts.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("nginx-equivalence-")
                .tempdir()
                .expect("a temporary directory for nginx");
            // Two ports, never the same one (nginx would merge the plain and TLS servers).
            let http_port = free_port();
            let https_port = loop {
                let p = free_port();
                if p != http_port {
                    break p;
                }
            };
            let slot = Slot {
                dir: dir.path(),
                http_port,
                https_port,
                build: &build,
            };
            let path = dir.path().join("nginx.conf");
            std::fs::write(&path, conf(&slot)).expect("write nginx.conf");
            let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr.log");
            let child = Command::new(&bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(path)
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL}", bin.display()));
            let mut nginx = NginxProcess {
                child,
                dir,
                http: SocketAddr::from(([127, 0, 0, 1], http_port)),
                https: SocketAddr::from(([127, 0, 0, 1], https_port)),
                version: version.clone(),
            };
            match nginx.wait_ready(plain) {
                Ok(()) => return nginx,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx ({label}) did not start: {last_error}");
    }

    /// Polls until nginx answers on its ports (any HTTP answer: the probe's `Host` is no
    /// server's name), 10 ms between attempts, 10 s at most.
    fn wait_ready(&mut self, plain: bool) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let answers = |addr: SocketAddr| Client::new(addr).try_get("readiness.invalid", "/").is_ok();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("nginx exited at start ({status}):\n{}", self.logs()));
            }
            if answers(self.https) && (!plain || answers(self.http)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx did not answer on {} within 10 s:\n{}",
                    self.https,
                    self.logs()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!(
            "--- nginx.conf\n{}--- stderr\n{}--- error.log\n{}",
            read("nginx.conf"),
            read("stderr.log"),
            read("error.log")
        )
    }
}

impl Drop for NginxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `admin:equivalence`, the user of `tests/data/corpus/htpasswd` (bcrypt, which nginx
/// checks with the system's crypt(3) and the gateway with its own code): every request
/// carries it, so that `auth_basic` locations proxy instead of answering 401.
pub(crate) const AUTHORIZATION: &str = "Basic YWRtaW46ZXF1aXZhbGVuY2U=";
