//! The CLI talks to the running gateway through its control socket: `reload` reports the
//! outcome, `healthcheck` asks the process (not the file), `upgrade` is started by the
//! running process with its own environment, `route` and `certs` give the running view, a
//! stale pid file is never signalled, SIGTERM exits once connections have drained, and the
//! CLI conventions (`GATEWAY_CONFIG`, `--version`, completions, man page).

mod harness;

use harness::config::{preamble, route, upstream_at};
use harness::gateway::{binary, cli, text, Gateway};
use harness::{client, poll_until, upstream};
use std::process::Command;
use std::time::{Duration, Instant};

const CMD: Duration = Duration::from_secs(60);

/// A route whose response header shows the process's `MARK` environment variable, and an
/// upstream whose address comes only from the environment (`UP_ADDR`).
fn env_config() -> String {
    format!(
        "\n{}{}{}",
        preamble("8s", "watch_config = false\n"),
        upstream_at("echo", "${UP_ADDR}"),
        route(
            "all",
            "/",
            "echo",
            "headers = { \"X-Mark\" = \"${MARK:-from-the-caller}\" }\n"
        ),
    )
}

#[tokio::test]
async fn reload_waits_for_the_outcome_and_fails_on_a_refused_file() {
    let up = upstream::echo().await;
    let addr = up.addr.to_string();
    let gw = Gateway::start_with_env(&env_config(), &[("UP_ADDR", &addr), ("MARK", "m")]).await;
    let good = std::fs::read_to_string(&gw.config).unwrap();

    let out = cli(&gw, &["reload"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("configuration reloaded: 1 route(s)"),
        "{}",
        text(&out)
    );

    // A broken file: exit 1 with every error at its line; the gateway keeps serving.
    std::fs::write(
        &gw.config,
        good.replace("prefix = \"/\"", "prefixx = \"/\"\nthreads = \"x\""),
    )
    .unwrap();
    let out = cli(&gw, &["reload"]).await;
    assert!(!out.status.success(), "a refused file fails: {}", text(&out));
    let shown = text(&out);
    let file = gw.config.display().to_string();
    assert!(
        shown.contains(&format!("{file}:")) && shown.contains("unknown key `prefixx`"),
        "{shown}"
    );
    assert!(shown.contains("keeps serving the previous one"), "{shown}");
    let c = client::http(false);
    assert_eq!(c.get(gw.url("/x")).send().await.unwrap().status(), 200);

    // The container healthcheck asks the process, which is healthy: the file is not read.
    let health = cli(&gw, &["healthcheck"]).await;
    assert!(
        health.status.success(),
        "healthy with a broken file on disk: {}",
        text(&health)
    );

    // A restart-only change is applied in part and named.
    std::fs::write(&gw.config, good.replace("threads = 2", "threads = 3")).unwrap();
    let out = cli(&gw, &["reload"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("warning: ") && text(&out).contains("server.threads"),
        "the warning names the setting: {}",
        text(&out)
    );
    // Until a restart, every reload says so (not only the one that saw the change: a file
    // watch may have applied the file before `gateway reload` ran).
    let out = cli(&gw, &["reload"]).await;
    assert!(
        text(&out).contains("server.threads"),
        "still waiting for a restart: {}",
        text(&out)
    );
}

#[tokio::test]
async fn a_stale_pid_file_is_never_signalled() {
    let up = upstream::echo().await;
    let addr = up.addr.to_string();
    let mut gw = Gateway::start_with_env(&env_config(), &[("UP_ADDR", &addr)]).await;
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
    let up = upstream::echo().await;
    let addr = up.addr.to_string();
    let mut gw =
        Gateway::start_with_env(&env_config(), &[("UP_ADDR", &addr), ("MARK", "set-at-start")]).await;
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

#[tokio::test]
async fn route_and_certs_give_the_running_view() {
    let up = upstream::echo().await;
    let addr = up.addr.to_string();
    let gw = Gateway::start_with_env(&env_config(), &[("UP_ADDR", &addr)]).await;
    // Without UP_ADDR the file alone cannot be read; the running gateway answers.
    let config = gw.config.display().to_string();
    let mut cmd = Command::new(binary());
    cmd.env_remove("UP_ADDR")
        .args(["route", "--config", &config, "--run-dir"])
        .arg(gw.run_dir())
        .arg("https://localhost/n8n/x");
    let out = harness::run_cmd_async(cmd, CMD).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("upstream: echo ({addr})")),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("running gateway's view"), "{}", text(&out));
    // `--file` reads the file, in the caller's environment: refused.
    let mut cmd = Command::new(binary());
    cmd.env_remove("UP_ADDR")
        .args(["route", "--file", "--config", &config, "--run-dir"])
        .arg(gw.run_dir())
        .arg("https://localhost/n8n/x");
    let out = harness::run_cmd_async(cmd, CMD).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("UP_ADDR"), "{}", text(&out));

    let mut cmd = Command::new(binary());
    cmd.env_remove("UP_ADDR")
        .args(["certs", "--config", &config, "--run-dir"])
        .arg(gw.run_dir());
    let out = harness::run_cmd_async(cmd, CMD).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("running gateway's view"), "{}", text(&out));
}

// Multi-threaded: the client task keeps reading while this thread waits for the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_once_the_last_connection_has_drained() {
    let up = upstream::echo().await;
    let addr = up.addr.to_string();
    // grace_period 8 s: an idle gateway must not wait it out.
    let mut gw = Gateway::start_with_env(&env_config(), &[("UP_ADDR", &addr)]).await;
    let started = Instant::now();
    assert!(gw.stop(Duration::from_secs(10)));
    let idle = started.elapsed();
    assert!(
        idle < Duration::from_secs(4),
        "an idle gateway exits at once after SIGTERM: {idle:?}"
    );

    // With a request in flight, it waits for that request, then exits.
    let mut gw = Gateway::start_with_env(&env_config(), &[("UP_ADDR", &addr)]).await;
    let c = client::http(false);
    let url = gw.url("/slow/2500");
    let slow = tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) });
    poll_until(
        Duration::from_secs(10),
        "the slow request to reach the upstream",
        || {
            let seen = up.seen().iter().any(|s| s.uri.ends_with("/slow/2500"));
            async move { seen.then_some(()) }
        },
    )
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

#[tokio::test]
async fn cli_conventions_env_defaults_version_completions_man() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("site.toml");
    std::fs::write(
        &file,
        "[upstreams.api]\naddress = \"127.0.0.1:9\"\n[[routes]]\nprefix = \"/\"\nupstream = \"api\"\n",
    )
    .unwrap();
    let run = |cmd: &mut Command| harness::process::run_cmd(cmd, CMD);

    let out = run(Command::new(binary()).env("GATEWAY_CONFIG", &file).arg("check"));
    assert!(
        out.status.success(),
        "GATEWAY_CONFIG replaces --config: {}",
        text(&out)
    );
    let out = run(Command::new(binary())
        .env("GATEWAY_CONFIG", dir.path().join("none.toml"))
        .arg("check"));
    assert!(
        !out.status.success() && text(&out).contains("none.toml"),
        "{}",
        text(&out)
    );

    let out = run(Command::new(binary()).arg("--version"));
    let version = text(&out);
    assert!(
        out.status.success() && version.contains(" (commit ") && version.contains(", built 20"),
        "{version}"
    );

    let out = run(Command::new(binary()).args(["completions", "bash"]));
    let script = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && script.contains("_gateway") && script.contains("reload"),
        "{script}"
    );
    let out = run(Command::new(binary()).args(["man"]));
    let man = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && man.contains(".TH gateway"), "{man}");
    assert!(man.contains("healthcheck") && man.contains("reload"), "{man}");
}

/// A SIGQUIT with nobody waiting for the sockets (a successor that died, an upgrade started
/// by hand and abandoned): the handover fails and the process keeps serving on the same
/// sockets (vendored pingora-core, PATCHED.md "failed handover keeps serving"; upstream
/// Pingora went on to shut down and dropped every listener).
#[tokio::test]
async fn a_failed_socket_handover_keeps_the_gateway_serving() {
    let up = upstream::echo().await;
    let addr = up.addr.to_string();
    let mut gw = Gateway::start_with_env(&env_config(), &[("UP_ADDR", &addr)]).await;
    gw.signal(nix::sys::signal::Signal::SIGQUIT);
    // Pingora tries the upgrade socket 5 times, a second apart, then gives up.
    poll_until(Duration::from_secs(30), "the failed handover in the log", || {
        let log = gw.stderr();
        async move {
            log.contains("the listening sockets stay with this process")
                .then_some(())
        }
    })
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
