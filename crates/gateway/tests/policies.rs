//! Edge policies (issue 20) against the real gateway and real upstreams, over HTTP/1.1 and
//! HTTP/2: allow/deny in file order (and behind a trusted proxy, where X-Forwarded-For from an
//! untrusted peer cannot spoof), a protected prefix with an open sub-route, the metrics
//! listener's `metrics_policy`, rate limits reached and recovered (by client and by header,
//! kept or reset by a reload), header rules with their variables, the maintenance switch
//! (file and `gateway maintenance on|off` while other routes serve, WebSocket upgrades
//! included, kept across a reload), `gateway route` listing policies, `gateway check`
//! refusing each bad shape at its line, and `gateway_requests_denied_total{route,reason}`.
//! (basic_auth, forward_auth and error pages have tests of their own.)

mod harness;

use harness::config::{preamble, route, upstream_at};
use harness::gateway::{binary, cli, text, Gateway};
use harness::scrape::scrape;
use harness::{client, load, poll_until, upstream, within};
use std::process::Command;
use std::time::{Duration, Instant};

const STEP: Duration = Duration::from_secs(10);
const CMD: Duration = Duration::from_secs(60);
const DENIED: &str = "gateway_requests_denied_total";

/// `gateway reload`, which must succeed (it returns once the file is applied).
async fn reload(gw: &Gateway) {
    let out = cli(gw, &["reload"]).await;
    assert!(out.status.success(), "gateway reload: {}", text(&out));
}

/// The listeners, the upstreams `echo` (`up`) and `ws` (when given), then `rest` (policies and
/// routes). No file watching: reloads are explicit.
fn config(rest: &str, up: std::net::SocketAddr, ws: Option<std::net::SocketAddr>) -> String {
    let head = format!(
        "\n{}{}",
        preamble("2s", "watch_config = false\n"),
        upstream_at("echo", "{UP}")
    );
    let ws_up = ws.map_or_else(String::new, |a| upstream_at("ws", a));
    format!("{head}{ws_up}{rest}").replace("{UP}", &up.to_string())
}

/// GET `path` with `headers`; the status, the response headers and the body.
async fn get(
    c: &reqwest::Client,
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    client::get(c, gw, path, None, headers).await
}

async fn status(c: &reqwest::Client, gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> u16 {
    get(c, gw, path, headers).await.0
}

/// The `Retry-After` seconds of a response.
fn retry_after(h: &reqwest::header::HeaderMap) -> u64 {
    h.get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in {h:?}"))
}

async fn denied(gw: &Gateway, route: &str, reason: &str) -> f64 {
    scrape(gw.metrics)
        .await
        .value(DENIED, &[("route", route), ("reason", reason)])
}

/// `policies = ["NAME"]`, a line of a route.
fn uses(policy: &str) -> String {
    format!("policies = [\"{policy}\"]\n")
}

/// The issue's allow/deny policies, a protected `/n8n/` with an open `/n8n/webhook/`, and a
/// catch-all.
fn access() -> String {
    let routes = [
        route("office", "/office/", "echo", &uses("office")),
        route("local", "/local/", "echo", &uses("local")),
        route("order", "/order/", "echo", &uses("order")),
        route("n8n", "/n8n/", "echo", &uses("office")),
        route("n8n-webhook", "/n8n/webhook/", "echo", ""),
        route("all", "/", "echo", ""),
    ];
    r#"
[policies.office]
allow = ["10.0.0.0/8", "2001:db8::/32"]
deny = ["all"]
[policies.local]
allow = ["127.0.0.1"]
deny = ["all"]
[policies.order]
deny = ["127.0.0.1"]
allow = ["all"]

"#
    .to_owned()
        + &routes.concat()
}

#[tokio::test]
async fn allow_and_deny_decide_in_file_order_on_h1_and_h2() {
    let up = upstream::echo().await;
    let gw = Gateway::start(&config(&access(), up.addr, None)).await;
    for h2 in [false, true] {
        let c = client::http(h2);
        let v = if h2 { "h2" } else { "h1" };
        // The issue's office policy: 127.0.0.1 is neither 10/8 nor 2001:db8::/32, then `all`.
        let (s, h, body) = get(&c, &gw, "/office/x", &[]).await;
        assert_eq!(s, 403, "{v}: {body}");
        assert!(
            h.contains_key("x-content-type-options"),
            "{v}: a refusal carries the security headers: {h:?}"
        );
        assert_eq!(
            status(&c, &gw, "/local/x", &[]).await,
            200,
            "{v}: allow 127.0.0.1"
        );
        // `deny = ["127.0.0.1"]` written before `allow = ["all"]` is checked first.
        assert_eq!(
            status(&c, &gw, "/order/x", &[]).await,
            403,
            "{v}: deny before allow"
        );
        // X-Forwarded-For from a peer that is not a trusted proxy changes nothing.
        assert_eq!(
            status(&c, &gw, "/office/x", &[("X-Forwarded-For", "10.1.2.3")]).await,
            403,
            "{v}: XFF from an untrusted peer cannot spoof the client"
        );
        // A protected prefix with an open sub-route (n8n's webhooks under a closed /n8n/).
        assert_eq!(
            status(&c, &gw, "/n8n/webhook/abc", &[]).await,
            200,
            "{v}: open webhook"
        );
        assert_eq!(status(&c, &gw, "/n8n/", &[]).await, 403, "{v}: closed editor");
        assert_eq!(status(&c, &gw, "/n8n/rest/workflows", &[]).await, 403, "{v}");
        assert_eq!(
            status(&c, &gw, "/open", &[]).await,
            200,
            "{v}: routes without policies"
        );
    }
    // The upstream never saw a refused request.
    let seen: Vec<String> = up.seen().into_iter().map(|s| s.uri).collect();
    assert!(
        seen.iter()
            .all(|u| !u.starts_with("/office/") && !u.starts_with("/order/") && !u.starts_with("/n8n/rest")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|u| u.starts_with("/n8n/webhook/")), "{seen:?}");
    assert_eq!(
        denied(&gw, "office", "ip").await,
        4.0,
        "two refusals per protocol"
    );
    assert_eq!(denied(&gw, "order", "ip").await, 2.0);
    assert_eq!(denied(&gw, "n8n", "ip").await, 4.0);
    assert_eq!(denied(&gw, "local", "ip").await, 0.0);
    // `gateway route` says which policies apply, from the running gateway and the file.
    let config = gw.config.display().to_string();
    for file in [false, true] {
        for (path, listed) in [("/n8n/x", true), ("/n8n/webhook/x", false)] {
            let url = format!("https://localhost:{}{path}", gw.https.port());
            let mut args = vec!["route", "--config", config.as_str()];
            if file {
                args.push("--file");
            }
            args.push(&url);
            let out = cli(&gw, &args).await;
            let shown = text(&out);
            assert!(out.status.success(), "{args:?}: {shown}");
            assert_eq!(shown.contains("policies: office"), listed, "{args:?}: {shown}");
        }
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_counts() {
    let up = upstream::echo().await;
    let rest = format!("[forwarding]\ntrusted_proxies = [\"127.0.0.1/32\"]\n{}", access());
    let gw = Gateway::start(&config(&rest, up.addr, None)).await;
    for h2 in [false, true] {
        let c = client::http(h2);
        let v = if h2 { "h2" } else { "h1" };
        assert_eq!(
            status(&c, &gw, "/office/x", &[("X-Forwarded-For", "10.1.2.3")]).await,
            200,
            "{v}: the office client behind the load balancer"
        );
        assert_eq!(
            status(&c, &gw, "/office/x", &[("X-Forwarded-For", "192.0.2.1")]).await,
            403,
            "{v}: a client outside the office"
        );
        // Without the header, the peer (the proxy itself) is the client.
        assert_eq!(status(&c, &gw, "/office/x", &[]).await, 403, "{v}");
        // The nearest untrusted address decides, not one a client wrote further left.
        assert_eq!(
            status(
                &c,
                &gw,
                "/office/x",
                &[("X-Forwarded-For", "10.1.2.3, 192.0.2.1")]
            )
            .await,
            403,
            "{v}: a spoofed left-most entry"
        );
    }
}

#[tokio::test]
async fn the_metrics_listener_obeys_metrics_policy() {
    let up = upstream::echo().await;
    let rest = |allow: &str| {
        format!(
            "[policies.prometheus]\nallow = [\"{allow}\"]\ndeny = [\"all\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"echo\"\n"
        )
    };
    let with_policy = |allow: &str| {
        config(&rest(allow), up.addr, None).replace(
            "metrics = \"{METRICS}\"\n",
            "metrics = \"{METRICS}\"\nmetrics_policy = \"prometheus\"\n",
        )
    };
    let gw = Gateway::start(&with_policy("10.0.0.0/8")).await;
    let c = client::plain();
    let metrics = format!("http://{}/metrics", gw.metrics);
    for _ in 0..2 {
        let r = within(STEP, "GET /metrics", c.get(&metrics).send())
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "127.0.0.1 is not allowed");
        let body = r.text().await.unwrap();
        assert!(
            body.len() < 64 && !body.contains("gateway_"),
            "a small text body, no metrics: {body}"
        );
    }
    // /healthz says `ok` to everyone (`gateway healthcheck` probes it from loopback).
    let r = client::send(c.get(format!("http://{}/healthz", gw.metrics))).await;
    assert_eq!(r.status(), 200);
    let out = cli(&gw, &["healthcheck"]).await;
    assert!(out.status.success(), "healthcheck: {}", text(&out));

    // A policy that allows 127.0.0.1, applied by a reload.
    gw.write_config(&with_policy("127.0.0.1"));
    reload(&gw).await;
    let r = within(STEP, "GET /metrics", c.get(&metrics).send())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s = harness::scrape::Scrape::parse(&r.text().await.unwrap());
    assert_eq!(
        s.value(DENIED, &[("route", "metrics"), ("reason", "ip")]),
        2.0,
        "{}",
        s.text
    );
}

/// A rate limit by client on n8n's login, one by API key on `/keyed/`, and a catch-all.
fn rates() -> String {
    RATES_LOGIN.to_owned()
        + &route("keyed", "/keyed/", "echo", &uses("apikey"))
        + &route("all", "/", "echo", "")
}

const RATES_LOGIN: &str = r#"
[policies.login]
rate_limit = { rate = "10/s", burst = 20, key = "client" }
[policies.apikey]
rate_limit = { rate = "1/m", burst = 2, key = "header:X-Api-Key" }

[[routes]]
name = "n8n-login"
exact = "/n8n/rest/login"
upstream = "echo"
policies = ["login"]
"#;

#[tokio::test]
async fn a_rate_limit_is_reached_and_recovered() {
    let up = upstream::echo().await;
    let gw = Gateway::start(&config(&rates(), up.addr, None)).await;
    let c = client::http(false);
    // Open the connections first (on a route without a limit), so the burst below is not
    // spread over 21 TLS handshakes.
    let warm = (0..21).map(|_| status(&c, &gw, "/warm", &[]));
    assert!(futures_util::future::join_all(warm)
        .await
        .iter()
        .all(|s| *s == 200));

    // rate 10/s, burst 20: 21 at once pass.
    let started = Instant::now();
    let burst = (0..21).map(|_| status(&c, &gw, "/n8n/rest/login", &[]));
    let statuses = futures_util::future::join_all(burst).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // The next ones get 429 with Retry-After (one request may pass per 100 ms elapsed).
    let mut passed = 0;
    let mut refused = None;
    for _ in 0..200 {
        let (s, h, _) = get(&c, &gw, "/n8n/rest/login", &[]).await;
        match s {
            200 => passed += 1,
            429 => {
                refused = Some(h);
                break;
            }
            other => panic!("unexpected {other}"),
        }
        let allowed = 1 + (started.elapsed().as_millis() / 100) as usize;
        assert!(
            passed <= allowed,
            "{passed} passed past the burst in {:?}",
            started.elapsed()
        );
    }
    let refused = refused.expect("a 429 after the burst");
    let wait = retry_after(&refused);
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    assert!(refused.contains_key("x-content-type-options"), "{refused:?}");
    let limited_at = up.seen().len();

    // After Retry-After, requests pass again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    poll_until(
        Duration::from_secs(5),
        "the limit to let requests through again",
        || {
            let (c, gw) = (c.clone(), &gw);
            async move { (status(&c, gw, "/n8n/rest/login", &[]).await == 200).then_some(()) }
        },
    )
    .await;
    assert!(up.seen().len() > limited_at);
    assert!(denied(&gw, "n8n-login", "rate").await >= 1.0);
    assert_eq!(denied(&gw, "all", "rate").await, 0.0);
}

#[tokio::test]
async fn a_header_keyed_limit_gives_each_key_its_bucket_on_h2() {
    let up = upstream::echo().await;
    let gw = Gateway::start(&config(&rates(), up.addr, None)).await;
    let c = client::http(true);
    // 1/m with burst 2: three requests per key, then 429.
    for key in ["alice-key", "bob-key"] {
        for n in 0..3 {
            let s = status(&c, &gw, "/keyed/x", &[("X-Api-Key", key)]).await;
            assert_eq!(s, 200, "{key} request {n}");
        }
        let (s, h, _) = get(&c, &gw, "/keyed/x", &[("X-Api-Key", key)]).await;
        assert_eq!(s, 429, "{key}: its bucket is empty");
        let wait = retry_after(&h);
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
    }
    // Requests without the header share a bucket of their own.
    for _ in 0..3 {
        assert_eq!(status(&c, &gw, "/keyed/x", &[]).await, 200);
    }
    assert_eq!(status(&c, &gw, "/keyed/x", &[]).await, 429);
    assert_eq!(denied(&gw, "keyed", "rate").await, 3.0);
}

#[tokio::test]
async fn a_reload_keeps_an_unchanged_limit_and_resets_a_changed_one() {
    let up = upstream::echo().await;
    let file = |rate: &str, version: &str| {
        let rest = format!(
            "[policies.slow]\nrate_limit = {{ rate = \"{rate}\", burst = 2 }}\n[[routes]]\nname = \"slow\"\nprefix = \"/slow-login/\"\nupstream = \"echo\"\npolicies = [\"slow\"]\n[[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"echo\"\nheaders = {{ \"X-Version\" = \"{version}\" }}\n"
        );
        config(&rest, up.addr, None)
    };
    let gw = Gateway::start(&file("1/m", "1")).await;
    let c = client::http(false);
    for _ in 0..3 {
        assert_eq!(status(&c, &gw, "/slow-login/x", &[]).await, 200);
    }
    assert_eq!(status(&c, &gw, "/slow-login/x", &[]).await, 429);

    // Another route changed, the policy did not: the bucket is kept.
    gw.write_config(&file("1/m", "2"));
    reload(&gw).await;
    let (_, h, _) = get(&c, &gw, "/x", &[]).await;
    assert_eq!(
        h.get("x-version").map(|v| v.to_str().unwrap()),
        Some("2"),
        "reloaded"
    );
    assert_eq!(
        status(&c, &gw, "/slow-login/x", &[]).await,
        429,
        "still limited right after a reload that kept the policy"
    );

    // A changed rate starts with full buckets.
    gw.write_config(&file("2/m", "3"));
    reload(&gw).await;
    assert_eq!(
        status(&c, &gw, "/slow-login/x", &[]).await,
        200,
        "a changed rate resets the bucket"
    );
    assert_eq!(denied(&gw, "slow", "rate").await, 2.0);
}

/// Header rules with every variable on a prefix route (prefix stripped), and a catch-all.
fn header_rules() -> String {
    HEADER_POLICIES.to_owned() + &route("all", "/", "echo", "")
}

const HEADER_POLICIES: &str = r#"
[policies.login]
request_headers = { set = { "X-Forwarded-Prefix" = "$prefix" }, remove = ["X-Debug"] }
response_headers = { set = { "Cache-Control" = "no-store" } }
[policies.vars]
request_headers = { set = { "X-Request-Id" = "id=$request_id", "X-Client" = "$remote_addr", "X-Host" = "$host", "X-Scheme" = "$scheme", "X-Price" = "5$ a $" } }
response_headers = { set = { "X-Request-Id" = "$request_id" }, remove = ["X-Upstream"] }

[[routes]]
name = "prefixed"
prefix = "/the/prefix/"
upstream = "echo"
strip_prefix = true
policies = ["login", "vars"]
"#;

#[tokio::test]
async fn header_rules_set_remove_and_substitute_on_h1_and_h2() {
    let up = upstream::echo().await;
    let gw = Gateway::start(&config(&header_rules(), up.addr, None)).await;
    for h2 in [false, true] {
        let v = if h2 { "h2" } else { "h1" };
        let c = client::http(h2);
        let mark = format!("mark-{v}");
        let (s, h, body) = get(
            &c,
            &gw,
            "/the/prefix/x",
            &[
                ("X-Debug", "1"),
                ("X-Mark", mark.as_str()),
                ("X-Forwarded-Prefix", "/spoofed/"),
            ],
        )
        .await;
        assert_eq!(s, 200, "{v}: {body}");
        let seen = up
            .seen()
            .into_iter()
            .find(|r| r.header("x-mark") == Some(mark.as_str()))
            .expect("the upstream saw the request");
        assert_eq!(seen.uri, "/x", "{v}");
        assert_eq!(
            seen.header("x-forwarded-prefix"),
            Some("/the/prefix/"),
            "{v}: {seen:?}"
        );
        assert_eq!(seen.header("x-debug"), None, "{v}: removed");
        assert_eq!(seen.header("x-client"), Some("127.0.0.1"), "{v}");
        assert_eq!(seen.header("x-host"), Some("localhost"), "{v}");
        assert_eq!(seen.header("x-scheme"), Some("https"), "{v}");
        assert_eq!(seen.header("x-price"), Some("5$ a $"), "{v}: a lone `$` is text");
        let sent_id = seen
            .header("x-request-id")
            .and_then(|i| i.strip_prefix("id="))
            .unwrap_or_else(|| panic!("{v}: {seen:?}"))
            .to_owned();
        assert!(
            sent_id.len() == 32 && sent_id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{v}: {sent_id}"
        );
        // The response: set, removed, and the same request id.
        assert_eq!(
            h.get("cache-control").map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{v}"
        );
        assert!(
            !h.contains_key("x-upstream"),
            "{v}: removed from the response: {h:?}"
        );
        assert_eq!(
            h.get("x-request-id").map(|v| v.to_str().unwrap()),
            Some(sent_id.as_str()),
            "{v}"
        );
        // Other routes are untouched.
        let (_, h, _) = get(&c, &gw, "/plain", &[("X-Debug", "1"), ("X-Mark", "plain")]).await;
        assert!(
            !h.contains_key("cache-control") && h.contains_key("x-upstream"),
            "{v}: {h:?}"
        );
        let plain = up
            .seen()
            .into_iter()
            .rfind(|r| r.header("x-mark") == Some("plain"))
            .unwrap();
        assert_eq!(plain.header("x-debug"), Some("1"), "{v}");
        assert_eq!(plain.header("x-forwarded-prefix"), None, "{v}");
    }
}

/// `/down/` (WebSocket) in maintenance from the file, `/api/` and `/ok/` serving.
fn maintenance() -> String {
    [
        "\n".to_owned(),
        route("down", "/down/", "ws", "websocket = true\nmaintenance = true\n"),
        route("api", "/api/", "echo", ""),
        route("ok", "/ok/", "echo", ""),
    ]
    .concat()
}

/// A WebSocket handshake on `path`; the status of the answer when it is not a 101.
async fn ws_refused(gw: &Gateway, path: &str) -> (u16, Option<String>) {
    let (tls, _) = client::tls(gw.https, "localhost").await;
    let url = format!("wss://localhost:{}{path}", gw.https.port());
    match within(
        STEP,
        "the WebSocket handshake",
        tokio_tungstenite::client_async(url, tls),
    )
    .await
    {
        Ok(_) => panic!("{path}: upgraded, expected a refusal"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ),
        Err(e) => panic!("{path}: {e}"),
    }
}

#[tokio::test]
async fn maintenance_from_the_file_and_at_run_time_while_other_routes_serve() {
    let up = upstream::echo().await;
    let ws = upstream::ws_echo().await;
    let gw = Gateway::start(&config(&maintenance(), up.addr, Some(ws.addr))).await;
    for h2 in [false, true] {
        let c = client::http(h2);
        let (s, h, _) = get(&c, &gw, "/down/x", &[]).await;
        assert_eq!(s, 503, "maintenance = true");
        assert!(retry_after(&h) >= 1);
        assert_eq!(status(&c, &gw, "/ok/x", &[]).await, 200);
        assert_eq!(status(&c, &gw, "/api/x", &[]).await, 200);
    }
    let (s, retry) = ws_refused(&gw, "/down/socket").await;
    assert_eq!(s, 503, "a WebSocket upgrade is refused too");
    assert!(retry.is_some(), "with Retry-After");
    assert_eq!(denied(&gw, "down", "maintenance").await, 3.0);

    // At run time, while requests flow on another route (h1 and h2 workers).
    let (tally, workers) = load::start(gw.url("/ok/load"), 4, 100_000);
    poll_until(Duration::from_secs(10), "the load to start", || {
        let t = tally.clone();
        async move { (t.ok() > 20).then_some(()) }
    })
    .await;
    let c = client::http(false);
    let out = cli(&gw, &["maintenance", "on", "api"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("maintenance on"), "{}", text(&out));
    let (s, h, _) = get(&c, &gw, "/api/x", &[]).await;
    assert_eq!(s, 503);
    assert!(retry_after(&h) >= 1);
    assert_eq!(status(&client::http(true), &gw, "/api/x", &[]).await, 503, "h2");

    // A reload keeps it on.
    reload(&gw).await;
    assert_eq!(status(&c, &gw, "/api/x", &[]).await, 503, "kept across a reload");
    // `gateway route` tells the switch from the running gateway.
    let config = gw.config.display().to_string();
    let out = cli(&gw, &["route", "--config", &config, "https://localhost/api/x"]).await;
    assert!(
        text(&out).contains("maintenance: on (switched at run time"),
        "{}",
        text(&out)
    );

    let out = cli(&gw, &["maintenance", "off", "api"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(status(&c, &gw, "/api/x", &[]).await, 200);

    // Switching off a route the file keeps in maintenance says so and fails.
    let out = cli(&gw, &["maintenance", "off", "down"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("maintenance = true"), "{}", text(&out));
    assert_eq!(status(&c, &gw, "/down/x", &[]).await, 503);

    // An unknown route: exit 1 and the list of routes.
    let out = cli(&gw, &["maintenance", "on", "nope"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown.contains("nope") && shown.contains("down") && shown.contains("api") && shown.contains("ok"),
        "{shown}"
    );

    tally.stop();
    for w in workers {
        within(Duration::from_secs(60), "a load worker to stop", w)
            .await
            .unwrap();
    }
    assert!(tally.ok() > 20);
    assert_eq!(
        tally.failed(),
        0,
        "the other route kept serving: {:?}",
        tally.errors.lock().unwrap()
    );
    assert!(denied(&gw, "api", "maintenance").await >= 3.0);
    assert_eq!(denied(&gw, "ok", "maintenance").await, 0.0);
}

/// `gateway check` refuses each bad shape of a policy at its line.
#[test]
fn check_refuses_each_bad_policy_at_its_line() {
    let up = "[upstreams.api]\naddress = \"api:3001\"\n";
    let route = "[[routes]]\nprefix = \"/\"\nupstream = \"api\"\n";
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "unknown policy",
            format!("{up}[policies.office]\nallow = [\"all\"]\n{route}policies = [\"ofice\"]\n"),
            ":8:",
            "route names policy `ofice`, which is not defined; did you mean `office`?",
        ),
        (
            "bad rate",
            format!("{up}[policies.login]\nrate_limit = {{ rate = \"10/x\" }}\n{route}"),
            ":4:",
            "rate `10/x` is written `N/s`, `N/m` or `N/h`",
        ),
        (
            "host bits",
            format!("{up}[policies.office]\nallow = [\"10.0.0.1/8\"]\n{route}"),
            ":4:",
            "`10.0.0.1/8` has host bits set: write the network `10.0.0.0/8`",
        ),
        (
            "MD5 htpasswd",
            format!("{up}[policies.admin]\nbasic_auth = {{ users = [\"bob:$apr1$abc$def\"] }}\n{route}"),
            ":4:",
            "MD5-crypt",
        ),
        (
            "control byte",
            format!(
                "{up}[policies.h]\nresponse_headers = {{ set = {{ \"X-Bad\" = \"a\\u0001b\" }} }}\n{route}"
            ),
            ":4:",
            "contains a control character",
        ),
        (
            "unknown variable",
            format!("{up}[policies.h]\nrequest_headers = {{ set = {{ \"X-P\" = \"$prefx\" }} }}\n{route}"),
            ":4:",
            "unknown variable `$prefx`",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (what, src, line, expected) in cases {
        let f = dir.path().join("proxy.toml");
        std::fs::write(&f, &src).unwrap();
        let mut cmd = Command::new(binary());
        cmd.args(["check", "--config", f.to_str().unwrap()]);
        let o = harness::run_cmd(&mut cmd, CMD);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        let at = format!("{}{line}", f.display());
        assert!(
            err.lines().any(|l| l.starts_with(&at) && l.contains(expected)),
            "{what}: expected `{at}...{expected}` in:\n{err}\n--- file ---\n{src}"
        );
    }
}

/// The lines of the shipped `proxy.toml`'s commented policy examples: `# ` then one of these.
const EXAMPLE_LINES: &[&str] = &[
    "[policies.",
    "basic_auth =",
    "forward_auth =",
    "allow =",
    "deny =",
    "rate_limit =",
    "request_headers =",
    "response_headers =",
    "metrics_policy =",
    "policies =",
    "maintenance =",
    "[[routes]]",
    "name = \"n8n-login\"",
    "name = \"grafana-login\"",
    "exact =",
    "upstream = \"n8n\"",
    "upstream = \"grafana\"",
    "rewrite =",
    "websocket = false",
];

/// The shipped `proxy.toml` with its policy examples uncommented is a valid file too, and
/// does what its comments say: the Node-RED editor behind basic auth, the logins limited,
/// the metrics listener allow-listed.
#[test]
fn the_shipped_policy_examples_are_valid_when_uncommented() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proxy.toml");
    let shipped_text = std::fs::read_to_string(shipped).unwrap();
    let mut uncommented = 0;
    let file: String = shipped_text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if EXAMPLE_LINES.iter().any(|k| rest.starts_with(k)) => {
                uncommented += 1;
                format!("{rest}\n")
            }
            _ => format!("{l}\n"),
        })
        .collect();
    assert!(uncommented >= 20, "{uncommented} example lines found:\n{file}");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("proxy.toml");
    std::fs::write(&f, &file).unwrap();
    // What `htpasswd -nbB alice secret` prints (the format is checked, not the password).
    std::fs::write(
        dir.path().join("htpasswd"),
        "alice:$2y$05$abcdefghijklmnopqrstuu5Z8yI0Tk4l3S8Q6rLhJm9pV6j6Y2a2C\n",
    )
    .unwrap();
    let gateway = |args: &[&str]| {
        let mut cmd = Command::new(binary());
        cmd.args(args).env("DOMAIN", "example.com");
        harness::run_cmd(&mut cmd, CMD)
    };
    let config = f.display().to_string();
    let o = gateway(&["check", "--config", config.as_str()]);
    assert!(o.status.success(), "{}\n--- file ---\n{file}", text(&o));
    assert!(
        text(&o).contains("n8n-login") && text(&o).contains("grafana-login"),
        "{}",
        text(&o)
    );
    for (url, want) in [
        (
            "https://x/n8n/rest/login",
            ["route:    n8n-login", "policies: login", "path:     /rest/login"],
        ),
        (
            "https://x/grafana/login",
            ["route:    grafana-login", "policies: login", "path:     /login"],
        ),
        (
            "https://x/nodered/flows",
            ["route:    nodered", "policies: admin", "path:     /flows"],
        ),
    ] {
        let o = gateway(&["route", "--file", "--config", config.as_str(), url]);
        let shown = text(&o);
        assert!(
            o.status.success() && want.iter().all(|w| shown.contains(w)),
            "{url}: {shown}"
        );
    }
    let o = gateway(&[
        "route",
        "--file",
        "--config",
        &config,
        "https://x/n8n/rest/workflows",
    ]);
    assert!(!text(&o).contains("policies:"), "{}", text(&o));
    assert!(
        file.contains("metrics_policy = \"prometheus\"\n"),
        "the metrics listener is allow-listed"
    );
}
