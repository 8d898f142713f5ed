//! ACME against Pebble across a certificate's life: `[acme]` edited while running, a crash
//! while a new certificate is stored, two gateways sharing one storage directory.

mod harness;

use harness::acme::{first_cert, lines_with, pair_matches, store_near_expiry, verified};
use harness::acme::{wait_issued, wait_issued_for, Setup, NAMES};
use harness::{client, secs, until, Gateway};
use std::os::unix::process::ExitStatusExt;

#[tokio::test]
async fn pebble_reload_starts_restarts_and_stops_certificate_loops() {
    let acme = Setup::start(&[]).await;
    let base = acme.config();
    let with_extra =
        |names: &str| format!("{base}\n[[acme.certificates]]\nname = \"extra\"\nnames = [{names}]\n");
    let gw = Gateway::start(&base).await;
    let root = wait_issued(&gw, &acme.pebble).await;

    // Added: its loop starts and the certificate is issued, no restart.
    gw.write_config(&with_extra("\"c.gateway.test\""));
    wait_issued_for(gw.https, &acme.pebble, &["c.gateway.test"]).await;
    assert!(!lines_with(
        &gw.stderr(),
        &["certificate added to [acme]", "certificate=extra"]
    )
    .is_empty());

    // Names changed: ordered anew, with the new name.
    gw.write_config(&with_extra("\"c.gateway.test\", \"d.gateway.test\""));
    wait_issued_for(gw.https, &acme.pebble, &["c.gateway.test", "d.gateway.test"]).await;
    let stopped = |log: &str| lines_with(log, &["renewal loop stopped", "certificate=extra"]).len();
    assert_eq!(stopped(&gw.stderr()), 1, "the loop with the old names stopped");

    // Removed: its loop stops; its files stay.
    gw.write_config(&base);
    gw.wait_log(secs(20), "the removed certificate's loop to stop", |log| {
        stopped(log) == 2
    })
    .await;
    assert!(!lines_with(
        &gw.stderr(),
        &["certificate removed from [acme]", "certificate=extra"]
    )
    .is_empty());
    assert!(pair_matches(&acme.path("extra")), "the files stay");

    // `main` went on undisturbed through all three reloads: one order, still served.
    let log = gw.stderr();
    assert!(
        lines_with(&log, &["settings changed", "certificate=main"]).is_empty(),
        "{log}"
    );
    assert_eq!(
        lines_with(&log, &["ordering certificate", "certificate=main"]).len(),
        1,
        "{log}"
    );
    if let Err(e) = verified(gw.https, NAMES[0], &root).await {
        panic!("no verified TLS connection for {}: {e}", NAMES[0]);
    }
}

/// Waits for the gateway process to end on its own; returns how it ended.
async fn exited(gw: &mut Gateway) -> std::process::ExitStatus {
    let child = gw.child.as_mut().expect("started");
    let status = until(secs(60), "the gateway to abort", || {
        child.try_wait().ok().flatten()
    })
    .await;
    gw.child = None;
    status
}

#[tokio::test]
async fn pebble_a_crash_while_storing_never_tears_the_pair() {
    const CRASH: &str = "GATEWAY_TEST_CRASH_AFTER";
    let mut acme = Setup::down().await;
    store_near_expiry(acme.storage.path());
    let dir = acme.path("main");
    let old = (
        std::fs::read(dir.join("fullchain.pem")).unwrap(),
        std::fs::read(dir.join("privkey.pem")).unwrap(),
    );
    // Started while the CA is down, so it is listening before the order that crashes it.
    let mut gw = Gateway::start_with_env(&acme.config(), &[(CRASH, "privkey")]).await;
    acme.pebble.launch().await;

    // 1. Killed after the new key is written, before its chain.
    let status = exited(&mut gw).await;
    assert_eq!(status.signal(), Some(6), "SIGABRT: {status:?}");
    assert!(gw.stderr().contains("aborting on purpose"));
    assert_eq!(std::fs::read(dir.join("fullchain.pem")).unwrap(), old.0);
    assert_eq!(std::fs::read(dir.join("privkey.pem")).unwrap(), old.1);
    assert!(pair_matches(&dir));
    let half: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".new-"))
        .collect();
    assert_eq!(half.len(), 1, "the interrupted unit is set apart");
    assert!(half[0].path().join("privkey.pem").exists() && !half[0].path().join("fullchain.pem").exists());

    // 2. Killed right after the new unit became current, before the user-facing links.
    gw.spawn(false, &[(CRASH, "current")]);
    let status = exited(&mut gw).await;
    assert_eq!(status.signal(), Some(6), "SIGABRT: {status:?}");
    assert!(pair_matches(&dir.join("current")), "the new unit is whole");
    assert!(pair_matches(&dir), "the old pair is still whole");
    assert_eq!(std::fs::read(dir.join("fullchain.pem")).unwrap(), old.0);

    // 3. A normal start serves the new unit and points the user-facing paths at it.
    let before = gw.stderr().len();
    gw.spawn(false, &[]);
    gw.wait_ready().await;
    let root = acme.pebble.issuing_root().await;
    if let Err(e) = verified(gw.https, NAMES[0], &root).await {
        panic!("no verified TLS connection for {}: {e}", NAMES[0]);
    }
    let (_, served) = client::tls(gw.https, NAMES[0]).await;
    assert_eq!(
        served.as_ref(),
        &first_cert(&dir)[..],
        "fullchain.pem is what is served"
    );
    assert!(pair_matches(&dir));
    assert!(std::fs::symlink_metadata(dir.join("privkey.pem"))
        .unwrap()
        .file_type()
        .is_symlink());
    let after = gw.stderr()[before..].to_string();
    assert!(!after.contains("ordering certificate"), "{after}");
}

#[tokio::test]
async fn pebble_two_gateways_on_one_storage_order_once_and_serve_matching_pairs() {
    let acme = Setup::start(&[]).await;
    // Both start with a certificate due for renewal: both want to order at once.
    store_near_expiry(acme.storage.path());
    // `a` answers Pebble's HTTP-01 requests; `b` listens elsewhere, so an order of its own
    // would fail validation: only `a` can complete one.
    let cfg_a = acme.config();
    let cfg_b = cfg_a.replace(
        &format!("http = \"127.0.0.1:{}\"", acme.pebble.http_port),
        "http = \"{HTTP}\"",
    );
    let (a, b) = tokio::join!(Gateway::start(&cfg_a), Gateway::start(&cfg_b));
    let root = wait_issued(&a, &acme.pebble).await;
    wait_issued(&b, &acme.pebble).await;
    // One issuance, shared through the storage: the same certificate on both.
    let (_, served_a) = client::tls(a.https, NAMES[0]).await;
    let (_, served_b) = client::tls(b.https, NAMES[0]).await;
    assert_eq!(served_a, served_b);
    let logs = [a.stderr(), b.stderr()];
    let issued: usize = logs
        .iter()
        .map(|l| lines_with(l, &["certificate issued and now served"]).len())
        .sum();
    assert_eq!(issued, 1, "{logs:#?}");
    assert!(
        logs.iter()
            .any(|l| !lines_with(l, &["adopting the certificate another process stored"]).is_empty()),
        "{logs:#?}"
    );
    // The files on disk are one matching pair, the one served.
    let dir = acme.path("main");
    assert!(pair_matches(&dir));
    assert_eq!(first_cert(&dir), served_a.to_vec());
    if let Err(e) = verified(b.https, NAMES[1], &root).await {
        panic!("no verified TLS connection for {}: {e}", NAMES[1]);
    }
}
