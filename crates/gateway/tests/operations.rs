//! The admins' side: hot reload under load, broken files, a real Prometheus scrape, and a
//! zero-downtime upgrade.

mod harness;

use futures_util::{SinkExt, StreamExt};
use harness::{client, load, poll_until, upstream, Gateway};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

fn versioned(up: SocketAddr, ws: SocketAddr, version: usize) -> String {
    let only_even = if version.is_multiple_of(2) {
        "[[routes]]\nprefix = \"/only-even/\"\nupstream = \"echo\"\nheaders = { \"X-Even\" = \"yes\" }\n"
    } else {
        ""
    };
    format!(
        r#"
[listen]
https = "{{HTTPS}}"
http = "{{HTTP}}"
metrics = "{{METRICS}}"
[server]
grace_period = "3s"
threads = 2
[logging]
access_log = "off"
[upstreams.echo]
address = "{up}"
[upstreams.ws]
address = "{ws}"
{only_even}
[[routes]]
prefix = "/ws/"
upstream = "ws"
[[routes]]
name = "all"
prefix = "/"
upstream = "echo"
headers = {{ "X-Config" = "{version}" }}
"#
    )
}

async fn config_version(c: &reqwest::Client, gw: &Gateway) -> Option<String> {
    let r = c.get(gw.url("/probe")).send().await.ok()?;
    r.headers()
        .get("x-config")
        .map(|v| v.to_str().unwrap_or("").to_owned())
}

async fn metric(gw: &Gateway, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", gw.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/ws/x", gw.https.port()), tls)
            .await
            .unwrap();
    let mut sse = client::http(true).get(gw.url("/sse-long")).send().await.unwrap();
    assert_eq!(sse.status(), 200);
    sse.chunk().await.unwrap().expect("a first event");

    let (tally, workers) = load::start(gw.url("/load"), 4, 50_000);
    for version in 1..=20 {
        gw.write_config(&versioned(up.addr, ws_up.addr, version));
        let want = version.to_string();
        poll_until(Duration::from_secs(10), "the new configuration", || {
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
        w.await.unwrap();
    }
    assert_eq!(tally.failed(), 0, "failures: {:?}", tally.errors.lock().unwrap());
    assert!(tally.ok() > 100, "the load loop ran ({} requests)", tally.ok());

    ws.send("after twenty reloads".into()).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().into_text().unwrap(),
        "after twenty reloads"
    );
    let more = tokio::time::timeout(Duration::from_secs(5), sse.chunk())
        .await
        .unwrap()
        .unwrap();
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
    // Reload only on request here, through `gateway reload` (SIGHUP via the pid file).
    let good = good.replace("[server]", "[server]\nwatch_config = false");
    let gw = Gateway::start(&good).await;
    let c = client::http(false);
    assert_eq!(config_version(&c, &gw).await.as_deref(), Some("7"));

    let health = Command::new(harness::gateway::binary())
        .arg("healthcheck")
        .arg("--config")
        .arg(&gw.config)
        .status()
        .unwrap();
    assert!(health.success(), "the container healthcheck passes");

    let broken = good
        .replace("prefix = \"/ws/\"", "prefixx = \"/ws/\"")
        .replace("address = \"", "address = \"nope");
    gw.write_config(&broken);
    let out = Command::new(harness::gateway::binary())
        .arg("reload")
        .arg("--run-dir")
        .arg(gw.run_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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
        async move { log.contains("need new sockets").then_some(()) }
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

#[tokio::test]
async fn a_real_prometheus_scrapes_the_request_counter_by_route() {
    let up = upstream::echo().await;
    let ws_up = upstream::ws_echo().await;
    let gw = Gateway::start(&versioned(up.addr, ws_up.addr, 1)).await;
    let c = client::http(false);
    for _ in 0..5 {
        assert_eq!(c.get(gw.url("/scraped")).send().await.unwrap().status(), 200);
    }
    // Unknown hosts and paths must not create series.
    let _ = c
        .get(gw.url("/random/path/12345"))
        .header("Host", "evil.example")
        .send()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let web = harness::free_addr();
    let cfg = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gateway\n    static_configs:\n      - targets: ['{}']\n",
        gw.metrics
    );
    std::fs::write(dir.path().join("prometheus.yml"), cfg).unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (Debian package `prometheus`)");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut prom);
    let plain = reqwest::Client::new();
    let body = poll_until(
        Duration::from_secs(60),
        "prometheus to scrape the gateway",
        || {
            let plain = plain.clone();
            async move {
                let r = plain
                    .get(format!("http://{web}/api/v1/query"))
                    .query(&[("query", "gateway_requests_total")])
                    .send()
                    .await
                    .ok()?;
                let body = r.text().await.ok()?;
                body.contains("\"route\":\"all\"").then_some(body)
            }
        },
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let results = v["data"]["result"].as_array().unwrap();
    let all_2xx = results
        .iter()
        .find(|r| {
            r["metric"]["route"] == "all" && r["metric"]["status"] == "2xx" && r["metric"]["method"] == "GET"
        })
        .expect("a series for route=all, GET, 2xx");
    let count: f64 = all_2xx["value"][1].as_str().unwrap().parse().unwrap();
    assert!(count >= 5.0, "{body}");
    for r in results {
        let route = r["metric"]["route"].as_str().unwrap();
        assert!(
            ["all", "/ws/", "none"].contains(&route),
            "unexpected route label {route}"
        );
    }
    let up_body = plain
        .get(format!("http://{web}/api/v1/query"))
        .query(&[("query", "gateway_build_info")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(up_body.contains("\"version\""), "{up_body}");
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
    assert_eq!(listening_sockets(gw.https.port()), sockets);
    let (tally, workers) = load::start(gw.url("/during-upgrade"), 4, 100_000);
    poll_until(Duration::from_secs(10), "load to flow", || {
        let n = tally.ok();
        async move { (n > 50).then_some(()) }
    })
    .await;
    let old_pid = gw.pid();
    let out = Command::new(harness::gateway::binary())
        .arg("upgrade")
        .arg("--config")
        .arg(&gw.config)
        .arg("--run-dir")
        .arg(gw.run_dir())
        .arg("--log")
        .arg(gw.dir.path().join("stderr.log"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let new_pid: i32 = std::fs::read_to_string(gw.run_dir().join("gateway.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_pid, old_pid);
    struct KillPid(i32);
    impl Drop for KillPid {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _new = KillPid(new_pid);
    // The old process drains and exits while load continues against the new one.
    let mut old = gw.take_child().unwrap();
    poll_until(Duration::from_secs(30), "the old process to exit", || {
        let done = old.try_wait().ok().flatten();
        async move { done.map(|_| ()) }
    })
    .await;
    let before = tally.ok();
    poll_until(
        Duration::from_secs(10),
        "requests served by the new process",
        || {
            let n = tally.ok();
            async move { (n > before + 50).then_some(()) }
        },
    )
    .await;
    tally.stop();
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        tally.failed(),
        0,
        "failures during the handover: {:?}",
        tally.errors.lock().unwrap()
    );
    assert_eq!(listening_sockets(gw.https.port()), sockets, "after the handover");
    assert!(
        client::http(false)
            .get(gw.url("/after"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    );
}
