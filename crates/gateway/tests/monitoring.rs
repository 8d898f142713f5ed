//! What monitoring sees: the shipped alert rules pass `promtool` (syntax and unit tests that
//! make each alert fire), the dashboard shows the honest certificate series, and the gateway
//! exports them honestly: a placeholder is a placeholder (no expiry), a refused file is
//! counted.

mod harness;

use harness::gateway::simple_config;
use harness::metrics::{sample, samples, scrape};
use harness::{poll_until, upstream, Gateway};
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// Runs `promtool args...` with a 60 s deadline; its exit status and output. Fails, naming
/// the Debian package, when promtool is not installed: the check must never pass unseen.
fn promtool(args: &[&Path], sub: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(harness::require_tool("promtool", "prometheus"));
    cmd.args(sub).args(args);
    let out = harness::run_cmd(&mut cmd, Duration::from_secs(60));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The names after `key` in lines like `  - alert: Name` / `alertname: Name`.
fn names_after(text: &str, key: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix(key))
        .map(|n| n.trim().to_owned())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_alert_rules_pass_promtool_and_each_alert_is_unit_tested() {
    let rules = repo("deploy/prometheus/alerts.yml");
    let tests = repo("deploy/prometheus/alerts_test.yml");
    let (ok, out) = promtool(&[rules.as_path()], &["check", "rules"]);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = promtool(&[tests.as_path()], &["test", "rules"]);
    assert!(ok, "promtool test rules:\n{out}");

    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let tests_text = std::fs::read_to_string(&tests).unwrap();
    let alerts = names_after(&rules_text, "alert:");
    assert!(alerts.len() >= 5, "{alerts:?}");
    let tested = names_after(&tests_text, "alertname:");
    for a in &alerts {
        assert!(
            tested.contains(a),
            "alert {a} has no unit test in alerts_test.yml"
        );
    }
    // (Every series the rules use is in a live scrape: see the next test.)
    for needed in [
        "gateway_certificate_expiry_timestamp_seconds",
        "gateway_certificate_placeholder",
        "gateway_certificate_load_failures_total",
        "gateway_acme_orders_total{result=\"failure\"}",
        "gateway_acme_storage_writable",
        "gateway_config_reload_failures_total",
        "gateway_requests_total{status=\"5xx\"}",
        "gateway_upstream_errors_total",
        "up{job=\"gateway\"} == 0",
    ] {
        assert!(rules_text.contains(needed), "no alert on {needed}");
    }
}

/// The `gateway_*` names in a text (alert expressions).
fn gateway_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("gateway_")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every series an alert rule uses is in a live scrape of a gateway with a certificate file,
/// an ACME certificate and an upstream, before any traffic: the rules can only fire on what
/// the gateway exports, and the per-name counters are there at 0 from the start.
///
/// To see it fail: rename a series in crates/proxy/src/metrics.rs (or in alerts.yml).
#[tokio::test]
async fn every_series_the_alert_rules_use_is_in_a_live_scrape() {
    let rules_text = std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap();
    let names = gateway_names(&rules_text);
    assert!(names.len() >= 7, "{names:?}");
    let up = upstream::echo().await;
    let roots = tempfile::tempdir().unwrap();
    let (chain, key, _) = certificate();
    std::fs::write(roots.path().join("root.pem"), &chain).unwrap();
    std::fs::write(roots.path().join("site.pem"), &chain).unwrap();
    std::fs::write(roots.path().join("site.key"), key).unwrap();
    let extra = format!(
        "[tls]\n[[tls.certificates]]\nname = \"site\"\ncert = \"{dir}/site.pem\"\nkey = \"{dir}/site.key\"\n\
         [acme]\ndirectory = \"https://localhost:{port}/dir\"\nstorage = \"{{DIR}}/acme\"\nca_root = \"{dir}/root.pem\"\n\
         [[acme.certificates]]\nname = \"managed\"\nnames = [\"managed.gateway.test\"]\n",
        dir = roots.path().display(),
        port = harness::free_port(),
    );
    let gw = Gateway::start(&simple_config(up.addr, &extra)).await;
    let text = scrape_until(&gw, "every series of the alert rules", |t| {
        names.iter().all(|n| !samples(t, n).is_empty())
    })
    .await;
    for n in &names {
        assert!(
            !samples(&text, n).is_empty(),
            "alerts.yml uses {n}, not in the scrape:\n{text}"
        );
    }
}

#[test]
fn the_dashboard_shows_placeholders_and_refused_files() {
    let text = std::fs::read_to_string(repo("deploy/grafana/gateway-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    for metric in [
        "gateway_certificate_expiry_timestamp_seconds",
        "gateway_certificate_placeholder",
        "gateway_certificate_load_failures_total",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "no dashboard panel queries {metric}"
        );
    }
    let ids: Vec<u64> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "panel ids are unique");
}

/// A real-looking certificate for `localhost`, valid 90 days from now: its PEM chain, key,
/// and not-after in Unix seconds.
fn certificate() -> (String, String, i64) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(90);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem(), params.not_after.unix_timestamp())
}

/// `{name}{certificate="site"}`, as the text format writes the series.
fn site(name: &str) -> String {
    format!("{name}{{certificate=\"site\"}}")
}

/// Scrapes until `pred` holds for the text; returns it.
async fn scrape_until(gw: &Gateway, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let addr = gw.metrics;
    poll_until(Duration::from_secs(15), what, || {
        let text = scrape(addr);
        let pred = &pred;
        async move {
            let text = text.await?;
            pred(text.as_str()).then_some(text)
        }
    })
    .await
}

#[tokio::test]
async fn placeholder_and_refused_files_are_exported_honestly() {
    let up = upstream::echo().await;
    let tls = r#"
[tls]
[[tls.certificates]]
name = "site"
hosts = ["localhost"]
cert = "{DIR}/site/fullchain.pem"
key = "{DIR}/site/privkey.pem"
if_missing = "self-signed"
"#;
    // Reloads on SIGHUP only, so each reload is counted once.
    let toml = simple_config(up.addr, tls).replace("[server]", "[server]\nwatch_config = false");
    let gw = Gateway::start(&toml).await;

    // No files yet: a placeholder, and no expiry series that would look like a certificate.
    let text = scrape(gw.metrics).await.expect("/metrics answers");
    assert_eq!(
        sample(&text, &site("gateway_certificate_placeholder")),
        Some(1.0),
        "{text}"
    );
    let expiry = samples(&text, "gateway_certificate_expiry_timestamp_seconds");
    assert!(
        expiry.is_empty(),
        "an expiry series for a placeholder: {expiry:?}"
    );
    assert_eq!(
        sample(&text, &site("gateway_certificate_load_failures_total")).unwrap_or(0.0),
        0.0,
        "a missing file with if_missing = self-signed is not a refused one"
    );

    // The real files arrive: the expiry is the certificate's, the placeholder gauge 0.
    let dir = gw.dir.path().join("site");
    std::fs::create_dir_all(&dir).unwrap();
    let (chain, key, not_after) = certificate();
    std::fs::write(dir.join("privkey.pem"), key).unwrap();
    std::fs::write(dir.join("fullchain.pem"), chain).unwrap();
    gw.signal(Signal::SIGHUP);
    let text = scrape_until(&gw, "the real certificate in the metrics", |t| {
        sample(t, &site("gateway_certificate_placeholder")) == Some(0.0)
    })
    .await;
    let expiry = sample(&text, &site("gateway_certificate_expiry_timestamp_seconds"));
    assert!(
        expiry.is_some_and(|e| (e - not_after as f64).abs() <= 1.0),
        "expiry {expiry:?}, the certificate's not-after {not_after}:\n{text}"
    );
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as f64;
    assert!(not_after as f64 > now + 80.0 * 86400.0);

    // A corrupt chain at the next reload: refused and counted once; the previous
    // certificate is still served and still exported.
    std::fs::write(
        dir.join("fullchain.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();
    gw.signal(Signal::SIGHUP);
    let text = scrape_until(&gw, "the refused file to be counted", |t| {
        sample(t, &site("gateway_certificate_load_failures_total")).is_some_and(|v| v >= 1.0)
    })
    .await;
    assert_eq!(
        sample(&text, &site("gateway_certificate_load_failures_total")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &site("gateway_certificate_placeholder")),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &site("gateway_certificate_expiry_timestamp_seconds")),
        expiry,
        "the previous certificate is still exported"
    );
    assert_eq!(sample(&text, "gateway_config_reloads_total"), Some(2.0), "{text}");
}
