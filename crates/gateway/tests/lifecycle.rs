//! Stopping and upgrading: SIGTERM drains a request in flight and exits 0 within the grace
//! period, at once when idle; every stop (SIGINT, SIGTERM, SIGQUIT after an upgrade) ends in
//! time without flooding the log, again and again; `gateway upgrade` hands the sockets over
//! (with `reuseport` and without) under load, ten times in a row, refusing no connection and
//! failing no request; WebSockets and SSE streams opened before an upgrade are served to
//! the end by the old process; the successor keeps the running process's environment; a
//! failed socket handover keeps the gateway serving; a stale pid file is never signalled.

mod harness;

use harness::client::wait_version;
use harness::config::{from_env, numbered, preamble, route, upstream_at};
use harness::gateway::{binary, cli, simple_config, text, with_env};
use harness::process::{gone, wait_exit, wait_gone, with_arg, KillAllWithArg, KillOnDrop, KillPid};
use harness::promises as p;
use harness::{client, load, secs, until, upstream, within, Gateway};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// `server.grace_period` of these configurations.
const GRACE: Duration = Duration::from_secs(2);
/// Pingora's `CLOSE_TIMEOUT`: after handing its sockets over, the old process accepts for
/// this long before it starts draining (vendor/pingora-core/src/server/mod.rs).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Slack for a loaded machine (2 cores, tests in parallel) on top of the promised times.
const MARGIN: Duration = Duration::from_secs(2);
/// A stopped gateway's stderr stays below this (a flood wrote 318 MB in 8 s).
const LOG_LIMIT: u64 = 200 * 1024;

/// The deadline of a `gateway` subcommand.
const CMD: Duration = Duration::from_secs(60);
/// Load workers finish their request in flight after `stop`: at most the client's timeout.
const WORKERS: Duration = Duration::from_secs(90);

/// One catch-all route whose responses say which configuration served them (`X-Config`);
/// reloads only on SIGHUP, so a process keeps its version until told.
fn versioned(up: SocketAddr, version: usize) -> String {
    let mut text = simple_config(up, "")
        .replace("[server]", "[server]\nwatch_config = false")
        .replace("access_log = \"combined\"", "access_log = \"off\"");
    text.push_str(&format!("headers = {{ \"X-Config\" = \"{version}\" }}\n"));
    text
}

/// Starts a gateway, reloads it three times (SIGHUP, each waited for), sends `sig` and
/// checks that it exits within the grace period (+ [MARGIN]), cleanly, with a small log;
/// `iterations` times.
async fn stop_after_reloads(sig: Signal, iterations: usize) {
    let up = upstream::echo().await;
    for i in 0..iterations {
        let mut gw = Gateway::start(&versioned(up.addr, 0)).await;
        let c = client::http(i % 2 == 1);
        for version in 1..=3 {
            gw.write_config(&versioned(up.addr, version));
            gw.signal(Signal::SIGHUP);
            wait_version(&c, &gw, &version.to_string(), secs(10)).await;
        }
        // A kept-alive connection stays open into the stop.
        let r = c.get(gw.url("/before-stop")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let mut child = KillOnDrop(gw.take_child().expect("running"));
        let _ = kill(Pid::from_raw(child.0.id() as i32), sig);
        let limit = GRACE + MARGIN;
        let status = wait_exit(&mut child.0, limit).await;
        let log = gw.stderr_len();
        let status = status.unwrap_or_else(|| {
            panic!("iteration {i}: still running {limit:?} after {sig}; its stderr has {log} bytes")
        });
        assert!(status.success(), "iteration {i}: {sig} ended it with {status}");
        assert!(
            log < LOG_LIMIT,
            "iteration {i}: {log} bytes of stderr after {sig}"
        );
        let accept_errors = gw.stderr().matches("Accept() failed").count();
        assert!(
            accept_errors < 10,
            "iteration {i}: {accept_errors} accept errors logged"
        );
    }
}

#[tokio::test]
async fn sigint_after_reloads_stops_at_once_ten_times() {
    stop_after_reloads(Signal::SIGINT, 10).await;
}

#[tokio::test]
async fn sigterm_after_reloads_stops_within_the_grace_period_ten_times() {
    stop_after_reloads(Signal::SIGTERM, 10).await;
}

fn read_pid(gw: &Gateway) -> Option<i32> {
    std::fs::read_to_string(gw.run_dir().join("gateway.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `gateway upgrade` for `gw`'s run directory, with a deadline; its output on failure.
async fn upgrade(gw: &Gateway) -> Result<String, String> {
    // A deadline, and a process group of its own killed on timeout (the test fails then).
    let out = harness::run_cmd_async(gw.upgrade_command(), Duration::from_secs(90)).await;
    let text = text(&out);
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("`gateway upgrade` failed ({}): {text}", out.status))
    }
}

/// Ten upgrades in a row, each started as soon as the previous new process serves, while
/// HTTP/1.1 and h2 clients send requests on kept-alive connections and on a new connection
/// each: no connection refused, no request failed; each old process exits within
/// CLOSE_TIMEOUT + grace period (+ margin) of its SIGQUIT.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_upgrades_in_a_row_under_load_refuse_nothing() {
    let up = upstream::echo().await;
    let mut gw = Gateway::start(&versioned(up.addr, 0)).await;
    let run_dir = gw.run_dir().display().to_string();
    // Dropped after the guards below: whatever still runs with this run directory.
    let _backstop = KillAllWithArg(run_dir.clone());
    let first = KillOnDrop(gw.take_child().expect("running"));
    let mut newer: Vec<KillPid> = Vec::new();
    // (pid, when the upgrade that sent it SIGQUIT returned: a second or so after the signal)
    let mut draining: Vec<(i32, Instant)> = Vec::new();
    let exit_budget = CLOSE_TIMEOUT + GRACE + MARGIN;

    let (kept, kept_workers) = load::start_with(gw.url("/kept"), 2, 1_000_000, false);
    let (fresh, fresh_workers) = load::start_with(gw.url("/fresh"), 2, 1_000_000, true);
    until(secs(20), "load to flow", || {
        (kept.ok().min(fresh.ok()) > 20).then_some(())
    })
    .await;

    let probe = client::fresh(false);
    let mut current = first.0.id() as i32;
    for version in 1..=10 {
        gw.write_config(&versioned(up.addr, version));
        let (kept_before, fresh_before) = (kept.ok(), fresh.ok());
        if let Err(e) = upgrade(&gw).await {
            panic!("upgrade {version}: {e}");
        }
        let signalled_by = Instant::now();
        let new = read_pid(&gw).expect("a pid file after the upgrade");
        assert_ne!(
            new, current,
            "upgrade {version}: the pid file names a new process"
        );
        newer.push(KillPid(new));
        draining.push((current, signalled_by));
        current = new;

        // Upgrade `version`: the new process serves.
        wait_version(&probe, &gw, &version.to_string(), secs(20)).await;
        let what = format!("upgrade {version}: load to go on");
        until(secs(20), &what, || {
            (kept.ok() > kept_before + 10 && fresh.ok() > fresh_before + 10).then_some(())
        })
        .await;
        for (pid, since) in &draining {
            if since.elapsed() > exit_budget {
                assert!(
                    gone(*pid),
                    "process {pid} still runs {exit_budget:?} after its SIGQUIT"
                );
            }
        }
    }

    for (pid, since) in &draining {
        let left = exit_budget.saturating_sub(since.elapsed());
        assert!(
            wait_gone(*pid, left + Duration::from_millis(100)).await,
            "process {pid} still runs {exit_budget:?} after its SIGQUIT"
        );
    }
    kept.stop();
    fresh.stop();
    for w in kept_workers.into_iter().chain(fresh_workers) {
        tokio::time::timeout(Duration::from_secs(90), w)
            .await
            .expect("a load worker to stop")
            .unwrap();
    }
    for (name, tally) in [("kept-alive", &kept), ("new connection", &fresh)] {
        let errors = tally.errors.lock().unwrap();
        assert_eq!(tally.refused(), 0, "{name}: refused connections: {errors:?}");
        assert_eq!(tally.failed(), 0, "{name}: failed requests: {errors:?}");
        assert!(tally.ok() > 200, "{name}: the load ran ({} requests)", tally.ok());
    }
    let r = client::http(true).get(gw.url("/after")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(read_pid(&gw), Some(current));
    assert_eq!(with_arg(&run_dir), vec![current], "only the last gateway runs");
    let log = gw.stderr_len();
    assert!(log < 11 * LOG_LIMIT, "{log} bytes of stderr for 11 processes");
    drop(first);
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
    let toml = numbered(up.addr, ws_up.addr, 1)
        .replace("threads = 2", &format!("threads = 2\nreuseport = {reuseport}"));
    let mut gw = Gateway::start(&toml).await;
    let sockets = if reuseport { 2 } else { 1 };
    // Each thread's socket is bound as its service starts: the first may already accept.
    let port = gw.https.port();
    let what = format!("{sockets} HTTPS sockets");
    until(secs(10), &what, || {
        (listening_sockets(port) == sockets).then_some(())
    })
    .await;
    let (tally, workers) = load::start(gw.url("/during-upgrade"), 4, 100_000);
    until(secs(10), "load to flow", || (tally.ok() > 50).then_some(())).await;
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
    until(secs(30), "the old process to exit", || {
        old.try_wait().ok().flatten().map(|_| ())
    })
    .await;
    let before = tally.ok();
    let what = "requests served by the new process";
    until(secs(20), what, || (tally.ok() > before + 50).then_some(())).await;
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

/// SIGTERM: a request in flight (its upstream answers 1.5 s after it arrives) is answered in
/// full, and the process exits 0 within `grace_period` (4 s; Pingora sleeps the grace period
/// less 1 s, then gives its runtimes 1 s).
///
/// To see it fail: in `server_conf` (crates/proxy/src/server.rs) set `grace_period_seconds:
/// Some(0)` (the 1 s runtime shutdown cuts the request), or handle SIGTERM as a quick
/// shutdown; with `graceful_shutdown_timeout_seconds: Some(5)` the exit comes too late.
#[tokio::test]
async fn sigterm_drains_a_request_in_flight_and_exits_0_within_the_grace_period() {
    let slow = p::paced("slow").await;
    let cfg = simple_config(slow.addr, "").replace("grace_period = \"2s\"", "grace_period = \"4s\"");
    let mut gw = Gateway::start(&cfg).await;
    let url = gw.url("/delay/1500/in-flight");
    let request = tokio::spawn(async move {
        let r = client::http(false).get(url).send().await?;
        let status = r.status();
        let body = r.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    });
    until(secs(10), "the request to reach the upstream", || {
        (slow.arrived() == 1).then_some(())
    })
    .await;
    let signalled = Instant::now();
    gw.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, body) = within(secs(10), "the answer to the request in flight", request)
        .await
        .expect("the request task")
        .expect("the request in flight is answered, not cut");
    assert_eq!(status, 200);
    assert_eq!(body, "slow:delayed");
    let child = gw.child.as_mut().expect("running");
    let exit = harness::process::wait_exit(child, secs(15)).await;
    let took = signalled.elapsed();
    let exit = exit.unwrap_or_else(|| panic!("still running 15 s after SIGTERM\n{}", gw.stderr()));
    assert!(
        exit.success(),
        "exit status after SIGTERM: {exit:?}\n{}",
        gw.stderr()
    );
    assert!(
        took <= Duration::from_millis(5000),
        "exited {took:?} after SIGTERM; grace_period is 4 s"
    );
}

fn upgradable(ws: SocketAddr, pages: SocketAddr) -> String {
    format!(
        "{}[logging]\naccess_log = \"off\"\n{}{}{}{}",
        preamble("6s", ""),
        upstream_at("ws", ws),
        upstream_at("pages", pages),
        route("", "/ws/", "ws", ""),
        route("pages", "/", "pages", ""),
    )
}

/// A WebSocket and two SSE streams (HTTP/1.1 and h2) opened before `gateway upgrade` stay with
/// the old process, which serves them to the end: the WebSocket keeps answering past
/// Pingora's 5 s socket-handover pause, into the old process's grace period (6 s), until the
/// old process exits; the SSE streams (30 events, 250 ms apart) get their last event after
/// the old process began its shutdown. The old process exits 0; the new one serves.
///
/// To see it fail: make the old process leave at once after the handover, e.g.
/// `grace_period_seconds: Some(0)` and `graceful_shutdown_timeout_seconds: Some(0)` in
/// `server_conf` (crates/proxy/src/server.rs): the SSE streams are cut before their last
/// event and the WebSocket dies about 5 s after the upgrade.
#[tokio::test]
async fn websocket_and_sse_opened_before_an_upgrade_are_served_to_the_end() {
    let ws_up = upstream::ws_echo().await;
    let pages = p::paced("pages").await;
    let mut gw = Gateway::start(&upgradable(ws_up.addr, pages.addr)).await;
    let old_pid = gw.pid();

    let mut ws = p::wss(gw.https, "/ws/through-the-upgrade").await;
    p::round_trip(&mut ws, "before")
        .await
        .expect("the WebSocket works");
    // A round trip every 200 ms until one fails: when each succeeded.
    let pinger = tokio::spawn(async move {
        let started = Instant::now();
        let mut answered = Vec::new();
        while started.elapsed() < secs(25) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let text = format!("ping {}", answered.len());
            if p::round_trip(&mut ws, &text).await.is_err() {
                break;
            }
            answered.push(Instant::now());
        }
        answered
    });
    let mut streams = Vec::new();
    for h2 in [false, true] {
        let mut r = client::http(h2).get(gw.url("/sse/30/250")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let first = within(secs(5), "the first event", r.chunk()).await.unwrap();
        let first = first.expect("a first event");
        streams.push(tokio::spawn(async move {
            let mut text = String::from_utf8_lossy(&first).into_owned();
            let end = tokio::time::timeout(secs(25), async {
                loop {
                    match r.chunk().await {
                        Ok(Some(b)) => text.push_str(&String::from_utf8_lossy(&b)),
                        Ok(None) => return Ok(()),
                        Err(e) => return Err(e.to_string()),
                    }
                }
            })
            .await;
            (h2, text, end)
        }));
    }

    let out = harness::run_cmd_async(gw.upgrade_command(), secs(60)).await;
    let upgraded = Instant::now();
    // From here the new process is guarded by `gw` (killed with it), whatever happened.
    let new_pid = gw.adopt_successor();
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(new_pid, old_pid);
    let r = client::send(client::http(false).get(gw.url("/after-the-upgrade"))).await;
    assert_eq!(r.status(), 200);

    for stream in streams {
        let (h2, text, end) = within(secs(30), "an SSE stream", stream)
            .await
            .expect("the SSE task");
        match end {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the SSE stream (h2: {h2}) was cut: {e}\n{text}"),
            Err(_) => panic!("the SSE stream (h2: {h2}) did not end within 25 s\n{text}"),
        }
        assert_eq!(
            text.matches("\n\n").count(),
            30,
            "every event (h2: {h2}):\n{text}"
        );
        assert!(
            text.contains("data: pages event 29\n"),
            "the last event (h2: {h2}):\n{text}"
        );
    }

    // Pingora's 5 s handover pause, then the 6 s grace period, then 1 s for the runtimes.
    let old = gw.child.as_mut().expect("the old process");
    let exit = harness::process::wait_exit(old, secs(30)).await;
    let exit = exit.unwrap_or_else(|| panic!("the old process still runs 30 s after the upgrade"));
    assert!(exit.success(), "the old process exited with {exit:?}");
    let answered = within(secs(30), "the WebSocket to end", pinger)
        .await
        .expect("the WebSocket task");
    let last = answered.last().copied().expect("round trips after the upgrade");
    let lived = last.saturating_duration_since(upgraded);
    assert!(
        lived >= secs(6),
        "the WebSocket stopped answering {lived:?} after the upgrade; the old process drains for 5 s + 6 s"
    );

    // The new process serves new connections, WebSockets included.
    let r = client::send(client::http(true).get(gw.url("/after-the-old-one"))).await;
    assert_eq!(r.status(), 200);
    let mut ws = p::wss(gw.https, "/ws/new").await;
    p::round_trip(&mut ws, "new")
        .await
        .expect("a new WebSocket works");
}

#[tokio::test]
async fn a_stale_pid_file_is_never_signalled() {
    let (_up, mut gw) = with_env(None).await;
    assert!(gw.stop(Duration::from_secs(10)), "the gateway stops");
    // An unrelated process now has a pid the pid file names (pid reuse, simulated).
    let mut victim = harness::process::ProcessGuard::spawn(Command::new("sleep").arg("60"), "sleep");
    std::fs::create_dir_all(gw.run_dir()).unwrap();
    std::fs::write(gw.run_dir().join("gateway.pid"), format!("{}\n", victim.pid())).unwrap();
    for args in [&["reload"][..], &["upgrade"][..], &["healthcheck"][..]] {
        let out = cli(&gw, args).await;
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("no gateway is running"),
            "{args:?}: {}",
            text(&out)
        );
    }
    assert!(
        victim.wait_exit(Duration::from_millis(300)).is_none(),
        "the process the stale pid file names was not signalled"
    );
}

#[tokio::test]
async fn upgrade_keeps_the_running_processs_environment() {
    let (_up, mut gw) = with_env(Some("set-at-start")).await;
    let c = client::http(false);
    let mark = |r: &reqwest::Response| {
        r.headers()
            .get("x-mark")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let r = c.get(gw.url("/before")).send().await.unwrap();
    assert_eq!(mark(&r).as_deref(), Some("set-at-start"));
    let old = gw.pid();

    // The caller's shell has neither MARK nor UP_ADDR: the successor must not take its
    // environment (it would refuse the file, or serve the default).
    let mut cmd = Command::new(binary());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("upgrade")
        .arg("--run-dir")
        .arg(gw.run_dir());
    let out = harness::run_cmd_async(cmd, CMD).await;
    let new = gw.adopt_successor();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("process {new} now serves")),
        "{}",
        text(&out)
    );
    assert_ne!(new, old);
    let environ = std::fs::read(format!("/proc/{new}/environ")).unwrap();
    assert!(
        environ.split(|b| *b == 0).any(|kv| kv == b"MARK=set-at-start"),
        "the successor has the running process's environment"
    );
    let r = c.get(gw.url("/after")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mark(&r).as_deref(), Some("set-at-start"));
    // `status` answers from the successor now.
    let out = cli(&gw, &["healthcheck"]).await;
    assert!(out.status.success(), "{}", text(&out));
}

// Multi-threaded: the client task keeps reading while this thread waits for the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_once_the_last_connection_has_drained() {
    let up = upstream::echo().await;
    let addr = up.addr.to_string();
    // grace_period 8 s: an idle gateway must not wait it out.
    let mut gw = Gateway::start_with_env(&from_env(), &[("UP_ADDR", &addr)]).await;
    let started = Instant::now();
    assert!(gw.stop(Duration::from_secs(10)));
    let idle = started.elapsed();
    assert!(
        idle < Duration::from_secs(4),
        "an idle gateway exits at once after SIGTERM: {idle:?}"
    );

    // With a request in flight, it waits for that request, then exits.
    let mut gw = Gateway::start_with_env(&from_env(), &[("UP_ADDR", &addr)]).await;
    let c = client::http(false);
    let url = gw.url("/slow/2500");
    let slow = tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) });
    until(secs(10), "the slow request to reach the upstream", || {
        up.seen()
            .iter()
            .any(|s| s.uri.ends_with("/slow/2500"))
            .then_some(())
    })
    .await;
    let signalled = Instant::now();
    let mut process = gw.take_process().expect("running");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(process.pid()),
        nix::sys::signal::Signal::SIGTERM,
    );
    assert!(
        process.wait_exit(Duration::from_secs(10)).is_some(),
        "exits within the grace period"
    );
    let took = signalled.elapsed();
    assert_eq!(
        slow.await.unwrap().expect("the in-flight request is answered"),
        200
    );
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "waited for the request, not for the whole 8 s grace period: {took:?}"
    );
}

/// A SIGQUIT with nobody waiting for the sockets (a successor that died, an upgrade started
/// by hand and abandoned): the handover fails and the process keeps serving on the same
/// sockets (vendored pingora-core, PATCHED.md "failed handover keeps serving"; upstream
/// Pingora went on to shut down and dropped every listener).
#[tokio::test]
async fn a_failed_socket_handover_keeps_the_gateway_serving() {
    let (_up, mut gw) = with_env(None).await;
    gw.signal(nix::sys::signal::Signal::SIGQUIT);
    // Pingora tries the upgrade socket 5 times, a second apart, then gives up.
    gw.log_line(secs(30), "the listening sockets stay with this process")
        .await;
    let c = client::http(false);
    let r = c.get(gw.url("/after-a-failed-handover")).send().await.unwrap();
    assert_eq!(r.status(), 200, "still serving");
    let process = gw.child.as_mut().expect("running");
    assert!(process.try_wait().unwrap().is_none(), "the process did not exit");
    // A reload still works: the control socket and the signal handlers are there.
    let out = cli(&gw, &["reload"]).await;
    assert!(out.status.success(), "{}", text(&out));
}
