//! Real apps of the reference stack for `gateway doctor`'s sub-path checks: Node-RED from
//! npm (`node-red@4`, installed once under `target/test-apps/`; Debian's `nodejs` and `npm`).

use super::process::{require_tool, ProcessGuard};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct NodeRed {
    _process: ProcessGuard,
    _dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

/// `target/test-apps/node-red`, with node-red installed (npm, once; a lock file keeps two
/// test processes from installing at the same time).
fn installed() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-apps/node-red");
    let bin = root.join("node_modules/.bin/node-red");
    if bin.exists() {
        return bin;
    }
    std::fs::create_dir_all(&root).unwrap();
    let npm = require_tool("npm", "npm");
    let mut cmd = Command::new(npm);
    cmd.args([
        "install",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        "node-red@4",
    ])
    .current_dir(&root);
    let out = super::run_cmd(&mut cmd, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "npm install node-red: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

impl NodeRed {
    /// Node-RED on a free loopback port, editor and nodes at `/` (its defaults).
    pub async fn start() -> NodeRed {
        require_tool("node", "nodejs");
        let bin = tokio::task::spawn_blocking(installed).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let addr = super::free_addr();
        let settings = dir.path().join("settings.js");
        std::fs::write(
            &settings,
            format!(
                "module.exports = {{ uiPort: {}, uiHost: \"127.0.0.1\", httpAdminRoot: \"/\", httpNodeRoot: \"/\", userDir: {:?}, flowFile: \"flows.json\", credentialSecret: false, logging: {{ console: {{ level: \"warn\" }} }} }};\n",
                addr.port(),
                dir.path().display().to_string()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("node-red.log")).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("--settings")
            .arg(&settings)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut process = ProcessGuard::spawn(&mut cmd, "node-red");
        let log_path = dir.path().join("node-red.log");
        // Ready when the editor is served and its flows are started (`/flows/state`): before
        // that, Node-RED accepts connections but answers other paths differently.
        until_ready(
            &mut process,
            "node-red",
            &log_path,
            Duration::from_secs(60),
            |client| async move {
                let page = client
                    .get(format!("http://{addr}/"))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                let missing = client
                    .get(format!("http://{addr}/no-such-path/"))
                    .send()
                    .await
                    .ok()?
                    .status();
                (page.contains("<title>Node-RED</title>") && missing == 404).then_some(())
            },
        )
        .await;
        NodeRed {
            _process: process,
            _dir: dir,
            addr,
        }
    }
}

/// n8n from npm, `n8n@1.123.81` (the last 1.x), installed once under `target/test-apps/n8n`:
/// its `xlsx` dependency is a tarball on cdn.sheetjs.com, outside the registries, so the
/// registry's `xlsx@0.18.5` stands in (npm `overrides`; only the spreadsheet nodes use it);
/// install scripts are skipped (they fetch prebuilt binaries from GitHub) and `sqlite3`, its
/// database driver, is built from source with node-gyp against Debian's node headers. The
/// `vm` expression engine needs `isolated-vm`, which does not build against Debian's node
/// 20: n8n runs with `N8N_EXPRESSION_ENGINE=legacy`, which serves the same pages.
pub struct N8n {
    _process: ProcessGuard,
    _dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

const N8N: &str = "1.123.81";

fn n8n_installed() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-apps/n8n");
    let bin = root.join("node_modules/.bin/n8n");
    let driver = root.join("node_modules/sqlite3/build/Release/node_sqlite3.node");
    if bin.exists() && driver.exists() {
        return bin;
    }
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("package.json"),
        format!("{{\"name\":\"gateway-test-n8n\",\"private\":true,\"dependencies\":{{\"n8n\":\"{N8N}\"}},\"overrides\":{{\"xlsx\":\"0.18.5\"}}}}\n"),
    )
    .unwrap();
    let npm = require_tool("npm", "npm");
    let mut cmd = Command::new(&npm);
    cmd.args([
        "install",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        "--ignore-scripts",
    ])
    .current_dir(&root);
    let out = super::run_cmd(&mut cmd, Duration::from_secs(900));
    assert!(
        out.status.success(),
        "npm install n8n@{N8N}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = Command::new(root.join("node_modules/.bin/node-gyp"));
    cmd.args(["rebuild", "--nodedir=/usr"])
        .current_dir(root.join("node_modules/sqlite3"));
    let out = super::run_cmd(&mut cmd, Duration::from_secs(600));
    assert!(
        out.status.success() && driver.exists(),
        "node-gyp rebuild of sqlite3 (Debian's nodejs headers in /usr/include/node, g++, make, python3): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

impl N8n {
    /// n8n on a free loopback port with `N8N_PATH` and `WEBHOOK_URL` as given.
    pub async fn start(n8n_path: &str, webhook_url: &str) -> N8n {
        require_tool("node", "nodejs");
        let bin = tokio::task::spawn_blocking(n8n_installed).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let addr = super::free_addr();
        let log_path = dir.path().join("n8n.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("start")
            .env("N8N_USER_FOLDER", dir.path())
            .env("N8N_PORT", addr.port().to_string())
            .env("N8N_LISTEN_ADDRESS", "127.0.0.1")
            .env("N8N_PATH", n8n_path)
            .env("WEBHOOK_URL", webhook_url)
            .env("N8N_EXPRESSION_ENGINE", "legacy")
            .env("N8N_RUNNERS_ENABLED", "false")
            .env("N8N_DIAGNOSTICS_ENABLED", "false")
            .env("N8N_PERSONALIZATION_ENABLED", "false")
            .env("N8N_VERSION_NOTIFICATIONS_ENABLED", "false")
            .env("N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS", "false")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut process = ProcessGuard::spawn(&mut cmd, "n8n");
        until_ready(
            &mut process,
            "n8n",
            &log_path,
            Duration::from_secs(180),
            |client| async move {
                let page = client
                    .get(format!("http://{addr}/"))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                page.contains("n8n:config:rest-endpoint").then_some(())
            },
        )
        .await;
        N8n {
            _process: process,
            _dir: dir,
            addr,
        }
    }
}

/// Polls `ready` until it answers, panicking with the app's log if the process exits first.
async fn until_ready<F, Fut>(
    process: &mut ProcessGuard,
    name: &str,
    log: &std::path::Path,
    limit: Duration,
    ready: F,
) where
    F: Fn(reqwest::Client) -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let client = reqwest::Client::new();
    super::poll_until(limit, &format!("{name} to serve its pages"), || {
        if let Ok(Some(status)) = process.try_wait() {
            panic!(
                "{name} exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        ready(client.clone())
    })
    .await;
}
