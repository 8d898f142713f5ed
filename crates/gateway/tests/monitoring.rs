//! What monitoring sees: the shipped alert rules pass `promtool` (syntax and unit tests that
//! make each alert fire), every series the alert rules and the Grafana dashboard query is in
//! a live scrape, the dashboard shows the honest certificate series, and the gateway exports
//! them honestly: a placeholder is a placeholder (no expiry), a refused file is counted. A
//! real Prometheus scrapes the request counter by route, unmatched requests under
//! `route="none"`.

mod harness;

use harness::config::{preamble, upstream_at};
use harness::gateway::{simple_config, with_echo};
use harness::metrics::{labelled_extra, sample, samples, scrape};
use harness::scrape::Scrape;
use harness::{client, poll_until, secs, upstream, Gateway};
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
    let (_up, gw) = with_echo(&extra).await;
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

/// The names of every `gateway_*` series in the dashboard's expressions.
fn dashboard_names() -> BTreeSet<String> {
    let path = repo("deploy/grafana/gateway-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&json, &mut exprs);
    assert!(!exprs.is_empty(), "no `expr` in {}", path.display());
    let mut names = BTreeSet::new();
    for e in exprs {
        let mut rest = e;
        while let Some(at) = rest.find("gateway_") {
            let tail = &rest[at..];
            let len = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..len].to_owned());
            rest = &tail[len..];
        }
    }
    names
}

fn collect_exprs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v.as_str() {
                    Some(s) if k == "expr" => out.push(s),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                collect_exprs(v, out);
            }
        }
        _ => {}
    }
}

/// Every series the Grafana dashboard (deploy/grafana/gateway-dashboard.json) queries is in
/// a live scrape once traffic created the labelled ones (requests, a refused upstream, a
/// failed handshake, a file certificate then a corrupt one at a reload, a failing ACME
/// certificate and its placeholder): the names come from the dashboard's expressions, the
/// check from what the running gateway serves.
///
/// To see it fail: rename a metric in crates/proxy/src/metrics.rs (or in the dashboard), or
/// stop registering one.
#[tokio::test]
async fn every_series_of_the_grafana_dashboard_is_in_a_live_scrape() {
    let names = dashboard_names();
    assert!(names.len() >= 12, "the dashboard's series: {names:?}");
    let certs = tempfile::tempdir().unwrap();
    let (extra, cert) = labelled_extra(certs.path());
    let (_up, gw) = with_echo(&extra).await;
    let c = client::http(false);
    assert_eq!(c.get(gw.url("/x")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(gw.url("/dead/x")).send().await.unwrap().status(), 502);
    client::not_tls(gw.https).await;
    // A certificate file refused at a reload (the previous certificate stays served).
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    let missing = |s: &Scrape| -> Vec<String> {
        let have = s.names();
        names
            .iter()
            .filter(|n| !have.contains(n.as_str()))
            .cloned()
            .collect()
    };
    let what = "every series of the dashboard";
    let s = harness::scrape::scrape_until(gw.metrics, secs(20), what, |s| missing(s).is_empty()).await;
    assert!(missing(&s).is_empty());
    // The labelled ones carry the configured names.
    assert!(s
        .get(
            "gateway_certificate_expiry_timestamp_seconds",
            &[("certificate", "site")]
        )
        .is_some());
    assert!(
        s.value(
            "gateway_acme_orders_total",
            &[("certificate", "managed"), ("result", "failure")]
        ) >= 1.0
    );
    let dead: f64 = s
        .series("gateway_upstream_errors_total", &[("upstream", "dead")])
        .iter()
        .map(|x| x.value)
        .sum();
    assert!(dead >= 1.0, "{}", s.text);
}

/// Two named routes and no catch-all: a request for an unknown host and path matches
/// nothing, so it is counted under `route="none"` and cannot borrow a configured label.
fn scrape_config(up: SocketAddr) -> String {
    format!(
        r#"
{head}[logging]
access_log = "off"
{echo}[[routes]]
name = "scraped"
prefix = "/scraped"
upstream = "echo"
[[routes]]
name = "api"
host = "api.test"
prefix = "/"
upstream = "echo"
"#,
        head = preamble("3s", ""),
        echo = upstream_at("echo", up),
    )
}

/// The result vector of an instant query to Prometheus' HTTP API.
async fn prom_query(api: &reqwest::Client, web: SocketAddr, query: &str) -> Option<Vec<serde_json::Value>> {
    let r = api
        .get(format!("http://{web}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
    v["data"]["result"].as_array().cloned()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_request_counter_by_route() {
    let prometheus = harness::require_tool("prometheus", "prometheus");
    let up = upstream::echo().await;
    let gw = Gateway::start(&scrape_config(up.addr)).await;
    let c = client::http(false);
    for _ in 0..5 {
        assert_eq!(c.get(gw.url("/scraped")).send().await.unwrap().status(), 200);
    }
    // Unknown host, unknown path: no route, 404; it must not create series of its own.
    let r = client::fetch(&c, &gw, "/no-such-route/zzz", &[("Host", "evil.example")]).await;
    assert_eq!(r.status(), 404, "no route for an unknown host and path");
    let exposed = client::scrape(gw.metrics).await;
    for needle in ["evil.example", "no-such-route"] {
        assert!(!exposed.contains(needle), "{needle} became a label:\n{exposed}");
    }

    let dir = tempfile::tempdir().unwrap();
    let web = harness::free_addr();
    let cfg = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gateway\n    static_configs:\n      - targets: ['{}']\n",
        gw.metrics
    );
    std::fs::write(dir.path().join("prometheus.yml"), cfg).unwrap();
    let mut cmd = Command::new(prometheus);
    cmd.arg(format!(
        "--config.file={}",
        dir.path().join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.path().join("data").display()
    ))
    .arg(format!("--web.listen-address={web}"))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap());
    let _prometheus = harness::ProcessGuard::spawn(&mut cmd, "prometheus");
    let api = client::plain();
    let results = poll_until(
        Duration::from_secs(60),
        "prometheus to scrape both series",
        || {
            let api = api.clone();
            async move {
                let results = prom_query(&api, web, "gateway_requests_total").await?;
                let has = |route: &str| results.iter().any(|r| r["metric"]["route"] == route);
                let both = has("scraped") && has("none");
                both.then_some(results)
            }
        },
    )
    .await;
    let value = |route: &str, status: &str| -> f64 {
        results
            .iter()
            .find(|r| {
                let m = &r["metric"];
                m["route"] == route && m["status"] == status && m["method"] == "GET"
            })
            .and_then(|r| r["value"][1].as_str()?.parse().ok())
            .unwrap_or_else(|| panic!("no series for route={route}, GET, {status}: {results:#?}"))
    };
    assert_eq!(value("scraped", "2xx"), 5.0, "{results:#?}");
    assert_eq!(
        value("none", "4xx"),
        1.0,
        "the unknown host and path: {results:#?}"
    );
    for r in &results {
        let route = r["metric"]["route"].as_str().unwrap_or_default();
        assert!(
            ["scraped", "api", "none"].contains(&route),
            "unexpected route label {route}: {results:#?}"
        );
    }
    let build = prom_query(&api, web, "gateway_build_info")
        .await
        .expect("the build_info query");
    assert!(
        build.iter().any(|r| r["metric"]["version"].is_string()),
        "{build:#?}"
    );
}
