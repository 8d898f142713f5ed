//! ACME against a real CA: Pebble with pebble-challtestsrv as its DNS, all on loopback.

mod harness;

use harness::pebble::Pebble;
use harness::{client, free_port, poll_until, upstream, Gateway};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAMES: [&str; 2] = ["a.gateway.test", "b.gateway.test"];

fn config(pebble: &Pebble, storage: &Path, upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
[listen]
https = "{{HTTPS}}"
http = "127.0.0.1:{http}"
metrics = "{{METRICS}}"
[server]
grace_period = "1s"
[tls]
default_certificate = "main"
[acme]
directory = "{dir}"
email = "admin@gateway.test"
storage = "{storage}"
ca_root = "{root}"
retry_min = "200ms"
retry_max = "2s"
[[acme.certificates]]
name = "main"
names = ["{a}", "{b}"]
[upstreams.echo]
address = "{upstream}"
[[routes]]
prefix = "/"
upstream = "echo"
"#,
        http = pebble.http_port,
        dir = pebble.directory(),
        storage = storage.display(),
        root = pebble.listener_root().display(),
        a = NAMES[0],
        b = NAMES[1],
    )
}

/// A TLS connection that only succeeds when the gateway presents a certificate for `sni`
/// chaining to `root_pem` (Pebble's issuing root).
async fn verified(
    addr: std::net::SocketAddr,
    sni: &str,
    root_pem: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots
            .add(der.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}

async fn wait_issued(gw: &Gateway, pebble: &Pebble) -> String {
    let root = pebble.issuing_root().await;
    let https = gw.https;
    poll_until(Duration::from_secs(60), "a certificate from Pebble", || {
        let root = root.clone();
        async move {
            for n in NAMES {
                verified(https, n, &root).await.ok()?;
            }
            Some(())
        }
    })
    .await;
    root
}

async fn get(s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>, host: &str) -> String {
    let req = format!("GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A stored certificate for the names that is near its end: a third of its life is long
/// gone, so the gateway renews it at once (and serves it meanwhile).
fn store_near_expiry(storage: &Path) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(80);
    params.not_after = now + time::Duration::days(10);
    let cert = params.self_signed(&key).unwrap();
    let dir = storage.join("main");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("fullchain.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("privkey.pem"), key.serialize_pem()).unwrap();
    cert.der().to_vec()
}

#[tokio::test]
async fn pebble_issues_one_certificate_for_two_names_and_a_restart_reuses_it() {
    let storage = tempfile::tempdir().unwrap();
    let pebble = Pebble::start(free_port(), &[]).await;
    let up = upstream::echo().await;
    let cfg = config(&pebble, storage.path(), up.addr);
    let mut gw = Gateway::start(&cfg).await;
    let root = wait_issued(&gw, &pebble).await;
    for n in NAMES {
        let mut s = verified(gw.https, n, &root).await.unwrap();
        assert!(get(&mut s, n).await.starts_with("HTTP/1.1 200"));
    }
    let account = std::fs::read_dir(storage.path().join("accounts"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&account).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "account credentials are private");
    let account_before = std::fs::read(&account).unwrap();
    let cert_before = std::fs::read(storage.path().join("main/fullchain.pem")).unwrap();
    let metrics = reqwest::get(format!("http://{}/metrics", gw.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gateway_certificate_expiry_timestamp_seconds{certificate=\"main\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gateway_acme_renewals_total{certificate=\"main\"} 1"),
        "{metrics}"
    );
    let out = std::process::Command::new(harness::gateway::binary())
        .args(["certs", "--config"])
        .arg(&gw.config)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("a.gateway.test, b.gateway.test") && listing.contains("Pebble"),
        "{listing}"
    );
    assert!(listing.contains("error:    none"), "{listing}");

    // Restart: the stored account and certificate are used, no new order is placed.
    assert!(gw.stop(Duration::from_secs(10)));
    let stderr_before = gw.stderr();
    gw.spawn(false, &[]);
    gw.wait_ready().await;
    let mut s = verified(gw.https, NAMES[1], &root)
        .await
        .expect("the stored certificate is served at once");
    assert!(get(&mut s, NAMES[1]).await.starts_with("HTTP/1.1 200"));
    let after = gw.stderr()[stderr_before.len()..].to_string();
    assert!(
        !after.contains("ordering certificate"),
        "a restart placed a new order:\n{after}"
    );
    assert_eq!(std::fs::read(&account).unwrap(), account_before);
    assert_eq!(
        std::fs::read(storage.path().join("main/fullchain.pem")).unwrap(),
        cert_before
    );
}

#[tokio::test]
async fn pebble_forced_renewal_swaps_the_certificate_while_a_connection_stays_open() {
    let storage = tempfile::tempdir().unwrap();
    let old = store_near_expiry(storage.path());
    let up = upstream::echo().await;
    // Start the gateway before the CA so the near-expiry certificate is served first.
    let http_port = free_port();
    let mut pebble = Pebble::start(http_port, &[]).await;
    pebble.stop();
    let gw = Gateway::start(&config(&pebble, storage.path(), up.addr)).await;
    let (mut open, served) = client::tls(gw.https, NAMES[0]).await;
    assert_eq!(
        served.as_ref(),
        &old[..],
        "the stored certificate is served until renewed"
    );
    assert!(get(&mut open, NAMES[0]).await.starts_with("HTTP/1.1 200"));
    pebble.launch().await;
    let root = wait_issued(&gw, &pebble).await;
    // The connection opened before the swap still works.
    assert!(get(&mut open, NAMES[0]).await.starts_with("HTTP/1.1 200"));
    assert!(verified(gw.https, NAMES[0], &root).await.is_ok());
    assert_ne!(
        std::fs::read(storage.path().join("main/fullchain.pem")).unwrap(),
        old
    );
}

#[tokio::test]
async fn pebble_issuance_survives_nonce_rejection() {
    let storage = tempfile::tempdir().unwrap();
    let pebble = Pebble::start(free_port(), &[("PEBBLE_WFE_NONCEREJECT", "90")]).await;
    let up = upstream::echo().await;
    let gw = Gateway::start(&config(&pebble, storage.path(), up.addr)).await;
    wait_issued(&gw, &pebble).await;
}

#[tokio::test]
async fn pebble_down_keeps_the_current_certificate_and_retries_with_backoff() {
    let storage = tempfile::tempdir().unwrap();
    let old = store_near_expiry(storage.path());
    let up = upstream::echo().await;
    let mut pebble = Pebble::start(free_port(), &[]).await;
    pebble.stop();
    let gw = Gateway::start(&config(&pebble, storage.path(), up.addr)).await;
    poll_until(
        Duration::from_secs(30),
        "three failed attempts in the log",
        || {
            let log = gw.stderr();
            async move { (log.matches("retrying with backoff").count() >= 3).then_some(()) }
        },
    )
    .await;
    let log = gw.stderr();
    assert!(
        log.contains("cannot reach the CA"),
        "the log says what failed:\n{log}"
    );
    let waits: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("retrying with backoff"))
        .collect();
    assert!(waits.len() >= 3);
    let (_, served) = client::tls(gw.https, NAMES[0]).await;
    assert_eq!(served.as_ref(), &old[..], "the current certificate is kept");
    // The next start of the CA is picked up.
    pebble.launch().await;
    wait_issued(&gw, &pebble).await;
}

#[tokio::test]
async fn pebble_unwritable_storage_keeps_old_files_and_reports() {
    let storage = tempfile::tempdir().unwrap();
    let old = store_near_expiry(storage.path());
    let old_files = (
        std::fs::read(storage.path().join("main/fullchain.pem")).unwrap(),
        std::fs::read(storage.path().join("main/privkey.pem")).unwrap(),
    );
    let up = upstream::echo().await;
    let mut pebble = Pebble::start(free_port(), &[]).await;
    pebble.stop();
    let mut gw = Gateway::start(&config(&pebble, storage.path(), up.addr)).await;
    gw.stop(Duration::from_secs(10));
    pebble.launch().await;
    // Make the key file impossible to replace, even for root: its temporary name is taken
    // by a directory (a full disk fails the same write). The order takes far longer than
    // creating this directory right after the process starts.
    gw.spawn(false, &[]);
    let pid = gw.pid();
    std::fs::create_dir_all(
        storage
            .path()
            .join(format!("main/.privkey.pem.tmp-{pid}/blocker")),
    )
    .unwrap();
    gw.wait_ready().await;
    poll_until(
        Duration::from_secs(60),
        "the storage error to be reported",
        || {
            let log = gw.stderr();
            async move { log.contains("cannot store the new certificate").then_some(()) }
        },
    )
    .await;
    assert_eq!(
        std::fs::read(storage.path().join("main/fullchain.pem")).unwrap(),
        old_files.0
    );
    assert_eq!(
        std::fs::read(storage.path().join("main/privkey.pem")).unwrap(),
        old_files.1
    );
    // The status file (read by `gateway certs`) is written just after the log line.
    let status_path = storage.path().join("main/status.json");
    poll_until(Duration::from_secs(10), "the error in status.json", || {
        let status = std::fs::read_to_string(&status_path).unwrap_or_default();
        async move { status.contains("could not be stored").then_some(()) }
    })
    .await;
    // The new certificate is still served from memory.
    let root = pebble.issuing_root().await;
    assert!(verified(gw.https, NAMES[0], &root).await.is_ok());
    let _ = old;
}

#[tokio::test]
async fn pebble_behind_a_dead_primary_directory_is_reached_through_the_fallback() {
    let storage = tempfile::tempdir().unwrap();
    let pebble = Pebble::start(free_port(), &[]).await;
    let up = upstream::echo().await;
    let dead = format!("https://localhost:{}/dir", free_port());
    let cfg = config(&pebble, storage.path(), up.addr).replace(
        &format!("directory = \"{}\"", pebble.directory()),
        &format!(
            "directory = \"{dead}\"\nfallback_directories = [\"{}\"]",
            pebble.directory()
        ),
    );
    let gw = Gateway::start(&cfg).await;
    wait_issued(&gw, &pebble).await;
    assert!(
        gw.stderr().contains("switching to the next ACME directory"),
        "{}",
        gw.stderr()
    );
}

#[tokio::test]
async fn pebble_is_reached_through_an_https_proxy() {
    let storage = tempfile::tempdir().unwrap();
    let pebble = Pebble::start(free_port(), &[]).await;
    let up = upstream::echo().await;
    let (proxy, tunnels, _task) = upstream::connect_proxy().await;
    let cfg = config(&pebble, storage.path(), up.addr).replace(
        "retry_min",
        &format!("https_proxy = \"http://{proxy}\"\nretry_min"),
    );
    let gw = Gateway::start(&cfg).await;
    wait_issued(&gw, &pebble).await;
    assert!(
        tunnels.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the CA was reached through the proxy"
    );
}

#[tokio::test]
async fn pebble_validation_failure_is_logged_with_the_ca_detail() {
    let storage = tempfile::tempdir().unwrap();
    // Pebble validates HTTP-01 on a port where nothing listens.
    let pebble = Pebble::start(free_port(), &[]).await;
    let up = upstream::echo().await;
    let cfg = config(&pebble, storage.path(), up.addr).replace(
        &format!("http = \"127.0.0.1:{}\"", pebble.http_port),
        "http = \"{HTTP}\"",
    );
    let gw = Gateway::start(&cfg).await;
    let line = poll_until(
        Duration::from_secs(60),
        "the failed validation in the log",
        || {
            let log = gw.stderr();
            async move {
                log.lines()
                    .find(|l| l.contains("validation failed"))
                    .map(str::to_owned)
            }
        },
    )
    .await;
    assert!(
        line.contains("a.gateway.test") || line.contains("b.gateway.test"),
        "{line}"
    );
    assert!(
        line.to_ascii_lowercase().contains("connect"),
        "the CA's detail is in the line: {line}"
    );
    // Still serving the placeholder, and still retrying.
    let (_, cert) = client::tls(gw.https, NAMES[0]).await;
    assert_eq!(client::cert_names(&cert), NAMES.to_vec());
}
