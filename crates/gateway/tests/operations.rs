//! The admins' side: hot reload under load, broken files, a real Prometheus scrape, and a
//! zero-downtime upgrade.

mod harness;

use futures_util::{SinkExt, StreamExt};
use harness::config::{preamble, route, upstream_at};
use harness::gateway::text;
use harness::{client, load, poll_until, upstream, within, Gateway};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The deadline of one step (a handshake, a message, an event).
const STEP: Duration = Duration::from_secs(10);
/// The deadline of a `gateway` subcommand.
const CMD: Duration = Duration::from_secs(60);
/// Load workers finish their request in flight after `stop`: at most the client's timeout.
const WORKERS: Duration = Duration::from_secs(90);

/// The listeners, `[server]` with a 3 s grace period, no access log.
fn off_log_preamble() -> String {
    format!("{}[logging]\naccess_log = \"off\"\n", preamble("3s", ""))
}

fn versioned(up: SocketAddr, ws: SocketAddr, version: usize) -> String {
    let only_even = if version.is_multiple_of(2) {
        "[[routes]]\nprefix = \"/only-even/\"\nupstream = \"echo\"\nheaders = { \"X-Even\" = \"yes\" }\n"
    } else {
        ""
    };
    format!(
        r#"
{head}{echo}{ws}{only_even}
{ws_route}{all}"#,
        head = off_log_preamble(),
        echo = upstream_at("echo", up),
        ws = upstream_at("ws", ws),
        ws_route = route("", "/ws/", "ws", ""),
        all = route(
            "all",
            "/",
            "echo",
            &format!("headers = {{ \"X-Config\" = \"{version}\" }}\n")
        ),
    )
}

async fn config_version(c: &reqwest::Client, gw: &Gateway) -> Option<String> {
    let r = c.get(gw.url("/probe")).send().await.ok()?;
    r.headers()
        .get("x-config")
        .map(|v| v.to_str().unwrap_or("").to_owned())
}

async fn metric(gw: &Gateway, name: &str) -> f64 {
    let text = client::scrape(gw.metrics).await;
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn twenty_reloads_under_load_drop_nothing() {
    let up = upstream::echo().await;
    let ws_up = upstream::ws_echo().await;
    let gw = Gateway::start(&versioned(up.addr, ws_up.addr, 0)).await;
    let c = client::http(false);

    // Long-lived streams opened before the first reload.
    let (tls, _) = client::tls(gw.https, "localhost").await;
    let url = format!("wss://localhost:{}/ws/x", gw.https.port());
    let handshake = tokio_tungstenite::client_async(url, tls);
    let (mut ws, _) = within(STEP, "the WebSocket handshake", handshake).await.unwrap();
    let mut sse = client::http(true).get(gw.url("/sse-long")).send().await.unwrap();
    assert_eq!(sse.status(), 200);
    within(STEP, "a first SSE event", sse.chunk())
        .await
        .unwrap()
        .expect("a first event");

    let (tally, workers) = load::start(gw.url("/load"), 4, 50_000);
    for version in 1..=20 {
        gw.write_config(&versioned(up.addr, ws_up.addr, version));
        let want = version.to_string();
        poll_until(Duration::from_secs(20), "the new configuration", || {
            let c = c.clone();
            let want = want.clone();
            let gw = &gw;
            async move { (config_version(&c, gw).await? == want).then_some(()) }
        })
        .await;
        let r = c.get(gw.url("/only-even/x")).send().await.unwrap();
        assert_eq!(
            r.headers().contains_key("x-even"),
            version.is_multiple_of(2),
            "the route exists in even versions only ({version})"
        );
    }
    tally.stop();
    for w in workers {
        within(WORKERS, "a load worker to stop", w).await.unwrap();
    }
    assert_eq!(tally.failed(), 0, "failures: {:?}", tally.errors.lock().unwrap());
    assert!(tally.ok() > 100, "the load loop ran ({} requests)", tally.ok());

    within(
        STEP,
        "sending on the WebSocket",
        ws.send("after twenty reloads".into()),
    )
    .await
    .unwrap();
    let echoed = within(STEP, "the WebSocket echo", ws.next())
        .await
        .expect("the WebSocket is still open");
    assert_eq!(echoed.unwrap().into_text().unwrap(), "after twenty reloads");
    let more = within(STEP, "more SSE events", sse.chunk()).await.unwrap();
    assert!(
        more.is_some_and(|b| b.starts_with(b"data: tick")),
        "the SSE stream is still flowing"
    );
    assert!(metric(&gw, "gateway_config_reloads_total").await >= 20.0);
}

#[tokio::test]
async fn a_broken_file_keeps_the_running_config_and_is_counted() {
    let up = upstream::echo().await;
    let ws_up = upstream::ws_echo().await;
    let good = versioned(up.addr, ws_up.addr, 7);
    // Reload only on request here, through `gateway reload` (the control socket).
    let good = good.replace("[server]", "[server]\nwatch_config = false");
    let gw = Gateway::start(&good).await;
    let c = client::http(false);
    assert_eq!(config_version(&c, &gw).await.as_deref(), Some("7"));

    let mut health = Command::new(harness::gateway::binary());
    health.arg("healthcheck").arg("--run-dir").arg(gw.run_dir());
    let health = harness::run_cmd_async(health, CMD).await;
    assert!(
        health.status.success(),
        "the container healthcheck passes: {}",
        String::from_utf8_lossy(&health.stderr)
    );

    let broken = good
        .replace("prefix = \"/ws/\"", "prefixx = \"/ws/\"")
        .replace("address = \"", "address = \"nope");
    gw.write_config(&broken);
    let mut reload = Command::new(harness::gateway::binary());
    reload.arg("reload").arg("--run-dir").arg(gw.run_dir());
    let out = harness::run_cmd_async(reload, CMD).await;
    assert!(
        !out.status.success(),
        "`gateway reload` fails on a refused file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown key `prefixx`"));
    poll_until(Duration::from_secs(10), "the refusal in the log", || {
        let log = gw.stderr();
        async move { log.contains("configuration refused").then_some(()) }
    })
    .await;
    let log = gw.stderr();
    let file = gw.config.display().to_string();
    assert!(
        log.contains(&format!("{file}:")) && log.contains("unknown key `prefixx`; did you mean `prefix`?"),
        "{log}"
    );
    assert_eq!(metric(&gw, "gateway_config_reload_failures_total").await, 1.0);
    assert_eq!(
        config_version(&c, &gw).await.as_deref(),
        Some("7"),
        "the old configuration still serves"
    );
    assert_eq!(c.get(gw.url("/x")).send().await.unwrap().status(), 200);

    // A listener change is reported, not silently ignored.
    gw.write_config(&good.replace("{METRICS}", "127.0.0.1:1").replace("\"7\"", "\"8\""));
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    poll_until(Duration::from_secs(10), "the listener warning", || {
        let log = gw.stderr();
        async move {
            (log.contains("fixed until `gateway upgrade` or a restart") && log.contains("listen.metrics"))
                .then_some(())
        }
    })
    .await;
    // The warning is logged before the new snapshot is swapped in: poll for it.
    poll_until(Duration::from_secs(10), "the rest of the change to apply", || {
        let c = c.clone();
        let gw = &gw;
        async move { (config_version(&c, gw).await.as_deref() == Some("8")).then_some(()) }
    })
    .await;
}

/// Two named routes and no catch-all: a request for an unknown host and path matches
/// nothing, so it is counted under `route="none"` and cannot borrow a configured label.
fn scrape_config(up: SocketAddr) -> String {
    format!(
        r#"
{head}{echo}[[routes]]
name = "scraped"
prefix = "/scraped"
upstream = "echo"
[[routes]]
name = "api"
host = "api.test"
prefix = "/"
upstream = "echo"
"#,
        head = off_log_preamble(),
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
    let r = c
        .get(gw.url("/no-such-route/zzz"))
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
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

/// Listening TCP sockets on `port` (IPv4), from /proc/net/tcp.
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "0A"
        })
        .count()
}

/// With `reuseport` (the default), each of the 2 threads has its own socket, and all of them
/// are handed over.
#[tokio::test]
async fn upgrade_hands_over_the_sockets_without_failing_a_request() {
    upgrade_under_load(true).await;
}

#[tokio::test]
async fn upgrade_hands_over_the_single_socket_without_reuseport() {
    upgrade_under_load(false).await;
}

async fn upgrade_under_load(reuseport: bool) {
    let up = upstream::echo().await;
    let ws_up = upstream::ws_echo().await;
    let toml = versioned(up.addr, ws_up.addr, 1)
        .replace("threads = 2", &format!("threads = 2\nreuseport = {reuseport}"));
    let mut gw = Gateway::start(&toml).await;
    let sockets = if reuseport { 2 } else { 1 };
    // Each thread's socket is bound as its service starts: the first may already accept.
    let port = gw.https.port();
    poll_until(
        Duration::from_secs(10),
        &format!("{sockets} HTTPS sockets"),
        || {
            let n = listening_sockets(port);
            async move { (n == sockets).then_some(()) }
        },
    )
    .await;
    let (tally, workers) = load::start(gw.url("/during-upgrade"), 4, 100_000);
    poll_until(Duration::from_secs(10), "load to flow", || {
        let n = tally.ok();
        async move { (n > 50).then_some(()) }
    })
    .await;
    let old_pid = gw.pid();
    // Run on a blocking thread: the load keeps flowing through the handover.
    let out = harness::run_cmd_async(gw.upgrade_command(), CMD).await;
    // The successor (in a process group of its own) is killed with `gw`, whatever happens.
    let new_pid = gw.adopt_successor();
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(new_pid, old_pid);
    // The old process drains and exits while load continues against the new one; its guard
    // kills it if the test fails first.
    let mut old = gw.take_process().unwrap();
    poll_until(Duration::from_secs(30), "the old process to exit", || {
        let done = old.try_wait().ok().flatten();
        async move { done.map(|_| ()) }
    })
    .await;
    let before = tally.ok();
    poll_until(
        Duration::from_secs(20),
        "requests served by the new process",
        || {
            let n = tally.ok();
            async move { (n > before + 50).then_some(()) }
        },
    )
    .await;
    tally.stop();
    for w in workers {
        within(WORKERS, "a load worker to stop", w).await.unwrap();
    }
    assert_eq!(
        tally.failed(),
        0,
        "failures during the handover: {:?}",
        tally.errors.lock().unwrap()
    );
    assert_eq!(listening_sockets(gw.https.port()), sockets, "after the handover");
    let after = client::http(false).get(gw.url("/after")).send().await.unwrap();
    assert_eq!(after.status(), 200);
}
