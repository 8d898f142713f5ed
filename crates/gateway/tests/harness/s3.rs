//! A local S3-compatible server for the object-storage tests: moto's server (`moto[server]`
//! from PyPI, installed once into a virtual environment under `target/test-apps/moto`).
//! moto was chosen because it enforces S3's conditional writes (`If-None-Match: *` and
//! `If-Match` on PutObject answer 412 when they do not hold), which the lease relies on;
//! [`Moto::start`] checks that before any test uses it. It keeps objects in memory and does
//! not check signatures.

use super::process::ProcessGuard;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const MOTO: &str = "moto[server]==5.2.6";

pub struct Moto {
    process: std::sync::Mutex<Option<ProcessGuard>>,
    bin: PathBuf,
    _dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub bucket: String,
}

/// `target/test-apps/moto/bin/moto_server`, installed with pip once.
fn installed() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-apps/moto");
    let bin = root.join("bin/moto_server");
    if bin.exists() {
        return bin;
    }
    let python = super::process::require_tool("python3", "python3 python3-venv");
    let out = super::run_cmd(
        Command::new(&python).args(["-m", "venv"]).arg(&root),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "python3 -m venv (Debian: apt-get install python3-venv): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = super::run_cmd(
        Command::new(root.join("bin/pip")).args(["install", "--quiet", "--disable-pip-version-check", MOTO]),
        Duration::from_secs(600),
    );
    assert!(
        out.status.success(),
        "pip install {MOTO}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

impl Moto {
    /// moto on a free loopback port with one bucket, `gateway-acme`.
    pub async fn start() -> Moto {
        let bin = tokio::task::spawn_blocking(installed).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let addr = super::free_addr();
        let mut moto = Moto {
            process: Default::default(),
            bin: bin.clone(),
            _dir: dir,
            addr,
            bucket: "gateway-acme".into(),
        };
        moto.launch(&bin).await;
        let client = reqwest::Client::new();
        let created = client
            .put(format!("http://{addr}/{}", moto.bucket))
            .send()
            .await
            .unwrap();
        assert!(
            created.status().is_success(),
            "create bucket: {}",
            created.status()
        );
        moto.assert_conditional_writes().await;
        moto
    }

    async fn launch(&mut self, bin: &std::path::Path) {
        let log = std::fs::File::create(self._dir.path().join("moto.log")).unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(["-H", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        *self.process.lock().unwrap() = Some(ProcessGuard::spawn(&mut cmd, "moto_server"));
        let addr = self.addr;
        super::poll_until(Duration::from_secs(60), "moto's server", || async move {
            reqwest::get(format!("http://{addr}/")).await.ok().map(|_| ())
        })
        .await;
    }

    /// moto refuses a create over an existing object and an update with a stale ETag, to
    /// requests signed as the gateway's are (boto3, installed with moto).
    async fn assert_conditional_writes(&self) {
        let python = self.bin.with_file_name("python");
        let script = format!(
            r#"
import boto3, botocore
s3 = boto3.client("s3", endpoint_url="http://{addr}", aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
b, k = "{bucket}", "conditional-write-check"
first = s3.put_object(Bucket=b, Key=k, Body=b"1", IfNoneMatch="*")
def refused(**kw):
    try:
        s3.put_object(Bucket=b, Key=k, Body=b"2", **kw)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"] == "PreconditionFailed"
    return False
assert refused(IfNoneMatch="*"), "a second create is not refused"
assert refused(IfMatch='"0000"'), "a stale If-Match is not refused"
s3.put_object(Bucket=b, Key=k, Body=b"3", IfMatch=first["ETag"])
s3.delete_object(Bucket=b, Key=k)
print("conditional writes enforced")
"#,
            addr = self.addr,
            bucket = self.bucket
        );
        let out = tokio::task::spawn_blocking(move || {
            super::run_cmd(
                Command::new(python).args(["-c", &script]),
                Duration::from_secs(60),
            )
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "moto must enforce conditional writes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server (the storage becomes unreachable).
    pub fn stop(&self) {
        *self.process.lock().unwrap() = None;
    }

    /// The environment that points a gateway at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", format!("http://{}", self.addr)),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// The object at `key` of the bucket, if any (a signed GET: moto refuses anonymous reads).
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        use object_store::ObjectStoreExt;
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_endpoint(format!("http://{}", self.addr))
            .with_allow_http(true)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .build()
            .ok()?;
        let r = store.get(&object_store::path::Path::from(key)).await.ok()?;
        Some(r.bytes().await.ok()?.to_vec())
    }
}
