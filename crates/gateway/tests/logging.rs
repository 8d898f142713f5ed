//! Logs that log tools read (issue 18, items 7, 12, 14-17): access lines for HTTP/1.1 and
//! HTTP/2 in combined, JSON and custom nginx formats (origin-form request line, `$remote_user`
//! from Basic credentials, `$time_local` after `TZ`), the status the client got (a body cut
//! short, a client gone: 499), `access_log = "off"` writing nothing, fail2ban's own filters
//! on them, the file target reopened on SIGUSR1, the `:80` listener logged and counted, the
//! final status of a refused `Expect: 100-continue` upload, `check` refusing unknown
//! variables and levels, a stdout nobody reads never stalling requests, and stderr for
//! journald, docker and log files (no colour codes off a terminal, JSON on request, no
//! Pingora start/stop chatter at info, one line per upstream failure, `<N>` priorities under
//! `JOURNAL_STREAM`).

mod harness;

use harness::client::{fetch, send, version, wait_version};
use harness::config::{preamble, route, upstream_at};
use harness::gateway::{binary, simple_config, with_echo};
use harness::wire::{find, read_head, within};
use harness::{client, line_with, scrape, secs, upstream, Gateway, ProcessGuard};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STEP: Duration = Duration::from_secs(10);

fn read_file(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `simple_config` with the `[logging]` section replaced by `logging` (its keys and tables).
fn config_with_logging(up: std::net::SocketAddr, logging: &str) -> String {
    simple_config(up, "").replace("[logging]\naccess_log = \"combined\"\n", logging)
}

#[tokio::test]
async fn access_lines_of_h1_and_h2_in_combined_and_json_carry_the_origin_form() {
    let (up, gw) = with_echo("").await;
    for h2 in [false, true] {
        let path = if h2 { "/two/x?q=2" } else { "/one/x?q=1" };
        let r = client::http(h2).get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version(h2));
    }
    gw.access_line("\"GET /one/x?q=1 HTTP/1.1\" 200 ").await;
    // nginx's $request for HTTP/2: origin form, not `GET https://localhost:port/... HTTP/2.0`.
    let h2 = gw.access_line("/two/x").await;
    assert!(h2.contains("\"GET /two/x?q=2 HTTP/2.0\" 200 "), "{h2}");

    gw.write_config(
        &simple_config(up.addr, "").replace("access_log = \"combined\"", "access_log = \"json\""),
    );
    let v = harness::poll_until(STEP, "a JSON access line after the reload", || async {
        let _ = client::http(true).get(gw.url("/three/x?q=3")).send().await.ok()?;
        let out = gw.stdout();
        let line = out
            .lines()
            .find(|l| l.starts_with('{') && l.contains("/three/x"))?
            .to_owned();
        Some(serde_json::from_str::<serde_json::Value>(&line).expect("one JSON object per line"))
    })
    .await;
    assert_eq!(v["uri"], "/three/x?q=3");
    assert_eq!(v["version"], "HTTP/2.0");
    assert_eq!(v["host"], "localhost");
    assert_eq!(v["status"], 200);
}

#[tokio::test]
async fn remote_user_is_the_basic_credentials_user() {
    let (_up, gw) = with_echo("").await;
    let alice = client::http(false).get(gw.url("/private"));
    let r = send(alice.basic_auth("alice", Some("secret"))).await;
    assert_eq!(r.status(), 200);
    let line = gw.access_line("/private").await;
    assert!(line.starts_with("127.0.0.1 - alice ["), "{line}");
    send(client::http(false).get(gw.url("/anonymous"))).await;
    let line = gw.access_line("/anonymous").await;
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
}

/// Seconds since midnight of `HH:MM:SS`.
fn seconds_of_day(hms: &str) -> i64 {
    let f: Vec<i64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    f[0] * 3600 + f[1] * 60 + f[2]
}

#[tokio::test]
async fn time_local_follows_tz() {
    let up = upstream::echo().await;
    for (tz, offset, hours) in [("Asia/Shanghai", "+0800", 8), ("UTC", "+0000", 0)] {
        let gw = Gateway::start_with_env(&simple_config(up.addr, ""), &[("TZ", tz)]).await;
        let _ = client::http(false).get(gw.url("/clock")).send().await.unwrap();
        let line = gw.access_line("/clock").await;
        // [07/Dec/2026:14:09:18 +0800]
        let stamp = line.split('[').nth(1).and_then(|s| s.split(']').next()).unwrap();
        assert!(stamp.ends_with(&format!(" {offset}")), "TZ={tz}: {line}");
        let hms = stamp.split(' ').next().unwrap().split_once(':').unwrap().1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let expected = (now + hours * 3600).rem_euclid(86_400);
        let diff = (seconds_of_day(hms) - expected).rem_euclid(86_400);
        assert!(
            diff.min(86_400 - diff) < 120,
            "TZ={tz}: {stamp} is not local time ({line})"
        );
    }
}

#[tokio::test]
async fn a_custom_format_writes_nginx_main_with_x_forwarded_for() {
    let up = upstream::echo().await;
    let logging = r#"[logging]
access_log = "main"
[logging.formats]
main = '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for"'
"#;
    let gw = Gateway::start(&config_with_logging(up.addr, logging)).await;
    let headers = [("X-Forwarded-For", "203.0.113.9"), ("User-Agent", "agent/1.0")];
    let r = fetch(&client::http(false), &gw, "/custom?a=b", &headers).await;
    assert_eq!(r.status(), 200);
    let line = gw.access_line("/custom").await;
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains("] \"GET /custom?a=b HTTP/1.1\" 200 "), "{line}");
    assert!(line.ends_with(" \"-\" \"agent/1.0\" \"203.0.113.9\""), "{line}");
    assert!(!line.contains("route="), "the custom format only: {line}");
}

/// `gateway check` on `text`: (exit code, stdout and stderr, the file's path).
fn check(text: &str) -> (Option<i32>, String, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    let out = harness::gateway::check(&path);
    (out.status.code(), harness::gateway::text(&out), path)
}

#[test]
fn check_refuses_unknown_variables_and_levels_with_file_and_line() {
    let up = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let logging = "[logging]\nlevel = \"inf0\"\naccess_log = \"main\"\n[logging.formats]\nmain = '$remote_addr $nope'\n";
    let text = config_with_logging(up, logging)
        .replace("{HTTPS}", "127.0.0.1:1443")
        .replace("{HTTP}", "127.0.0.1:1080")
        .replace("{METRICS}", "127.0.0.1:1909");
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let (code, out, path) = check(&text);
    assert_eq!(code, Some(1), "{out}");
    let file = path.display().to_string();
    let level = format!("{file}:{}:9: error: `inf0` is not a log level", line_of("inf0"));
    assert!(out.contains(&level), "expected `{level}` in:\n{out}");
    assert!(out.contains("did you mean `info`"), "{out}");
    // The column of `$nope` itself: `main = '` is 8 characters, `$remote_addr ` 13.
    let var = format!(
        "{file}:{}:22: error: [logging.formats] main: unknown variable `$nope`",
        line_of("$nope")
    );
    assert!(out.contains(&var), "expected `{var}` in:\n{out}");
}

#[tokio::test]
async fn the_access_log_file_is_reopened_on_sigusr1_after_a_rename() {
    let up = upstream::echo().await;
    let logging = "[logging]\naccess_log = \"combined\"\naccess_log_file = \"{DIR}/access.log\"\n";
    let gw = Gateway::start(&config_with_logging(up.addr, logging)).await;
    let log = gw.dir.path().join("access.log");
    let rotated = gw.dir.path().join("access.log.1");
    let c = client::http(false);
    assert_eq!(c.get(gw.url("/before")).send().await.unwrap().status(), 200);
    line_with(|| read_file(&log), "/before").await;
    // logrotate: rename, then signal; lines until the signal still go to the renamed file.
    std::fs::rename(&log, &rotated).unwrap();
    assert_eq!(c.get(gw.url("/between")).send().await.unwrap().status(), 200);
    line_with(|| read_file(&rotated), "/between").await;
    gw.signal(nix::sys::signal::Signal::SIGUSR1);
    harness::until(STEP, "the new access.log", || log.exists().then_some(())).await;
    assert_eq!(c.get(gw.url("/after")).send().await.unwrap().status(), 200);
    line_with(|| read_file(&log), "/after").await;
    assert!(!read_file(&rotated).contains("/after"));
    assert!(
        !gw.stdout().contains("/before"),
        "no access line on stdout with a file target"
    );
}

#[tokio::test]
async fn plain_http_requests_are_logged_and_counted() {
    let (_up, gw) = with_echo("").await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(STEP)
        .build()
        .unwrap();
    let plain = format!("http://{}", gw.http);
    let r = send(c.get(format!("{plain}/old/page?x=1"))).await;
    assert_eq!(r.status(), 301);
    let r = send(c.get(format!("{plain}/.well-known/acme-challenge/unknown-token"))).await;
    assert_eq!(r.status(), 404);
    let line = gw.access_line("/old/page").await;
    assert!(line.contains("\"GET /old/page?x=1 HTTP/1.1\" 301 "), "{line}");
    assert!(line.contains("route=redirect upstream=-"), "{line}");
    let line = gw.access_line("/.well-known/acme-challenge/").await;
    assert!(
        line.contains(" 404 ") && line.contains("route=acme-challenge"),
        "{line}"
    );
    let s = scrape::scrape(gw.metrics).await;
    let name = "gateway_requests_total";
    assert_eq!(
        s.value(
            name,
            &[("route", "redirect"), ("method", "GET"), ("status", "3xx")]
        ),
        1.0,
        "{}",
        s.text
    );
    assert_eq!(
        s.value(
            name,
            &[("route", "acme-challenge"), ("method", "GET"), ("status", "4xx")]
        ),
        1.0,
        "{}",
        s.text
    );
}

/// An upstream that answers `100 Continue` as soon as it has read a request head, then
/// reads whatever comes and never answers.
async fn continuing_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let (listener, addr) = upstream::listen().await;
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut s, _)) = listener.accept().await {
            conns.spawn(async move {
                let mut buf = Vec::new();
                if read_head(&mut s, &mut buf).await.is_some() {
                    let _ = s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                    let mut sink = [0u8; 8192];
                    while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                }
            });
        }
    });
    (addr, task)
}

/// Reads from `s` until `needle` arrived (or the connection ends); returns all read.
async fn read_until<S: tokio::io::AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>, needle: &[u8]) -> String {
    while find(buf, needle).is_none() {
        let mut chunk = [0u8; 4096];
        match within("reading the response", s.read(&mut chunk)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(buf).into_owned()
}

#[tokio::test]
async fn a_continue_upload_refused_for_size_is_logged_and_counted_as_413() {
    let (up, task) = continuing_upstream().await;
    let cfg = simple_config(up, "").replace("[server]", "[limits]\nmax_body = 1000\n[server]");
    let gw = Gateway::start(&cfg).await;
    // Declared too long: refused before the upstream, without a 100.
    let head = client::raw(
        gw.https,
        b"POST /declared HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 413 "), "{head}");
    // Chunked: the upstream's 100 reaches the client, the body then goes over the limit.
    let (mut tls, _) = client::tls(gw.https, "localhost").await;
    tls.write_all(b"POST /chunked HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let got = read_until(&mut tls, &mut buf, b"\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 100 "), "{got}");
    let mut body = format!("{:x}\r\n", 2000).into_bytes();
    body.extend(std::iter::repeat_n(b'x', 2000));
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    tls.write_all(&body).await.unwrap();
    let got = read_until(&mut tls, &mut buf, b"413 ").await;
    assert!(
        got.contains("HTTP/1.1 413 "),
        "the final status after the 100: {got}"
    );
    gw.access_line("\"POST /declared HTTP/1.1\" 413 ").await;
    gw.access_line("\"POST /chunked HTTP/1.1\" 413 ").await;
    let s = scrape::scrape(gw.metrics).await;
    let name = "gateway_requests_total";
    assert_eq!(
        s.value(name, &[("route", "all"), ("method", "POST"), ("status", "4xx")]),
        2.0,
        "{}",
        s.text
    );
    assert_eq!(s.value(name, &[("status", "1xx")]), 0.0, "{}", s.text);
    task.abort();
}

/// Lines of `stderr` that Pingora wrote at INFO (its target starts with `pingora`).
fn pingora_info_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains(" INFO pingora")).collect()
}

#[tokio::test]
async fn pingora_start_and_stop_chatter_is_not_shown_at_info() {
    let up = upstream::echo().await;
    let mut gw = Gateway::start_with_env(&simple_config(up.addr, ""), &[("RUST_LOG", "info")]).await;
    send(client::http(false).get(gw.url("/x"))).await;
    assert!(gw.stop(Duration::from_secs(15)), "the gateway stopped");
    let err = gw.stderr();
    assert!(
        err.contains("gateway starting"),
        "the gateway's own start line stays:\n{err}"
    );
    let chatter = pingora_info_lines(&err);
    assert!(
        chatter.is_empty(),
        "Pingora INFO lines at level info:\n{}",
        chatter.join("\n")
    );
}

#[tokio::test]
async fn an_upstream_failure_is_one_line() {
    let closed = upstream::closed();
    let gw = Gateway::start_with_env(&simple_config(closed, ""), &[("RUST_LOG", "info")]).await;
    let r = client::http(false).get(gw.url("/refused")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let line = gw.log_line(STEP, "request failed").await;
    assert!(line.contains("ConnectRefused"), "the kind of failure: {line}");
    assert!(
        line.contains(&format!("peer={closed}")),
        "the peer in Display form: {line}"
    );
    assert!(!line.contains("Some("), "no Rust debug formatting: {line}");
    // Pingora logs its line before the gateway's (`logging` runs last).
    let err = gw.stderr();
    let failures: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("request failed") || l.contains("Fail to proxy"))
        .collect();
    assert_eq!(
        failures.len(),
        1,
        "one line per failure:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn lines_carry_syslog_priorities_when_stderr_is_the_journal() {
    let (_up, mut gw) = with_echo("").await;
    let plain = gw.stderr();
    assert!(
        !plain.lines().any(|l| l.starts_with('<')),
        "no prefix without JOURNAL_STREAM:\n{plain}"
    );
    assert!(gw.stop(Duration::from_secs(15)));
    // Started again with JOURNAL_STREAM naming its stderr (the same appended file).
    let meta = std::fs::metadata(gw.dir.path().join("stderr.log")).unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let before = gw.stderr().len();
    gw.spawn(false, &[("JOURNAL_STREAM", stream.as_str())]);
    gw.wait_ready().await;
    let all = gw.stderr();
    let lines: Vec<&str> = all[before..].lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(
            ["<3>", "<4>", "<6>", "<7>"].iter().any(|p| l.starts_with(p)),
            "every line starts with its priority: {l}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>") && l.contains("gateway starting")),
        "{}",
        lines.join("\n")
    );
}

/// The `nginx-botsearch` filter (404 for probed paths such as `/wp-login.php`) matches the
/// combined lines the gateway writes for HTTP/1.1 and HTTP/2 requests alike.
#[tokio::test]
async fn fail2ban_nginx_filters_match_h1_and_h2_lines() {
    let fail2ban = harness::require_tool("fail2ban-regex", "fail2ban");
    let filter = Path::new("/etc/fail2ban/filter.d/nginx-botsearch.conf");
    assert!(filter.exists(), "{} (Debian package fail2ban)", filter.display());
    let up = upstream::echo().await;
    // Only /app/ is routed: a probe elsewhere gets the gateway's 404.
    let cfg = simple_config(up.addr, "").replace("prefix = \"/\"", "prefix = \"/app/\"");
    let gw = Gateway::start(&cfg).await;
    for h2 in [false, true] {
        let r = send(client::http(h2).get(gw.url("/wp-login.php"))).await;
        assert_eq!(r.status(), 404);
    }
    let lines = harness::until(STEP, "both probe lines", || {
        let out = gw.stdout();
        let lines: Vec<String> = out
            .lines()
            .filter(|l| l.contains("wp-login.php"))
            .map(str::to_owned)
            .collect();
        (lines.len() == 2).then_some(lines)
    })
    .await;
    assert!(lines.iter().any(|l| l.contains("HTTP/2.0\" 404 ")), "{lines:?}");
    let log = gw.dir.path().join("probes.log");
    std::fs::write(&log, format!("{}\n", lines.join("\n"))).unwrap();
    let out = harness::run_cmd(
        Command::new(fail2ban).arg(&log).arg(filter),
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Lines: 2 lines, 0 ignored, 2 matched, 0 missed"),
        "fail2ban-regex must match both lines:\n{}\n{text}",
        lines.join("\n")
    );
}

/// The access log shows what the client got, as nginx logs it: the status already sent when
/// the upstream cuts its body short (200, not 502), and 499 for a client that left before
/// any response.
#[tokio::test]
async fn access_log_status_is_what_the_client_got() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let (listener, addr) = upstream::listen().await;
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = counted.clone();
            conns.spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let short = buf[..n].starts_with(b"GET /short ");
                seen.fetch_add(1, Ordering::SeqCst);
                if short {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")
                        .await;
                } else {
                    // Never answers; waits for the gateway to close.
                    let _ = s.read(&mut buf).await;
                }
            });
        }
    });
    let gw = Gateway::start(&simple_config(addr, "")).await;
    let r = send(client::http(false).get(gw.url("/short"))).await;
    assert_eq!(r.status(), 200);
    if let Ok(body) = r.bytes().await {
        panic!("the body is cut short, yet {} bytes arrived whole", body.len());
    }
    let (mut tls, _) = client::tls(gw.https, "localhost").await;
    tls.write_all(b"GET /left HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    harness::until(STEP, "the request at the upstream", || {
        (seen.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    drop(tls);
    harness::until(STEP, "both access log lines", || {
        let log = gw.stdout();
        (log.contains("\"GET /short HTTP/1.1\" 200 ") && log.contains("\"GET /left HTTP/1.1\" 499 "))
            .then_some(())
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn access_log_in_json() {
    let up = upstream::echo().await;
    let cfg = simple_config(up.addr, "").replace("access_log = \"combined\"", "access_log = \"json\"");
    let gw = Gateway::start(&cfg).await;
    let agent = [("User-Agent", "test-agent")];
    let r = fetch(&client::http(false), &gw, "/logged?q=1", &agent).await;
    assert_eq!(r.status(), 200);
    let line = gw.access_line("/logged").await;
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(v["status"], 200);
    assert_eq!(v["route"], "all");
    assert_eq!(v["upstream"], "echo");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["user_agent"], "test-agent");
    assert!(v["bytes"].as_u64().unwrap() > 0 && v["duration_ms"].as_f64().is_some());
}

fn access_config(format: &str, version: u32, up: SocketAddr) -> String {
    format!(
        "{}[logging]\naccess_log = \"{format}\"\n{}{}",
        preamble("2s", ""),
        upstream_at("echo", up),
        route(
            "all",
            "/",
            "echo",
            &format!("headers = {{ \"X-Config\" = \"{version}\" }}\n")
        ),
    )
}

/// `access_log = "off"` writes no access line whatever the traffic (HTTP/1.1 and h2, GET and
/// POST); `combined` writes one per request. The gateway starts with `off`, serves, then a
/// reload switches it to `combined`: the lines go through one writer in order, so once the
/// first `combined` line is out, a line of the earlier traffic would be out too.
///
/// To see it fail: make `access::log` (crates/proxy/src/access.rs) format `Off` like
/// `Combined`; or take the format from the configuration at start instead of the request's
/// snapshot (no line after the reload).
#[tokio::test]
async fn access_log_off_writes_nothing_and_combined_writes_lines() {
    let up = upstream::echo().await;
    let gw = Gateway::start(&access_config("off", 1, up.addr)).await;
    for h2 in [false, true] {
        let c = client::http(h2);
        for i in 0..3 {
            let r = c.get(gw.url(&format!("/off-{i}?h2={h2}"))).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
        let r = send(c.post(gw.url("/off-post")).body(vec![b'x'; 1000])).await;
        assert_eq!(r.status(), 200);
    }
    gw.write_config(&access_config("combined", 2, up.addr));
    let c = client::http(false);
    // The reload to `combined`.
    wait_version(&c, &gw, "2", secs(10)).await;
    let agent = [("User-Agent", "promise-agent")];
    let r = fetch(&c, &gw, "/combined-marker", &agent).await;
    assert_eq!(r.status(), 200);
    let out = harness::until(secs(10), "the combined access line", || {
        let out = gw.stdout();
        out.contains("\"GET /combined-marker HTTP/1.1\" 200")
            .then_some(out)
    })
    .await;
    assert!(
        !out.contains("/off-"),
        "access lines written with access_log = \"off\":\n{out}"
    );
    let line = out.lines().find(|l| l.contains("/combined-marker")).unwrap();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains("\"promise-agent\"") && line.contains("route=all upstream=echo"),
        "{line}"
    );
}

#[tokio::test]
async fn logs_have_no_colour_codes_off_a_terminal_and_can_be_json() {
    let up = upstream::echo().await;
    let text = Gateway::start(&simple_config(up.addr, "")).await;
    let json = Gateway::start(
        &simple_config(up.addr, "[logging]\nformat = \"json\"\n")
            .replace("[logging]\naccess_log = \"combined\"\n", ""),
    )
    .await;
    for gw in [&text, &json] {
        // Traffic, and a broken reload, so there are warnings and errors to log.
        let _ = client::http(false).get(gw.url("/x")).send().await;
        std::fs::write(&gw.config, "[listen\n").unwrap();
        gw.signal(nix::sys::signal::Signal::SIGHUP);
    }
    for gw in [&text, &json] {
        gw.log_line(secs(10), "configuration refused").await;
    }
    for gw in [&text, &json] {
        assert!(
            !gw.stderr().contains('\x1b'),
            "escape codes in a log file:\n{}",
            gw.stderr()
        );
    }
    let lines: Vec<String> = json.stderr().lines().map(str::to_owned).collect();
    assert!(lines.len() >= 3, "{lines:?}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{l}");
    }
}

/// Access lines go through a bounded queue to a writer thread: a stdout pipe nobody reads
/// (a stuck `docker logs` consumer) fills up, and requests keep being answered.
#[tokio::test]
async fn a_stdout_nobody_reads_never_stalls_requests() {
    let up = upstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let (https, http, metrics) = (harness::free_addr(), harness::free_addr(), harness::free_addr());
    let toml = simple_config(up.addr, "")
        .replace("{HTTPS}", &https.to_string())
        .replace("{HTTP}", &http.to_string())
        .replace("{METRICS}", &metrics.to_string());
    std::fs::write(dir.path().join("proxy.toml"), toml).unwrap();
    let mut cmd = Command::new(binary());
    cmd.arg("run")
        .arg("--config")
        .arg(dir.path().join("proxy.toml"))
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .stdin(Stdio::null())
        // A pipe that is never read: it holds 64 KiB, about 400 access lines.
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let _gateway = ProcessGuard::spawn(&mut cmd, "the gateway");
    let addrs = [https, http, metrics];
    harness::poll_until(secs(30), "the gateway to listen", || harness::all_accept(&addrs)).await;
    let c = client::http(false);
    let url = format!(
        "https://localhost:{}/a-long-path-to-fill-the-log-{}",
        https.port(),
        "x".repeat(200)
    );
    let work = async {
        for i in 0..3000 {
            let r = c
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(r.status(), 200, "request {i}");
        }
    };
    tokio::time::timeout(Duration::from_secs(120), work)
        .await
        .expect("3000 requests answered while stdout is full");
}
