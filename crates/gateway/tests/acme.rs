//! ACME against a real CA: Pebble with pebble-challtestsrv as its DNS, all on loopback.
//! Issuance for two names and a restart that reuses it, a forced renewal under an open
//! connection, nonce rejection, a CA that is down, unwritable storage, the fallback
//! directories (counted attempt by attempt), an HTTPS proxy, failed validations, CAs and
//! proxies that never answer, a wrong CA root, and External Account Binding with a Pebble
//! that requires it. (`[acme]` changed while running, crashes and shared storage:
//! `acme_lifecycle.rs`; the certificate metrics: `metrics.rs`.)

mod harness;

use harness::acme::{field, lines_with, log_line_with, store_near_expiry, verified, wait_issued};
use harness::acme::{wait_status, Setup, NAMES};
use harness::pebble::Pebble;
use harness::{client, free_port, secs, until, upstream, within, Gateway};
use std::path::Path;
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
    let acme = Setup::start(&[]).await;
    let mut gw = Gateway::start(&acme.config()).await;
    let root = wait_issued(&gw, &acme.pebble).await;
    for n in NAMES {
        let mut s = verified(gw.https, n, &root).await.unwrap();
        assert!(get(&mut s, n).await.starts_with("HTTP/1.1 200"));
    }
    // The credentials, not the `.contact` record next to them.
    let account = std::fs::read_dir(acme.path("accounts"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("an account file");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&account).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "account credentials are private");
    let account_before = std::fs::read(&account).unwrap();
    let cert_before = std::fs::read(acme.path("main/fullchain.pem")).unwrap();
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
        std::fs::read(acme.path("main/fullchain.pem")).unwrap(),
        cert_before
    );
}

#[tokio::test]
async fn pebble_forced_renewal_swaps_the_certificate_while_a_connection_stays_open() {
    let mut acme = Setup::down().await;
    let old = store_near_expiry(acme.storage.path());
    // Start the gateway before the CA so the near-expiry certificate is served first.
    let gw = Gateway::start(&acme.config()).await;
    let (mut open, served) = client::tls(gw.https, NAMES[0]).await;
    assert_eq!(
        served.as_ref(),
        &old[..],
        "the stored certificate is served until renewed"
    );
    assert!(get(&mut open, NAMES[0]).await.starts_with("HTTP/1.1 200"));
    acme.pebble.launch().await;
    let root = wait_issued(&gw, &acme.pebble).await;
    // The connection opened before the swap still works.
    assert!(get(&mut open, NAMES[0]).await.starts_with("HTTP/1.1 200"));
    if let Err(e) = verified(gw.https, NAMES[0], &root).await {
        panic!("no verified TLS connection for {}: {e}", NAMES[0]);
    }
    assert_ne!(std::fs::read(acme.path("main/fullchain.pem")).unwrap(), old);
}

#[tokio::test]
async fn pebble_issuance_survives_nonce_rejection() {
    let acme = Setup::start(&[("PEBBLE_WFE_NONCEREJECT", "90")]).await;
    let gw = Gateway::start(&acme.config()).await;
    wait_issued(&gw, &acme.pebble).await;
}

#[tokio::test]
async fn pebble_down_keeps_the_current_certificate_and_retries_with_backoff() {
    let mut acme = Setup::down().await;
    let old = store_near_expiry(acme.storage.path());
    let gw = Gateway::start(&acme.config()).await;
    let retries = |log: &str| log.matches("retrying with backoff").count();
    gw.wait_log(secs(30), "three failed attempts", |log| retries(log) >= 3)
        .await;
    let log = gw.stderr();
    assert!(
        log.contains("cannot reach the CA"),
        "the log says what failed:\n{log}"
    );
    // The waits double from retry_min (200ms) up to retry_max (2s), each with ±20 % jitter.
    gw.wait_log(secs(30), "six failed attempts", |log| retries(log) >= 6)
        .await;
    let lines = lines_with(&gw.stderr(), &["retrying with backoff"]);
    let waits: Vec<(Duration, Duration)> = lines
        .iter()
        .map(|l| {
            let get = |name| field(l, name).and_then(harness::acme::duration);
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
    acme.pebble.launch().await;
    wait_issued(&gw, &acme.pebble).await;
}

#[tokio::test]
async fn pebble_unwritable_storage_keeps_old_files_and_reports() {
    let mut acme = Setup::down().await;
    let old = store_near_expiry(acme.storage.path());
    let old_files = (
        std::fs::read(acme.path("main/fullchain.pem")).unwrap(),
        std::fs::read(acme.path("main/privkey.pem")).unwrap(),
    );
    let mut gw = Gateway::start(&acme.config()).await;
    gw.stop(Duration::from_secs(10));
    acme.pebble.launch().await;
    // Make the new unit impossible to put in place, even for root: the temporary name of the
    // `current` link is taken by a directory (a full disk fails the same way). The order
    // takes far longer than creating this directory right after the process starts.
    gw.spawn(false, &[]);
    let pid = gw.pid();
    std::fs::create_dir_all(acme.path(format!("main/.current.tmp-{pid}/blocker"))).unwrap();
    gw.wait_ready().await;
    gw.log_line(secs(60), "cannot store the new certificate").await;
    assert_eq!(
        std::fs::read(acme.path("main/fullchain.pem")).unwrap(),
        old_files.0
    );
    assert_eq!(std::fs::read(acme.path("main/privkey.pem")).unwrap(), old_files.1);
    // The status file (read by `gateway certs`) is written just after the log line.
    wait_status(acme.storage.path(), "main", "could not be stored", secs(10)).await;
    // The new certificate is still served from memory, not the old one from the files.
    let root = acme.pebble.issuing_root().await;
    if let Err(e) = verified(gw.https, NAMES[0], &root).await {
        panic!("no verified TLS connection for {}: {e}", NAMES[0]);
    }
    let (_, served) = client::tls(gw.https, NAMES[0]).await;
    assert_ne!(served.as_ref(), &old[..], "the new certificate is served");
    // No half-stored unit is left behind.
    let units: Vec<String> = std::fs::read_dir(acme.path("main"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("v-") || n.starts_with(".new-") || n == "current")
        .collect();
    assert!(units.is_empty(), "{units:?}");
}

#[tokio::test]
async fn pebble_is_reached_through_an_https_proxy() {
    let acme = Setup::start(&[]).await;
    let (proxy, tunnels, _task) = upstream::connect_proxy().await;
    let cfg = acme.config().replace(
        "retry_min",
        &format!("https_proxy = \"http://{proxy}\"\nretry_min"),
    );
    let gw = Gateway::start(&cfg).await;
    wait_issued(&gw, &acme.pebble).await;
    assert!(
        tunnels.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the CA was reached through the proxy"
    );
}

#[tokio::test]
async fn pebble_validation_failure_is_logged_with_the_ca_detail() {
    let acme = Setup::start(&[]).await;
    // Pebble validates HTTP-01 on a port where nothing listens.
    let cfg = acme.config().replace(
        &format!("http = \"127.0.0.1:{}\"", acme.pebble.http_port),
        "http = \"{HTTP}\"",
    );
    let gw = Gateway::start(&cfg).await;
    let line = gw.log_line(secs(60), "validation failed").await;
    assert!(NAMES.iter().any(|n| line.contains(n)), "{line}");
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
    let acme = Setup::start(&[]).await;
    // Accepts the connection and never says a word, not even the TLS handshake.
    let stalled = upstream::hang().await;
    let cfg = format!(
        "{}\n[[acme.certificates]]\nname = \"stalled\"\nnames = [\"c.gateway.test\"]\ndirectory = \"https://localhost:{}/dir\"\n",
        with_short_timeouts(&acme.config()),
        stalled.addr.port()
    );
    let gw = Gateway::start(&cfg).await;
    // request_timeout is 2 s: the first attempt is given up on and logged as a timeout.
    let failed = ["could not obtain certificate", "certificate=stalled"];
    let line = log_line_with(&gw, secs(20), &failed).await;
    assert!(
        line.contains("timed out: no complete answer from the CA within 2s"),
        "{line}"
    );
    // Meanwhile the other certificate is issued by the working CA...
    wait_issued(&gw, &acme.pebble).await;
    // ...and the stalled one keeps going through backoff and retries.
    let seen = timeouts(&gw.stderr(), "stalled");
    let what = "another timeout after a retry";
    gw.wait_log(secs(30), what, |log| timeouts(log, "stalled") > seen)
        .await;
    assert!(!lines_with(&gw.stderr(), &["retrying with backoff", "certificate=stalled"]).is_empty());
    let status = std::fs::read_to_string(acme.path("stalled/status.json")).unwrap();
    assert!(status.contains("timed out"), "{status}");
}

#[tokio::test]
async fn pebble_a_proxy_that_never_answers_times_out_and_a_reload_without_it_issues() {
    let acme = Setup::start(&[]).await;
    // Accepts the CONNECT request and never answers it.
    let stalled = upstream::hang().await;
    let direct = with_short_timeouts(&acme.config());
    let proxied = direct.replace(
        "retry_min",
        &format!("https_proxy = \"http://{}\"\nretry_min", stalled.addr),
    );
    let gw = Gateway::start(&proxied).await;
    let what = "two timeouts through the stalled proxy";
    gw.wait_log(secs(30), what, |log| timeouts(log, "main") >= 2)
        .await;
    // The section's settings follow a reload: without the proxy the CA is reached.
    gw.write_config(&direct);
    wait_issued(&gw, &acme.pebble).await;
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
    let acme = Setup::start(&[]).await;
    // A root that did not sign Pebble's listener certificate.
    let elsewhere = tempfile::tempdir().unwrap();
    let wrong = elsewhere.path().join("wrong-root.pem");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&wrong, other.cert.pem()).unwrap();
    let cfg = acme.config().replace(
        &format!("ca_root = \"{}\"", acme.pebble.listener_root().display()),
        &format!("ca_root = \"{}\"", wrong.display()),
    );
    let gw = Gateway::start(&cfg).await;
    // Not only "client error (Connect)": the TLS verdict under it.
    let verdict = "invalid peer certificate";
    let status = wait_status(acme.storage.path(), "main", verdict, secs(30)).await;
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

/// One step of a certificate's loop, as the log tells it.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// "ordering certificate", with its `directory`.
    Order(String),
    /// "could not obtain certificate", with its `attempt` number.
    Failed(u32),
    /// "switching to the next ACME directory", with the new `directory`.
    Switch(String),
    /// "certificate issued and now served", with its `directory`.
    Issued(String),
}

/// The steps of `certificate`'s loop in `log`, in order.
fn loop_steps(log: &str, certificate: &str) -> Vec<Step> {
    let tag = format!("certificate={certificate} ");
    lines_with(log, &[tag.as_str()])
        .iter()
        .filter_map(|l| {
            let directory = || field(l, "directory").unwrap_or("").to_owned();
            if l.contains("ordering certificate") {
                Some(Step::Order(directory()))
            } else if l.contains("could not obtain certificate") {
                Some(Step::Failed(field(l, "attempt")?.parse().ok()?))
            } else if l.contains("switching to the next ACME directory") {
                Some(Step::Switch(directory()))
            } else if l.contains("certificate issued and now served") {
                Some(Step::Issued(directory()))
            } else {
                None
            }
        })
        .collect()
}

/// "Every third failure moves to the next of `fallback_directories`", counted: a primary
/// directory on a closed port is tried exactly three times (attempts 1, 2, 3), then the
/// loop switches to Pebble, the fallback, which issues.
///
/// To see it fail: switch on `failures.is_multiple_of(2)` (or on every failure) in `manage`
/// (crates/tls/src/acme/mod.rs), or never switch.
#[tokio::test]
async fn pebble_every_third_failure_moves_to_the_next_fallback_directory() {
    let acme = Setup::start(&[]).await;
    let dead = format!("https://localhost:{}/dir", free_port());
    let fallback = acme.pebble.directory();
    let cfg = acme.config().replace(
        &format!("directory = \"{fallback}\""),
        &format!("directory = \"{dead}\"\nfallback_directories = [\"{fallback}\"]"),
    );
    let gw = Gateway::start(&cfg).await;
    wait_issued(&gw, &acme.pebble).await;
    let steps = until(secs(10), "the issuance in the log", || {
        let steps = loop_steps(&gw.stderr(), "main");
        steps
            .iter()
            .any(|s| matches!(s, Step::Issued(_)))
            .then_some(steps)
    })
    .await;
    let expected = [
        Step::Order(dead.clone()),
        Step::Failed(1),
        Step::Order(dead.clone()),
        Step::Failed(2),
        Step::Order(dead.clone()),
        Step::Failed(3),
        Step::Switch(fallback.clone()),
    ];
    assert!(steps.len() > expected.len(), "{steps:#?}\n{}", gw.stderr());
    assert_eq!(steps[..expected.len()], expected[..], "{steps:#?}");
    // From there on Pebble only (a failed order at Pebble would count on from 4), ending in
    // the issuance.
    for s in &steps[expected.len()..] {
        match s {
            Step::Order(d) | Step::Issued(d) => assert_eq!(d, &fallback, "{steps:#?}"),
            Step::Failed(n) => assert!(*n > 3, "{steps:#?}"),
            Step::Switch(_) => panic!("a second switch: {steps:#?}"),
        }
    }
    assert_eq!(steps.last(), Some(&Step::Issued(fallback.clone())), "{steps:#?}");
}

/// The key id and HMAC key Pebble is given (its own example pair, base64url as ZeroSSL
/// hands them out).
const EAB_KID: &str = "kid-1";
const EAB_KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";

/// Pebble with `externalAccountBindingRequired` and one key (the configuration of Debian's
/// /usr/share/doc/pebble/examples/pebble-config-external-account-bindings.json): the
/// harness's Pebble, stopped, given those two settings, and started again.
async fn pebble_requiring_eab() -> Pebble {
    let mut pebble = Pebble::start(free_port(), &[]).await;
    pebble.stop();
    let path = pebble.dir.path().join("pebble.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut keys = serde_json::Map::new();
    keys.insert(EAB_KID.to_owned(), EAB_KEY.into());
    cfg["pebble"]["externalAccountBindingRequired"] = serde_json::Value::Bool(true);
    cfg["pebble"]["externalAccountMACKeys"] = serde_json::Value::Object(keys);
    std::fs::write(&path, cfg.to_string()).unwrap();
    pebble.launch().await;
    pebble
}

/// ACME account credentials stored under `storage` (the `.json` files in `accounts/`).
fn accounts(storage: &Path) -> usize {
    std::fs::read_dir(storage.join("accounts"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

/// External Account Binding against a Pebble that requires it: the gateway with `eab_kid` /
/// `eab_hmac_key` gets an account and a certificate; the one without is refused, and its
/// log, `status.json` and served certificate say so: the CA's problem type
/// (`externalAccountRequired`) and detail, no account, the self-signed stand-in.
///
/// To see it fail: pass `None` instead of `eab.as_ref()` to `create` in
/// `AcmeManager::account` (crates/tls/src/acme/order.rs) (the first gateway is refused too);
/// or drop the problem detail in `describe` (crates/tls/src/acme/errors.rs).
#[tokio::test]
async fn pebble_requiring_eab_issues_with_the_binding_and_refuses_without() {
    let pebble = pebble_requiring_eab().await;
    let up = upstream::echo().await;
    let (with_storage, without_storage) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let with = harness::acme::config(&pebble, with_storage.path(), up.addr).replace(
        "retry_min",
        &format!("eab_kid = \"{EAB_KID}\"\neab_hmac_key = \"{EAB_KEY}\"\nretry_min"),
    );
    // Never validated by Pebble: it does not listen on Pebble's HTTP-01 port.
    let without = harness::acme::config(&pebble, without_storage.path(), up.addr).replace(
        &format!("http = \"127.0.0.1:{}\"", pebble.http_port),
        "http = \"{HTTP}\"",
    );
    let (with, without) = tokio::join!(Gateway::start(&with), Gateway::start(&without));

    let root = wait_issued(&with, &pebble).await;
    assert_eq!(accounts(with_storage.path()), 1, "an account, bound");

    let failed = ["could not obtain certificate", "certificate=main"];
    let refusal = log_line_with(&without, secs(30), &failed).await;
    assert!(
        refusal.contains("the CA refused (externalAccountRequired)"),
        "{refusal}"
    );
    assert!(
        refusal.contains("externalAccountBinding"),
        "the CA's own detail: {refusal}"
    );
    let required = "externalAccountRequired";
    wait_status(without_storage.path(), "main", required, secs(10)).await;
    assert_eq!(
        accounts(without_storage.path()),
        0,
        "no account without the binding"
    );
    if let Ok(tls) = verified(without.https, NAMES[0], &root).await {
        panic!(
            "a certificate from the CA without EAB: {:?}",
            tls.get_ref().1.peer_certificates().map(|c| c.len())
        );
    }
}
