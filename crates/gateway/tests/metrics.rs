//! The series README's "Metrics" table lists, in a live scrape: every one there from the
//! start with the labelled counters of configured names at 0 (and a reload's new names too),
//! the process_* series, the certificate gauges following an ACME issuance without a reload,
//! and a storage that cannot be written made loud (metric, `gateway certs`, log).

mod harness;

use harness::acme::{config, wait_issued};
use harness::gateway::simple_config;
use harness::metrics::labelled_extra;
use harness::pebble::Pebble;
use harness::scrape::{scrape_until, Scrape};
use harness::{free_port, upstream, Gateway};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// The series names of README's "Metrics" table: the first backticked word of each row.
fn documented() -> Vec<String> {
    let text = std::fs::read_to_string(repo("README.md")).unwrap();
    let section = text
        .split("\n## Metrics\n")
        .nth(1)
        .expect("README has a \"## Metrics\" section")
        .split("\n## ")
        .next()
        .unwrap();
    let names: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 25, "the table's series: {names:?}");
    names
}

/// A histogram is in the scrape as `<name>_count`.
fn missing(s: &Scrape, names: &[String]) -> Vec<String> {
    let have = s.names();
    names
        .iter()
        .filter(|n| !have.contains(n.as_str()) && !have.contains(format!("{n}_count").as_str()))
        .cloned()
        .collect()
}

const KINDS: [&str; 7] = [
    "dns",
    "connect_refused",
    "connect_timeout",
    "connect_error",
    "timeout",
    "protocol",
    "response",
];

/// Every series of the README's table is in the first scrapes, before any request: the
/// per-name counters at 0 (`increase(...) > 0` then sees the first event), the process_*
/// series; a reload that adds an upstream and a route adds theirs at 0.
///
/// To see it fail: drop the `init_series` call in `after_certificate_load`
/// (crates/gateway/src/reload.rs), or the `process` feature of `prometheus` (Cargo.toml).
#[tokio::test]
async fn every_documented_series_is_there_from_the_start_at_zero() {
    let names = documented();
    let up = upstream::echo().await;
    let certs = tempfile::tempdir().unwrap();
    let (extra, _) = labelled_extra(certs.path());
    let toml = simple_config(up.addr, &extra);
    let gw = Gateway::start(&toml).await;
    let s = scrape_until(gw.metrics, secs(10), "every documented series", |s| {
        missing(s, &names).is_empty()
    })
    .await;
    for upstream in ["echo", "dead"] {
        for kind in KINDS {
            assert_eq!(
                s.get(
                    "gateway_upstream_errors_total",
                    &[("upstream", upstream), ("kind", kind)]
                ),
                Some(0.0),
                "{upstream} {kind}:\n{}",
                s.text
            );
        }
        assert_eq!(
            s.get("gateway_upstream_retries_total", &[("upstream", upstream)]),
            Some(0.0),
            "{}",
            s.text
        );
    }
    for route in ["all", "dead"] {
        for method in ["GET", "POST", "OTHER"] {
            assert_eq!(
                s.get(
                    "gateway_requests_total",
                    &[("route", route), ("method", method), ("status", "5xx")]
                ),
                Some(0.0),
                "{}",
                s.text
            );
        }
        assert_eq!(
            s.get("gateway_request_duration_seconds_count", &[("route", route)]),
            Some(0.0)
        );
    }
    let site = [("certificate", "site")];
    assert_eq!(s.get("gateway_certificate_load_failures_total", &site), Some(0.0));
    let managed = [("certificate", "managed")];
    assert_eq!(
        s.get(
            "gateway_acme_orders_total",
            &[("certificate", "managed"), ("result", "success")]
        ),
        Some(0.0),
        "{}",
        s.text
    );
    assert!(s
        .get(
            "gateway_acme_orders_total",
            &[("certificate", "managed"), ("result", "failure")]
        )
        .is_some());
    assert_eq!(s.get("gateway_acme_storage_errors_total", &managed), Some(0.0));
    assert_eq!(s.get("gateway_acme_storage_writable", &managed), Some(1.0));
    // The process series describe this process.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = s.value("process_start_time_seconds", &[]);
    assert!(
        started > now - 120.0 && started <= now + 1.0,
        "{started} at {now}"
    );
    assert!(s.value("process_open_fds", &[]) >= 3.0, "{}", s.text);
    assert!(s.value("process_resident_memory_bytes", &[]) > 1e6, "{}", s.text);

    // A reload adds an upstream and its route: their series appear at 0 with it.
    let more = toml.replace(
        "[upstreams.dead]",
        &format!(
            "[upstreams.later]\naddress = \"{}\"\n[[routes]]\nname = \"later\"\nprefix = \"/later/\"\nupstream = \"later\"\n[upstreams.dead]",
            up.addr
        ),
    );
    gw.write_config(&more);
    let s = scrape_until(gw.metrics, secs(10), "the reloaded names", |s| {
        s.get(
            "gateway_upstream_errors_total",
            &[("upstream", "later"), ("kind", "connect_refused")],
        )
        .is_some()
    })
    .await;
    assert_eq!(
        s.get(
            "gateway_requests_total",
            &[("route", "later"), ("method", "GET"), ("status", "5xx")]
        ),
        Some(0.0),
        "{}",
        s.text
    );
    assert_eq!(
        s.get("gateway_upstream_retries_total", &[("upstream", "later")]),
        Some(0.0)
    );
}

/// After the CA issues the first certificate, the placeholder gauge is 0 and the expiry is
/// the new certificate's, with no reload (the "placeholder for 1 h" alert would fire after
/// every first issuance otherwise).
///
/// To see it fail: empty `MetricsObserver::installed` (crates/gateway/src/acme.rs).
#[tokio::test]
async fn pebble_issuance_publishes_the_certificate_gauges_at_once() {
    let storage = tempfile::tempdir().unwrap();
    let pebble = Pebble::start(free_port(), &[]).await;
    let up = upstream::echo().await;
    let gw = Gateway::start(&config(&pebble, storage.path(), up.addr)).await;
    wait_issued(&gw, &pebble).await;
    let main = [("certificate", "main")];
    let s = scrape_until(gw.metrics, secs(10), "the placeholder gauge at 0", |s| {
        s.get("gateway_certificate_placeholder", &main) == Some(0.0)
    })
    .await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let expiry = s
        .get("gateway_certificate_expiry_timestamp_seconds", &main)
        .unwrap_or_else(|| panic!("no expiry series after issuance:\n{}", s.text));
    assert!(expiry > now + 86400.0, "{expiry} at {now}");
    assert_eq!(
        s.get(
            "gateway_acme_orders_total",
            &[("certificate", "main"), ("result", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value("gateway_config_reloads_total", &[]),
        0.0,
        "no reload happened"
    );
    assert_eq!(s.get("gateway_acme_storage_writable", &main), Some(1.0));
}

/// `gateway certs` with `args`, with a deadline; its standard output.
async fn certs_listing(gw: &Gateway, args: &[&str]) -> String {
    let mut cmd = Command::new(harness::gateway::binary());
    cmd.arg("certs")
        .args(args)
        .arg("--config")
        .arg(&gw.config)
        .arg("--run-dir")
        .arg(gw.run_dir());
    let out = harness::run_cmd_async(cmd, secs(60)).await;
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The storage becomes unwritable after the start, then the CA answers: the certificate is
/// served from memory, and the state is loud: `gateway_acme_storage_writable` 0, the failed
/// writes counted, the cause in `gateway certs` (from the running process, and from the files
/// alone with `--file`) and in the log.
///
/// The tests run as root, whom permission bits do not stop: the storage directory is moved
/// away and a regular file put at its path, so every write fails with ENOTDIR, for every
/// user (a read-only mount does the same in production).
///
/// To see it fail: make `AcmeManager::checkpoint` (crates/tls/src/acme/persist.rs) report no
/// problem, or drop the observer's `storage` call.
#[tokio::test]
async fn pebble_unwritable_storage_after_the_start_is_reported_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = tmp.path().join("state");
    std::fs::create_dir(&storage).unwrap();
    let up = upstream::echo().await;
    let mut pebble = Pebble::start(free_port(), &[]).await;
    pebble.stop();
    let gw = Gateway::start(&config(&pebble, &storage, up.addr)).await;
    let main = [("certificate", "main")];
    // The first attempts fail (no CA yet) with the storage still writable.
    scrape_until(
        gw.metrics,
        secs(30),
        "a failed order with a writable storage",
        |s| {
            s.value(
                "gateway_acme_orders_total",
                &[("certificate", "main"), ("result", "failure")],
            ) >= 1.0
                && s.get("gateway_acme_storage_writable", &main) == Some(1.0)
        },
    )
    .await;
    std::fs::rename(&storage, tmp.path().join("state.moved")).unwrap();
    std::fs::write(&storage, "not a directory").unwrap();
    pebble.launch().await;
    wait_issued(&gw, &pebble).await;
    let s = scrape_until(gw.metrics, secs(20), "the storage reported unwritable", |s| {
        s.get("gateway_acme_storage_writable", &main) == Some(0.0)
    })
    .await;
    assert!(
        s.value("gateway_acme_storage_errors_total", &main) >= 2.0,
        "the account and the certificate at least:\n{}",
        s.text
    );
    assert_eq!(
        s.get("gateway_certificate_placeholder", &main),
        Some(0.0),
        "the issued certificate is served from memory"
    );
    assert!(s
        .get("gateway_certificate_expiry_timestamp_seconds", &main)
        .is_some());

    let live = certs_listing(&gw, &[]).await;
    assert!(
        live.contains("ACME storage is not writable") && live.contains("Not a directory"),
        "{live}"
    );
    assert!(!live.contains("error:    none"), "{live}");
    let files = certs_listing(&gw, &["--file"]).await;
    assert!(
        files.contains("ACME storage is not writable by uid") && files.contains("Not a directory"),
        "{files}"
    );
    let log = harness::acme::plain(&gw.stderr());
    assert!(log.contains("the ACME state cannot be stored"), "{log}");
    assert!(log.contains("cannot store the ACME account"), "{log}");
}
