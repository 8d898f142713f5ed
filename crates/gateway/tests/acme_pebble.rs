//! ACME against a real CA: Pebble with pebble-challtestsrv as its DNS, all on loopback.

mod harness;

use harness::acme::{config, lines_with, store_near_expiry, verified, wait_issued, NAMES};
use harness::pebble::Pebble;
use harness::{client, free_port, poll_until, upstream, within, Gateway};
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The deadline of one step (a write, a read).
const STEP: Duration = Duration::from_secs(10);

async fn get(s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>, host: &str) -> String {
    let req = format!("GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n");
    within(STEP, "sending the request", s.write_all(req.as_bytes()))
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let n = within(STEP, "the response", s.read(&mut buf)).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// `gateway certs --config <config>`, with a deadline; its standard output.
async fn certs_listing(config: &std::path::Path) -> String {
    let mut cmd = Command::new(harness::gateway::binary());
    cmd.args(["certs", "--config"]).arg(config);
    let out = harness::run_cmd_async(cmd, Duration::from_secs(60)).await;
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    // The credentials, not the `.contact` record next to them.
    let account = std::fs::read_dir(storage.path().join("accounts"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("an account file");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&account).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "account credentials are private");
    let account_before = std::fs::read(&account).unwrap();
    let cert_before = std::fs::read(storage.path().join("main/fullchain.pem")).unwrap();
    let metrics = client::scrape(gw.metrics).await;
    assert!(
        metrics.contains("gateway_certificate_expiry_timestamp_seconds{certificate=\"main\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gateway_acme_orders_total{certificate=\"main\",result=\"success\"} 1"),
        "{metrics}"
    );
    let listing = certs_listing(&gw.config).await;
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
    if let Err(e) = verified(gw.https, NAMES[0], &root).await {
        panic!("no verified TLS connection for {}: {e}", NAMES[0]);
    }
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
    // The waits double from retry_min (200ms) up to retry_max (2s), each with ±20 % jitter.
    poll_until(Duration::from_secs(30), "six failed attempts in the log", || {
        let log = gw.stderr();
        async move { (log.matches("retrying with backoff").count() >= 6).then_some(()) }
    })
    .await;
    let lines = lines_with(&gw.stderr(), &["retrying with backoff"]);
    let waits: Vec<(Duration, Duration)> = lines
        .iter()
        .map(|l| {
            let get = |name| harness::acme::field(l, name).and_then(harness::acme::duration);
            (
                get("backoff").unwrap_or_else(|| panic!("no backoff in {l}")),
                get("retry_in").unwrap_or_else(|| panic!("no retry_in in {l}")),
            )
        })
        .collect();
    let ms = Duration::from_millis;
    let expected = [ms(200), ms(400), ms(800), ms(1600), ms(2000), ms(2000)];
    let bases: Vec<Duration> = waits.iter().map(|w| w.0).take(expected.len()).collect();
    assert_eq!(bases, expected, "{lines:#?}");
    for (base, wait) in &waits {
        assert!(
            *wait >= base.mul_f64(0.79) && *wait <= base.mul_f64(1.21),
            "{wait:?} is not {base:?} ± 20 %"
        );
    }
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
    // Make the new unit impossible to put in place, even for root: the temporary name of the
    // `current` link is taken by a directory (a full disk fails the same way). The order
    // takes far longer than creating this directory right after the process starts.
    gw.spawn(false, &[]);
    let pid = gw.pid();
    std::fs::create_dir_all(storage.path().join(format!("main/.current.tmp-{pid}/blocker"))).unwrap();
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
    // The new certificate is still served from memory, not the old one from the files.
    let root = pebble.issuing_root().await;
    if let Err(e) = verified(gw.https, NAMES[0], &root).await {
        panic!("no verified TLS connection for {}: {e}", NAMES[0]);
    }
    let (_, served) = client::tls(gw.https, NAMES[0]).await;
    assert_ne!(served.as_ref(), &old[..], "the new certificate is served");
    // No half-stored unit is left behind.
    let units: Vec<String> = std::fs::read_dir(storage.path().join("main"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("v-") || n.starts_with(".new-") || n == "current")
        .collect();
    assert!(units.is_empty(), "{units:?}");
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

/// Short timeouts so a stalled CA is given up on in about 2 s.
fn with_short_timeouts(cfg: &str) -> String {
    cfg.replace(
        "retry_min",
        "connect_timeout = \"1s\"\nrequest_timeout = \"2s\"\norder_timeout = \"20s\"\nretry_min",
    )
}

/// Failed attempts of `certificate` logged as timeouts.
fn timeouts(log: &str, certificate: &str) -> usize {
    let field = format!("certificate={certificate}");
    lines_with(
        log,
        &["could not obtain certificate", "timed out", field.as_str()],
    )
    .len()
}

#[tokio::test]
async fn pebble_a_ca_that_never_answers_times_out_while_another_certificate_is_issued() {
    let storage = tempfile::tempdir().unwrap();
    let pebble = Pebble::start(free_port(), &[]).await;
    let up = upstream::echo().await;
    // Accepts the connection and never says a word, not even the TLS handshake.
    let stalled = upstream::hang().await;
    let cfg = format!(
        "{}\n[[acme.certificates]]\nname = \"stalled\"\nnames = [\"c.gateway.test\"]\ndirectory = \"https://localhost:{}/dir\"\n",
        with_short_timeouts(&config(&pebble, storage.path(), up.addr)),
        stalled.addr.port()
    );
    let gw = Gateway::start(&cfg).await;
    // request_timeout is 2 s: the first attempt is given up on and logged as a timeout.
    let line = poll_until(Duration::from_secs(20), "a timeout for the stalled CA", || {
        let log = gw.stderr();
        async move {
            lines_with(&log, &["could not obtain certificate", "certificate=stalled"])
                .into_iter()
                .next()
        }
    })
    .await;
    assert!(
        line.contains("timed out: no complete answer from the CA within 2s"),
        "{line}"
    );
    // Meanwhile the other certificate is issued by the working CA...
    wait_issued(&gw, &pebble).await;
    // ...and the stalled one keeps going through backoff and retries.
    let seen = timeouts(&gw.stderr(), "stalled");
    poll_until(Duration::from_secs(30), "another timeout after a retry", || {
        let log = gw.stderr();
        async move { (timeouts(&log, "stalled") > seen).then_some(()) }
    })
    .await;
    assert!(!lines_with(&gw.stderr(), &["retrying with backoff", "certificate=stalled"]).is_empty());
    let status = std::fs::read_to_string(storage.path().join("stalled/status.json")).unwrap();
    assert!(status.contains("timed out"), "{status}");
}

#[tokio::test]
async fn pebble_a_proxy_that_never_answers_times_out_and_a_reload_without_it_issues() {
    let storage = tempfile::tempdir().unwrap();
    let pebble = Pebble::start(free_port(), &[]).await;
    let up = upstream::echo().await;
    // Accepts the CONNECT request and never answers it.
    let stalled = upstream::hang().await;
    let direct = with_short_timeouts(&config(&pebble, storage.path(), up.addr));
    let proxied = direct.replace(
        "retry_min",
        &format!("https_proxy = \"http://{}\"\nretry_min", stalled.addr),
    );
    let gw = Gateway::start(&proxied).await;
    poll_until(
        Duration::from_secs(30),
        "two timeouts through the stalled proxy",
        || {
            let log = gw.stderr();
            async move { (timeouts(&log, "main") >= 2).then_some(()) }
        },
    )
    .await;
    // The section's settings follow a reload: without the proxy the CA is reached.
    gw.write_config(&direct);
    wait_issued(&gw, &pebble).await;
    assert!(
        !lines_with(
            &gw.stderr(),
            &["certificate settings changed in [acme]", "certificate=main"]
        )
        .is_empty(),
        "{}",
        gw.stderr()
    );
}

#[tokio::test]
async fn pebble_a_wrong_ca_root_is_reported_with_its_inner_cause() {
    let storage = tempfile::tempdir().unwrap();
    let pebble = Pebble::start(free_port(), &[]).await;
    let up = upstream::echo().await;
    // A root that did not sign Pebble's listener certificate.
    let elsewhere = tempfile::tempdir().unwrap();
    let wrong = elsewhere.path().join("wrong-root.pem");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&wrong, other.cert.pem()).unwrap();
    let cfg = config(&pebble, storage.path(), up.addr).replace(
        &format!("ca_root = \"{}\"", pebble.listener_root().display()),
        &format!("ca_root = \"{}\"", wrong.display()),
    );
    let gw = Gateway::start(&cfg).await;
    let status_path = storage.path().join("main/status.json");
    // Not only "client error (Connect)": the TLS verdict under it.
    let status = poll_until(Duration::from_secs(30), "the TLS failure in status.json", || {
        let status = std::fs::read_to_string(&status_path).unwrap_or_default();
        async move { status.contains("invalid peer certificate").then_some(status) }
    })
    .await;
    assert!(status.contains("cannot reach the CA"), "{status}");
    assert!(status.contains("client error (Connect): "), "{status}");
    let errors = lines_with(
        &gw.stderr(),
        &["could not obtain certificate", "invalid peer certificate"],
    );
    assert!(!errors.is_empty(), "{}", gw.stderr());
    let listing = certs_listing(&gw.config).await;
    assert!(listing.contains("invalid peer certificate"), "{listing}");
}
