//! `gateway doctor` against a running gateway with real upstreams on loopback and Pebble as
//! its CA: the listeners held by the running gateway, the CA's directory and the clock, a
//! refused upstream, stand-ins serving Open WebUI's and Grafana's page markers behind
//! sub-path routes (Open WebUI cannot run under one: FAIL with the host-route fix; Grafana
//! with a wrong root_url: FAIL with the setting), the certificates, and `--json`.

mod harness;

use harness::acme::Setup;
use harness::config::{route, upstream_at};
use harness::{upstream, Gateway};
use std::convert::Infallible;
use std::time::Duration;

/// An upstream answering every request with `body` as HTML.
async fn page(body: &'static str) -> (std::net::SocketAddr, harness::Task) {
    let (listener, addr) = upstream::listen().await;
    let task = upstream::serve_http1(listener, move |_req| async move {
        Ok::<_, Infallible>(
            hyper::Response::builder()
                .header("content-type", "text/html")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    body.as_bytes(),
                )))
                .unwrap(),
        )
    });
    (addr, task)
}

const OPEN_WEBUI: &str = r#"<!doctype html><html><head><title>Open WebUI</title><link rel="modulepreload" href="/_app/immutable/entry/start.js"><link rel="icon" href="/static/favicon.png"></head><body></body></html>"#;
const GRAFANA: &str = r#"<!DOCTYPE html><html><head><title>Grafana</title></head><body><script>window.grafanaBootData = {"settings":{"appSubUrl":"","appUrl":"http://localhost:3000/"}};</script></body></html>"#;

#[tokio::test]
async fn doctor_reports_the_sub_path_apps_a_dead_upstream_and_the_running_gateway() {
    let s = Setup::start(&[]).await;
    let (webui, _w) = page(OPEN_WEBUI).await;
    let (grafana, _g) = page(GRAFANA).await;
    let routes = format!(
        "{}{}{}{}{}{}{}",
        upstream_at("openwebui", webui),
        upstream_at("grafana", grafana),
        upstream_at("dead", upstream::closed()),
        route("ai", "/ai/", "openwebui", "strip_prefix = true\n"),
        route("grafana", "/grafana/", "grafana", ""),
        route("dead", "/dead/", "dead", ""),
        route("all", "/x/", "echo", ""),
    );
    let cfg = format!("{}{routes}", s.config());
    let gw = Gateway::start(&cfg).await;
    harness::acme::wait_issued(&gw, &s.pebble).await;
    // Asynchronously: the stand-in upstreams run on this test's runtime.
    let (out, text) = doctor_on(&gw).await;
    assert_eq!(out.status.code(), Some(1), "a FAIL exits 1:\n{text}");
    let line = |needle: &str| line_with(&text, needle);
    assert!(
        line("listen.https").starts_with("OK listen.https:")
            && line("listen.https").contains("held by the running gateway"),
        "{text}"
    );
    assert!(line("OK ca:").contains(&s.pebble.directory()), "{text}");
    assert!(
        line("acme http-01").starts_with("OK acme http-01:")
            && line("acme http-01").contains("answered by the gateway"),
        "{text}"
    );
    assert!(line("clock:").starts_with("OK clock:"), "{text}");
    assert!(line("upstream dead").starts_with("FAIL upstream dead:"), "{text}");
    assert!(
        line("upstream echo").starts_with("OK upstream echo:")
            && line("upstream echo").contains("answered HEAD / with"),
        "{text}"
    );
    let ai = line("app /ai/");
    assert!(
        ai.starts_with("FAIL app /ai/: Open WebUI") && ai.contains("host = \\\"ai.example.com\\\"")
            || ai.contains("host = \"ai.example.com\""),
        "{ai}"
    );
    let g = line("app /grafana/");
    assert!(
        g.starts_with("FAIL app /grafana/: Grafana")
            && g.contains("GF_SERVER_ROOT_URL=%(protocol)s://%(domain)s/grafana/"),
        "{g}"
    );
    assert!(
        line("certificate main").starts_with("OK certificate main:"),
        "{text}"
    );
    // Every line has the documented shape.
    for l in text.lines() {
        assert!(
            l.starts_with("OK ") || l.starts_with("WARN ") || l.starts_with("FAIL "),
            "{l}"
        );
    }
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.args(["doctor", "--json", "--config"])
        .arg(&gw.config)
        .arg("--run-dir")
        .arg(gw.run_dir());
    let out = harness::run_cmd_async(cmd, Duration::from_secs(60)).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fails = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["level"] == "FAIL")
        .count();
    assert_eq!(fails, 3, "{v:#}");
}

/// The real Node-RED (from npm, installed once under target/test-apps/) with its editor at
/// `/`: behind a route that strips its prefix it is found and OK; behind one that keeps
/// the prefix the editor is a 404 there, and doctor names the setting to change.
#[tokio::test]
async fn doctor_checks_node_red_behind_a_stripping_and_a_keeping_route() {
    let red = harness::apps::NodeRed::start().await;
    let routes = format!(
        "{}{}{}",
        upstream_at("nodered", red.addr),
        route("nodered", "/nodered/", "nodered", "strip_prefix = true\n"),
        route("kept", "/nr-kept/", "nodered", ""),
    );
    let up = upstream::echo().await;
    let gw = Gateway::start(&harness::gateway::simple_config(up.addr, &routes)).await;
    let (_, text) = doctor_on(&gw).await;
    let line = |needle: &str| line_with(&text, needle);
    assert!(
        line("app /nodered/").starts_with("OK app /nodered/: the Node-RED editor"),
        "{text}"
    );
    let kept = line("app /nr-kept/");
    assert!(
        kept.starts_with("FAIL app /nr-kept/: Node-RED") && kept.contains("httpAdminRoot: \"/nr-kept/\""),
        "{kept}"
    );
}

/// The real n8n with `N8N_PATH=/n8n/` (it serves at `/` and links its pages to `/n8n/`):
/// a route that strips the prefix is right; one that keeps it, and one under another
/// prefix, get a FAIL naming the setting.
#[tokio::test]
async fn doctor_checks_n8n_behind_a_stripping_a_keeping_and_a_wrong_route() {
    let n8n = harness::apps::N8n::start("/n8n/", "https://example.com/n8n/").await;
    let routes = format!(
        "{}{}{}{}",
        upstream_at("n8n", n8n.addr),
        route("n8n", "/n8n/", "n8n", "strip_prefix = true\n"),
        route("n8n-kept", "/n8n-kept/", "n8n", ""),
        route("flows", "/flows/", "n8n", "strip_prefix = true\n"),
    );
    let up = upstream::echo().await;
    let gw = Gateway::start(&harness::gateway::simple_config(up.addr, &routes)).await;
    let (out, text) = doctor_on(&gw).await;
    let line = |needle: &str| line_with(&text, needle);
    let ok = line("app /n8n/:");
    assert!(
        ok.starts_with("OK app /n8n/: n8n with N8N_PATH=/n8n/") && ok.contains("https://example.com/n8n/"),
        "{ok}"
    );
    let kept = line("app /n8n-kept/");
    assert!(
        kept.starts_with("FAIL app /n8n-kept/: n8n") && kept.contains("N8N_PATH=/n8n-kept/"),
        "{kept}"
    );
    let flows = line("app /flows/");
    assert!(
        flows.starts_with("FAIL app /flows/: n8n")
            && flows.contains("links its pages to /n8n/")
            && flows.contains("N8N_PATH=/flows/"),
        "{flows}"
    );
    assert!(!out.status.success(), "a FAIL exits 1");
}

/// `gateway doctor` against `gw`'s config and run directory: its output and stdout.
async fn doctor_on(gw: &Gateway) -> (std::process::Output, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.args(["doctor", "--config"])
        .arg(&gw.config)
        .arg("--run-dir")
        .arg(gw.run_dir());
    let out = harness::run_cmd_async(cmd, Duration::from_secs(60)).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, text)
}

/// The first line of `text` that contains `needle`.
fn line_with(text: &str, needle: &str) -> String {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?}:\n{text}"))
        .to_owned()
}
