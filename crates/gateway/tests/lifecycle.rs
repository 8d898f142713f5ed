//! Stopping and upgrading, again and again: every stop (SIGINT, SIGTERM, SIGQUIT after an
//! upgrade) ends in time without flooding the log, and upgrades back to back under load
//! refuse no connection and fail no request.

mod harness;

use harness::gateway::{simple_config, text};
use harness::process::{gone, wait_exit, wait_gone, with_arg, KillAllWithArg, KillOnDrop, KillPid};
use harness::{client, load, poll_until, upstream, Gateway};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::SocketAddr;
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

/// One catch-all route whose responses say which configuration served them (`X-Config`);
/// reloads only on SIGHUP, so a process keeps its version until told.
fn versioned(up: SocketAddr, version: usize) -> String {
    let mut text = simple_config(up, "")
        .replace("[server]", "[server]\nwatch_config = false")
        .replace("access_log = \"combined\"", "access_log = \"off\"");
    text.push_str(&format!("headers = {{ \"X-Config\" = \"{version}\" }}\n"));
    text
}

/// The `X-Config` of a response to a new request from `c`.
async fn served_version(c: &reqwest::Client, gw: &Gateway) -> Option<String> {
    let r = c.get(gw.url("/probe")).send().await.ok()?;
    Some(r.headers().get("x-config")?.to_str().ok()?.to_owned())
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
            let want = version.to_string();
            poll_until(Duration::from_secs(10), "the reload", || {
                let (c, gw, want) = (c.clone(), &gw, want.clone());
                async move { (served_version(&c, gw).await? == want).then_some(()) }
            })
            .await;
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
    poll_until(Duration::from_secs(20), "load to flow", || {
        let n = kept.ok().min(fresh.ok());
        async move { (n > 20).then_some(()) }
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

        let want = version.to_string();
        poll_until(
            Duration::from_secs(20),
            &format!("upgrade {version}: the new process to serve"),
            || {
                let (probe, gw, want) = (probe.clone(), &gw, want.clone());
                async move { (served_version(&probe, gw).await? == want).then_some(()) }
            },
        )
        .await;
        poll_until(
            Duration::from_secs(20),
            &format!("upgrade {version}: load to go on"),
            || {
                let moved = kept.ok() > kept_before + 10 && fresh.ok() > fresh_before + 10;
                async move { moved.then_some(()) }
            },
        )
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
