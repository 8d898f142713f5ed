//! Logs that log tools read (issue 18, items 7, 12, 14-17): access lines for HTTP/1.1 and
//! HTTP/2 in combined, JSON and custom nginx formats (origin-form request line, `$remote_user`
//! from Basic credentials, `$time_local` after `TZ`), fail2ban's own filters on them, the
//! file target reopened on SIGUSR1, the `:80` listener logged and counted, the final status of
//! a refused `Expect: 100-continue` upload, `check` refusing unknown variables and levels, and
//! stderr for journald and docker (no Pingora start/stop chatter at info, one line per
//! upstream failure, `<N>` priorities under `JOURNAL_STREAM`).

mod harness;

use harness::gateway::{binary, simple_config};
use harness::wire::{find, read_head, within};
use harness::{client, scrape, upstream, Gateway};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STEP: Duration = Duration::from_secs(10);

/// The first line of `text` (stdout or a file) that contains `needle`, polled for.
async fn line_with(read: impl Fn() -> String, needle: &str) -> String {
    harness::poll_until(STEP, &format!("an access line with {needle}"), || {
        let text = read();
        let needle = needle.to_owned();
        async move { text.lines().find(|l| l.contains(&needle)).map(str::to_owned) }
    })
    .await
}

fn read_file(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `simple_config` with the `[logging]` section replaced by `logging` (its keys and tables).
fn config_with_logging(up: std::net::SocketAddr, logging: &str) -> String {
    simple_config(up, "").replace("[logging]\naccess_log = \"combined\"\n", logging)
}

#[tokio::test]
async fn access_lines_of_h1_and_h2_in_combined_and_json_carry_the_origin_form() {
    let up = upstream::echo().await;
    let gw = Gateway::start(&simple_config(up.addr, "")).await;
    for h2 in [false, true] {
        let path = if h2 { "/two/x?q=2" } else { "/one/x?q=1" };
        let r = client::http(h2).get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.version(),
            if h2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            }
        );
    }
    line_with(|| gw.stdout(), "\"GET /one/x?q=1 HTTP/1.1\" 200 ").await;
    // nginx's $request for HTTP/2: origin form, not `GET https://localhost:port/... HTTP/2.0`.
    let h2 = line_with(|| gw.stdout(), "/two/x").await;
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
    let up = upstream::echo().await;
    let gw = Gateway::start(&simple_config(up.addr, "")).await;
    let r = client::http(false)
        .get(gw.url("/private"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = line_with(|| gw.stdout(), "/private").await;
    assert!(line.starts_with("127.0.0.1 - alice ["), "{line}");
    let _ = client::http(false)
        .get(gw.url("/anonymous"))
        .send()
        .await
        .unwrap();
    let line = line_with(|| gw.stdout(), "/anonymous").await;
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
        let line = line_with(|| gw.stdout(), "/clock").await;
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
    let r = client::http(false)
        .get(gw.url("/custom?a=b"))
        .header("X-Forwarded-For", "203.0.113.9")
        .header("User-Agent", "agent/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = line_with(|| gw.stdout(), "/custom").await;
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains("] \"GET /custom?a=b HTTP/1.1\" 200 "), "{line}");
    assert!(line.ends_with(" \"-\" \"agent/1.0\" \"203.0.113.9\""), "{line}");
    assert!(!line.contains("route="), "the custom format only: {line}");
}

/// `gateway check` on `text`: (exit code, stdout and stderr).
fn check(text: &str) -> (Option<i32>, String, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    let out = harness::run_cmd(
        Command::new(binary()).arg("check").arg("--config").arg(&path),
        Duration::from_secs(30),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text, path)
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
    harness::poll_until(STEP, "the new access.log", || async {
        log.exists().then_some(())
    })
    .await;
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
    let up = upstream::echo().await;
    let gw = Gateway::start(&simple_config(up.addr, "")).await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(STEP)
        .build()
        .unwrap();
    let r = c
        .get(format!("http://{}/old/page?x=1", gw.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    let r = c
        .get(format!(
            "http://{}/.well-known/acme-challenge/unknown-token",
            gw.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let line = line_with(|| gw.stdout(), "/old/page").await;
    assert!(line.contains("\"GET /old/page?x=1 HTTP/1.1\" 301 "), "{line}");
    assert!(line.contains("route=redirect upstream=-"), "{line}");
    let line = line_with(|| gw.stdout(), "/.well-known/acme-challenge/").await;
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
async fn continuing_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
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
    line_with(|| gw.stdout(), "\"POST /declared HTTP/1.1\" 413 ").await;
    line_with(|| gw.stdout(), "\"POST /chunked HTTP/1.1\" 413 ").await;
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
    let _ = client::http(false).get(gw.url("/x")).send().await.unwrap();
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
    let line = harness::poll_until(STEP, "the gateway's failure line", || {
        let err = gw.stderr();
        async move {
            err.lines()
                .find(|l| l.contains("request failed"))
                .map(str::to_owned)
        }
    })
    .await;
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
    let up = upstream::echo().await;
    let mut gw = Gateway::start(&simple_config(up.addr, "")).await;
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
        let r = client::http(h2)
            .get(gw.url("/wp-login.php"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let lines = harness::poll_until(STEP, "both probe lines", || {
        let out = gw.stdout();
        async move {
            let lines: Vec<String> = out
                .lines()
                .filter(|l| l.contains("wp-login.php"))
                .map(str::to_owned)
                .collect();
            (lines.len() == 2).then_some(lines)
        }
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
