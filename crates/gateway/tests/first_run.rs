//! A first run that explains itself, and logs that fit their destination: listen addresses
//! that cannot be bound stop the start with one line (no panic, no hang); log lines carry no
//! colour codes off a terminal and can be JSON; rustls' per-client warnings stay out of the
//! log; a stdout nobody reads never stalls requests.

mod harness;

use harness::{client, gateway::simple_config, upstream, Gateway, ProcessGuard};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Waits for the process to exit within `limit` (killed and failing the test if not); its
/// exit code and stderr.
fn finish(mut guard: ProcessGuard, limit: Duration) -> (Option<i32>, String) {
    let status = guard
        .wait_exit(limit)
        .unwrap_or_else(|| panic!("the gateway did not exit within {limit:?}"));
    let mut err = String::new();
    if let Some(mut e) = guard.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    (status.code(), err)
}

/// A config directory readable by every user (for the unprivileged run).
fn config_dir(https: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let metrics = harness::free_addr();
    let toml = format!(
        "[listen]\nhttps = \"{https}\"\nmetrics = \"{metrics}\"\n[upstreams.u]\naddress = \"127.0.0.1:9\"\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"u\"\n"
    );
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, toml).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    dir
}

fn run(dir: &std::path::Path, as_nobody: bool) -> ProcessGuard {
    let bin = harness::gateway::binary();
    let mut cmd = if as_nobody {
        let mut c = Command::new(harness::require_tool("setpriv", "util-linux"));
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    cmd.arg("run")
        .arg("--config")
        .arg(dir.join("proxy.toml"))
        .arg("--run-dir")
        .arg(dir.join("run"))
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    ProcessGuard::spawn(&mut cmd, "the gateway")
}

#[test]
fn a_port_in_use_is_named_with_its_holder_and_the_start_stops() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let dir = config_dir(&addr.to_string());
    let (code, err) = finish(run(dir.path(), false), Duration::from_secs(20));
    assert_eq!(code, Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("listen.https"))
        .unwrap_or_else(|| panic!("no line names listen.https:\n{err}"));
    assert!(
        line.contains(&format!("listen.https = {addr}: cannot listen")),
        "{line}"
    );
    assert!(
        line.contains(&format!("held by process {}", std::process::id())),
        "{line}"
    );
    assert!(line.contains("GATEWAY_HTTPS_ADDR="), "{line}");
    assert!(
        !err.contains(&format!("127.0.0.1:0{}", addr.port())),
        "no internal listener key: {err}"
    );
}

#[test]
fn a_privileged_port_as_a_normal_user_says_how_to_fix_it() {
    // Runs the binary as `nobody`; as a non-root test user it runs as that user.
    let root = nix::unistd::getuid().is_root();
    if root {
        // Needed to run as another user.
        harness::require_tool("setpriv", "util-linux");
    }
    // A privileged port nothing listens on.
    let port = (600..1000)
        .find(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err())
        .expect("a free port below 1024");
    let dir = config_dir(&format!("127.0.0.1:{port}"));
    let started = Instant::now();
    let (code, err) = finish(run(dir.path(), root), Duration::from_secs(20));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "exits at once, no hang"
    );
    assert!(!err.contains("panicked"), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("listen.https"))
        .unwrap_or_else(|| panic!("no line names listen.https:\n{err}"));
    assert!(line.contains("ermission denied"), "{line}");
    assert!(line.contains("setcap cap_net_bind_service=+ep"), "{line}");
    assert!(line.contains("GATEWAY_HTTPS_ADDR="), "{line}");
}

#[tokio::test]
async fn logs_have_no_colour_codes_off_a_terminal_and_can_be_json() {
    let up = upstream::echo().await;
    let text = Gateway::start(&simple_config(up.addr, "")).await;
    let json = Gateway::start(
        &simple_config(up.addr, "[logging]\nformat = \"json\"\n")
            .replace("[logging]\naccess_log = \"combined\"\n", ""),
    )
    .await;
    for gw in [&text, &json] {
        // Traffic, and a broken reload, so there are warnings and errors to log.
        let _ = client::http(false).get(gw.url("/x")).send().await;
        std::fs::write(&gw.config, "[listen\n").unwrap();
        gw.signal(nix::sys::signal::Signal::SIGHUP);
    }
    harness::poll_until(
        Duration::from_secs(10),
        "the refused reload in both logs",
        || async {
            (text.stderr().contains("configuration refused")
                && json.stderr().contains("configuration refused"))
            .then_some(())
        },
    )
    .await;
    for gw in [&text, &json] {
        assert!(
            !gw.stderr().contains('\x1b'),
            "escape codes in a log file:\n{}",
            gw.stderr()
        );
    }
    let lines: Vec<String> = json.stderr().lines().map(str::to_owned).collect();
    assert!(lines.len() >= 3, "{lines:?}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{l}");
    }
}

#[tokio::test]
async fn an_ip_address_as_sni_is_not_logged_per_connection() {
    let up = upstream::echo().await;
    let gw = Gateway::start(&simple_config(up.addr, "")).await;
    // Needed to send an IP address as SNI.
    let openssl = harness::require_tool("openssl", "openssl");
    for _ in 0..5 {
        let mut cmd = Command::new(&openssl);
        cmd.args([
            "s_client",
            "-connect",
            &gw.https.to_string(),
            "-servername",
            "127.0.0.1",
        ]);
        let out = harness::run_cmd_async(cmd, Duration::from_secs(30)).await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("BEGIN CERTIFICATE") || text.contains("Server certificate"),
            "handshake: {text}"
        );
    }
    assert!(
        !gw.stderr().contains("Illegal SNI"),
        "client quirks stay at debug:\n{}",
        gw.stderr()
    );
}

/// Access lines go through a bounded queue to a writer thread: a stdout pipe nobody reads
/// (a stuck `docker logs` consumer) fills up, and requests keep being answered.
#[tokio::test]
async fn a_stdout_nobody_reads_never_stalls_requests() {
    let up = upstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let (https, http, metrics) = (harness::free_addr(), harness::free_addr(), harness::free_addr());
    let toml = simple_config(up.addr, "")
        .replace("{HTTPS}", &https.to_string())
        .replace("{HTTP}", &http.to_string())
        .replace("{METRICS}", &metrics.to_string());
    std::fs::write(dir.path().join("proxy.toml"), toml).unwrap();
    let mut cmd = Command::new(harness::gateway::binary());
    cmd.arg("run")
        .arg("--config")
        .arg(dir.path().join("proxy.toml"))
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .stdin(Stdio::null())
        // A pipe that is never read: it holds 64 KiB, about 400 access lines.
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let _gateway = ProcessGuard::spawn(&mut cmd, "the gateway");
    harness::poll_until(Duration::from_secs(30), "the gateway to listen", || async move {
        for addr in [https, http, metrics] {
            tokio::net::TcpStream::connect(addr).await.ok()?;
        }
        Some(())
    })
    .await;
    let c = client::http(false);
    let url = format!(
        "https://localhost:{}/a-long-path-to-fill-the-log-{}",
        https.port(),
        "x".repeat(200)
    );
    let work = async {
        for i in 0..3000 {
            let r = c
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(r.status(), 200, "request {i}");
        }
    };
    tokio::time::timeout(Duration::from_secs(120), work)
        .await
        .expect("3000 requests answered while stdout is full");
}
