//! The metrics of README's "Operations", read from a live scrape of the metrics listener
//! after traffic that must move them (gauges while the WebSocket or SSE stream is open, then
//! back down), and every series of the Grafana dashboard found in a live scrape. Each test
//! says above it how to break the build to watch it fail.

mod harness;

use harness::gateway::simple_config;
use harness::metrics::{dead_acme, labelled_extra, write_cert};
use harness::promises as p;
use harness::scrape::{scrape, scrape_until, Scrape};
use harness::{client, upstream, within, Gateway};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Plain HTTP to the HTTPS listener: a failed TLS handshake on the gateway's side.
async fn not_tls(https: std::net::SocketAddr) {
    let mut s = within(secs(10), "connecting", tokio::net::TcpStream::connect(https))
        .await
        .unwrap();
    within(
        secs(10),
        "writing",
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await
    .unwrap();
}

/// `gateway_request_duration_seconds{route}` times the whole response (the slow route's body
/// comes 400 ms after its head: nothing of it in the buckets up to 0.25 s);
/// `gateway_upstream_errors_total{upstream,kind}` names the upstream and the kind (a refused
/// connection, a read timeout); `gateway_bytes_received_total` / `gateway_bytes_sent_total`
/// count request and response bodies, byte for byte; `gateway_tls_handshakes_total` counts
/// completed handshakes only.
///
/// To see it fail, in crates/proxy/src/proxy.rs: observe the duration in `response_filter`
/// instead of `logging`; label upstream errors with the route name; count header bytes in
/// `bytes_sent`; or, in edge.rs, count a handshake per accepted TCP connection.
#[tokio::test]
async fn duration_upstream_errors_bytes_and_handshakes_follow_the_traffic() {
    let up = upstream::echo().await;
    let slow = p::paced("slow").await;
    let hung = upstream::hang().await;
    let routes = format!(
        "[upstreams.slow]\naddress = \"{slow}\"\n[upstreams.dead]\naddress = \"{dead}\"\n\
         [upstreams.hung]\naddress = \"{hung}\"\nread_timeout = \"500ms\"\n\
         [[routes]]\nname = \"slow\"\nprefix = \"/slow-body/\"\nupstream = \"slow\"\n\
         [[routes]]\nname = \"dead\"\nprefix = \"/dead/\"\nupstream = \"dead\"\n\
         [[routes]]\nname = \"hung\"\nprefix = \"/hung/\"\nupstream = \"hung\"\n",
        slow = slow.addr,
        dead = upstream::closed(),
        hung = hung.addr,
    );
    let gw = Gateway::start(&simple_config(up.addr, &routes)).await;
    let m = gw.metrics;
    let (received, sent) = ("gateway_bytes_received_total", "gateway_bytes_sent_total");

    // Bodies, one request at a time so each one's bytes are known.
    let c = client::http(false);
    let before = scrape(m).await;
    let r = c
        .post(gw.url("/upload"))
        .body(vec![b'u'; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer = r.bytes().await.unwrap().len() as f64;
    let want = before.value(received, &[]) + 100_000.0;
    let after = scrape_until(m, secs(10), "the uploaded bytes", |s| {
        s.value(received, &[]) >= want
    })
    .await;
    assert_eq!(after.value(received, &[]), want, "request body bytes received");
    assert_eq!(
        after.value(sent, &[]),
        before.value(sent, &[]) + answer,
        "the answer's body"
    );
    let r = c.get(gw.url("/big.html")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.bytes().await.unwrap().len() as f64;
    assert_eq!(page, upstream::big_html().len() as f64);
    let want = after.value(sent, &[]) + page;
    let later = scrape_until(m, secs(10), "the page's bytes", |s| s.value(sent, &[]) >= want).await;
    assert_eq!(later.value(sent, &[]), want, "response body bytes sent");
    assert_eq!(
        later.value(received, &[]),
        after.value(received, &[]),
        "a GET sends no body"
    );
    drop(c);

    // The whole response is timed.
    let r = client::http(false)
        .get(gw.url("/slow-body/400"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "the slow body\n");
    let name = "gateway_request_duration_seconds";
    let (count, sum, bucket) = (
        format!("{name}_count"),
        format!("{name}_sum"),
        format!("{name}_bucket"),
    );
    let s = scrape_until(m, secs(10), "the slow request's duration", |s| {
        s.value(&count, &[("route", "slow")]) >= 1.0
    })
    .await;
    assert_eq!(s.get(&count, &[("route", "slow")]), Some(1.0));
    assert!(s.value(&sum, &[("route", "slow")]) >= 0.4, "{}", s.text);
    assert_eq!(
        s.get(&bucket, &[("route", "slow"), ("le", "0.25")]),
        Some(0.0),
        "{}",
        s.text
    );
    assert_eq!(
        s.get(&bucket, &[("route", "slow"), ("le", "+Inf")]),
        Some(1.0),
        "{}",
        s.text
    );
    assert!(
        s.value(&bucket, &[("route", "all"), ("le", "0.25")]) >= 2.0,
        "the control: the fast requests are in the low buckets\n{}",
        s.text
    );

    // Upstream errors, by configured upstream name and kind.
    let c = client::http(false);
    assert_eq!(c.get(gw.url("/dead/x")).send().await.unwrap().status(), 502);
    assert_eq!(c.get(gw.url("/hung/x")).send().await.unwrap().status(), 504);
    let errors = "gateway_upstream_errors_total";
    let s = scrape_until(m, secs(10), "both upstream errors", |s| {
        s.value(errors, &[("upstream", "dead"), ("kind", "connect_refused")]) >= 1.0
            && s.value(errors, &[("upstream", "hung"), ("kind", "timeout")]) >= 1.0
    })
    .await;
    // Every configured upstream has each kind from the start, at 0: only these two moved.
    let moved: Vec<_> = s
        .series(errors, &[])
        .into_iter()
        .filter(|x| x.value != 0.0)
        .collect();
    assert_eq!(moved.len(), 2, "one series each, nothing else: {moved:?}");
    assert!(moved.iter().all(|x| x.value == 1.0), "{moved:?}");
    drop(c);

    // TLS handshakes: three completed ones count, a failed one does not.
    let (handshakes, failures) = (
        "gateway_tls_handshakes_total",
        "gateway_tls_handshake_failures_total",
    );
    let before = scrape(m).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(client::tls(gw.https, "localhost").await.0);
    }
    let want = before.value(handshakes, &[]) + 3.0;
    scrape_until(m, secs(10), "three handshakes", |s| {
        s.value(handshakes, &[]) >= want
    })
    .await;
    not_tls(gw.https).await;
    let failed = before.value(failures, &[]) + 1.0;
    let s = scrape_until(m, secs(10), "the failed handshake", |s| {
        s.value(failures, &[]) >= failed
    })
    .await;
    assert_eq!(s.value(handshakes, &[]), want, "only completed handshakes count");
    drop(open);
}

/// `gateway_open_connections`, `gateway_open_websockets` and `gateway_open_sse_streams` while
/// a WebSocket and two SSE streams (HTTP/1.1 and h2) are open, and back where they were once
/// they are closed.
///
/// To see it fail: drop the `dec()` calls in `logging` (crates/proxy/src/proxy.rs) or the
/// `OpenGuard` in `Edge::serve` (edge.rs); or count SSE by the request instead of the
/// response's Content-Type.
#[tokio::test]
async fn open_connection_websocket_and_sse_gauges_follow_the_streams() {
    let up = upstream::echo().await;
    let ws_up = upstream::ws_echo().await;
    let routes = format!(
        "[upstreams.ws]\naddress = \"{}\"\n[[routes]]\nprefix = \"/ws/\"\nupstream = \"ws\"\n",
        ws_up.addr
    );
    let gw = Gateway::start(&simple_config(up.addr, &routes)).await;
    let m = gw.metrics;
    let (conns, wss, sse) = (
        "gateway_open_connections",
        "gateway_open_websockets",
        "gateway_open_sse_streams",
    );
    let base = scrape(m).await;
    let conns0 = base.get(conns, &[]).expect("the connection gauge");
    assert_eq!(base.get(wss, &[]), Some(0.0));
    assert_eq!(base.get(sse, &[]), Some(0.0));

    let mut ws = p::wss(gw.https, "/ws/gauges").await;
    p::round_trip(&mut ws, "open").await.expect("the WebSocket works");
    scrape_until(m, secs(10), "one open WebSocket", |s| s.value(wss, &[]) == 1.0).await;
    let (h1, h2) = (client::http(false), client::http(true));
    let mut streams = Vec::new();
    for c in [&h1, &h2] {
        let mut r = c.get(gw.url("/sse-long")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        within(secs(5), "a first event", r.chunk())
            .await
            .unwrap()
            .expect("an event");
        streams.push(r);
    }
    let open = scrape_until(m, secs(10), "two open SSE streams", |s| s.value(sse, &[]) == 2.0).await;
    assert_eq!(open.value(wss, &[]), 1.0);
    assert_eq!(
        open.value(conns, &[]),
        conns0 + 3.0,
        "the WebSocket's, the HTTP/1.1 and the h2 connection\n{}",
        open.text
    );

    let _ = tokio::time::timeout(secs(5), ws.close(None)).await;
    drop(ws);
    scrape_until(m, secs(10), "the WebSocket gauge back to 0", |s| {
        s.value(wss, &[]) == 0.0
    })
    .await;
    drop(streams);
    scrape_until(m, secs(10), "the SSE gauge back to 0", |s| {
        s.value(sse, &[]) == 0.0
    })
    .await;
    drop((h1, h2));
    let s = scrape_until(m, secs(10), "the connection gauge back", |s| {
        s.value(conns, &[]) == conns0
    })
    .await;
    assert_eq!(s.value(wss, &[]), 0.0);
}

/// `gateway_acme_orders_total{certificate,result="failure"}` counts the failed orders against
/// a dead ACME directory (a closed port), `result="success"` stays 0, and
/// `gateway_certificate_placeholder` = 1 for the stand-in served meanwhile.
///
/// To see it fail: drop `self.observer.order(&c.name, false)` from the loop in
/// crates/tls/src/acme/mod.rs, or empty `MetricsObserver::order` (crates/gateway/src/acme.rs).
#[tokio::test]
async fn acme_failures_against_a_dead_directory_are_counted() {
    let up = upstream::echo().await;
    let roots = tempfile::tempdir().unwrap();
    let (root, _) = write_cert(roots.path(), "root", "localhost");
    let gw = Gateway::start(&simple_config(up.addr, &dead_acme(&root, "dead"))).await;
    let label = [("certificate", "dead")];
    let orders = "gateway_acme_orders_total";
    let failed = [("certificate", "dead"), ("result", "failure")];
    let s = scrape_until(gw.metrics, secs(20), "three failed ACME orders", |s| {
        s.value(orders, &failed) >= 3.0
    })
    .await;
    assert_eq!(
        s.get(orders, &[("certificate", "dead"), ("result", "success")]),
        Some(0.0),
        "{}",
        s.text
    );
    assert_eq!(
        s.get("gateway_certificate_placeholder", &label),
        Some(1.0),
        "{}",
        s.text
    );
    assert!(gw.stderr().contains("cannot reach the CA"), "{}", gw.stderr());
}

/// `gateway_config_last_reload_success_timestamp_seconds` holds the start time at first, does
/// not move on a refused reload (only `gateway_config_reload_failures_total` does), and moves
/// to the time of a successful reload.
///
/// To see it fail: set the timestamp at the top of `Reloader::reload`
/// (crates/gateway/src/reload.rs), for every attempt; or never after the start.
#[tokio::test]
async fn the_last_reload_timestamp_moves_on_a_successful_reload_only() {
    let up = upstream::echo().await;
    let good = simple_config(up.addr, "");
    let gw = Gateway::start(&good).await;
    let m = gw.metrics;
    let stamp = "gateway_config_last_reload_success_timestamp_seconds";
    let started = scrape(m)
        .await
        .get(stamp, &[])
        .expect("the timestamp is there from the start");
    let now = unix_now();
    assert!(started > now - 60.0 && started <= now, "{started} at {now}");
    // Whole seconds: wait for the next one, so a reload now gives a larger value.
    let wait = started + 1.05 - unix_now();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }

    gw.write_config(&good.replace("prefix = \"/\"", "prefixx = \"/\""));
    let refused = scrape_until(m, secs(10), "the refused reload", |s| {
        s.value("gateway_config_reload_failures_total", &[]) >= 1.0
    })
    .await;
    assert_eq!(
        refused.get(stamp, &[]),
        Some(started),
        "a refused reload leaves it"
    );

    gw.write_config(&good.replace("access_log = \"combined\"", "access_log = \"json\""));
    let moved = scrape_until(m, secs(10), "the timestamp to move", |s| {
        s.value(stamp, &[]) > started
    })
    .await;
    let t = moved.value(stamp, &[]);
    assert!(t <= unix_now() + 1.0, "{t} is in the future");
    assert!(
        moved.value("gateway_config_reloads_total", &[]) >= 2.0,
        "{}",
        moved.text
    );
}

/// The names of every `gateway_*` series in the dashboard's expressions.
fn dashboard_names() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/gateway-dashboard.json");
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
    let up = upstream::echo().await;
    let certs = tempfile::tempdir().unwrap();
    let (extra, cert) = labelled_extra(certs.path());
    let gw = Gateway::start(&simple_config(up.addr, &extra)).await;
    let c = client::http(false);
    assert_eq!(c.get(gw.url("/x")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(gw.url("/dead/x")).send().await.unwrap().status(), 502);
    not_tls(gw.https).await;
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
    let s = scrape_until(gw.metrics, secs(20), "every series of the dashboard", |s| {
        missing(s).is_empty()
    })
    .await;
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
