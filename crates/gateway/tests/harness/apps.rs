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
        let client = reqwest::Client::new();
        super::poll_until(Duration::from_secs(60), "Node-RED's editor and flows", || {
            let exited = process.try_wait();
            let log_path = log_path.clone();
            let client = client.clone();
            async move {
                if let Ok(Some(status)) = exited {
                    panic!(
                        "node-red exited ({status}):\n{}",
                        std::fs::read_to_string(log_path).unwrap_or_default()
                    );
                }
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
            }
        })
        .await;
        NodeRed {
            _process: process,
            _dir: dir,
            addr,
        }
    }
}
