//! ACME promises against Pebble: the fallback rotation counted attempt by attempt, and
//! External Account Binding with a Pebble that requires it. Each test says above it how to
//! break the build to watch it fail.

mod harness;

use harness::acme::{config, field, lines_with, verified, wait_issued, NAMES};
use harness::pebble::Pebble;
use harness::{free_port, poll_until, upstream, Gateway};
use std::path::Path;
use std::time::Duration;

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
    let storage = tempfile::tempdir().unwrap();
    let pebble = Pebble::start(free_port(), &[]).await;
    let up = upstream::echo().await;
    let dead = format!("https://localhost:{}/dir", free_port());
    let fallback = pebble.directory();
    let cfg = config(&pebble, storage.path(), up.addr).replace(
        &format!("directory = \"{fallback}\""),
        &format!("directory = \"{dead}\"\nfallback_directories = [\"{fallback}\"]"),
    );
    let gw = Gateway::start(&cfg).await;
    wait_issued(&gw, &pebble).await;
    let steps = poll_until(Duration::from_secs(10), "the issuance in the log", || {
        let steps = loop_steps(&gw.stderr(), "main");
        async move {
            steps
                .iter()
                .any(|s| matches!(s, Step::Issued(_)))
                .then_some(steps)
        }
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
    let with = config(&pebble, with_storage.path(), up.addr).replace(
        "retry_min",
        &format!("eab_kid = \"{EAB_KID}\"\neab_hmac_key = \"{EAB_KEY}\"\nretry_min"),
    );
    // Never validated by Pebble: it does not listen on Pebble's HTTP-01 port.
    let without = config(&pebble, without_storage.path(), up.addr).replace(
        &format!("http = \"127.0.0.1:{}\"", pebble.http_port),
        "http = \"{HTTP}\"",
    );
    let (with, without) = tokio::join!(Gateway::start(&with), Gateway::start(&without));

    let root = wait_issued(&with, &pebble).await;
    assert_eq!(accounts(with_storage.path()), 1, "an account, bound");

    let refusal = poll_until(Duration::from_secs(30), "the CA's refusal without EAB", || {
        let log = without.stderr();
        async move {
            lines_with(&log, &["could not obtain certificate", "certificate=main"])
                .into_iter()
                .next()
        }
    })
    .await;
    assert!(
        refusal.contains("the CA refused (externalAccountRequired)"),
        "{refusal}"
    );
    assert!(
        refusal.contains("externalAccountBinding"),
        "the CA's own detail: {refusal}"
    );
    let status_path = without_storage.path().join("main/status.json");
    poll_until(Duration::from_secs(10), "the refusal in status.json", || {
        let status = std::fs::read_to_string(&status_path).unwrap_or_default();
        async move { status.contains("externalAccountRequired").then_some(()) }
    })
    .await;
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
