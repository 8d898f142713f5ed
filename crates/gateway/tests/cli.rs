//! The CLI as a person runs it: `gateway check` on the shipped files and on each kind of
//! broken one (exit 1 and `file:line:col`), `gateway route` on the issue's examples, `route`
//! and `certs` giving the running gateway's view, and the CLI conventions
//! (`GATEWAY_CONFIG`, `--version`, completions, man page).

mod harness;

use harness::gateway::{binary, text, with_env};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const CMD: Duration = Duration::from_secs(60);

fn gateway(args: &[&str]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env("DOMAIN", "example.com")
        // deploy/examples/cloud.toml: its wildcard certificate through alidns.
        .env("ALIDNS_ACCESS_KEY_ID", "LTAI5tExampleKeyId")
        .env("ALIDNS_ACCESS_KEY_SECRET", "example-secret")
        .env_remove("UNSET_FOR_TEST");
    harness::run_cmd(&mut cmd, CMD)
}

fn shipped() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../proxy.toml")
        .display()
        .to_string()
}

#[test]
fn check_passes_on_shipped_and_examples() {
    let mut files = vec![shipped()];
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples");
    for e in std::fs::read_dir(ex).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            files.push(p.display().to_string());
        }
    }
    for f in files {
        let o = gateway(&["check", "--config", &f]);
        assert!(o.status.success(), "{f}: {}", text(&o));
        let out = text(&o);
        assert!(out.contains("ROUTE") && out.contains(": ok ("), "{out}");
    }
}

/// Each kind of broken file: exit status 1 and `file:line:col: error: reason`.
#[test]
fn check_reports_each_kind_of_broken_file() {
    let up = "[upstreams.api]\naddress = \"api:3001\"\n";
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown key", format!("{up}keepalve = 4\n"), ":3:1: error: unknown key `keepalve`; did you mean `keepalive`?"),
        ("missing upstream", format!("{up}[[routes]]\nprefix = \"/\"\nupstream = \"n8n\"\n"), ":5:12: error: route names upstream `n8n`, which is not defined"),
        ("duplicate route", format!("{up}[[routes]]\nprefix = \"/\"\nupstream = \"api\"\n[[routes]]\nprefix = \"/\"\nupstream = \"api\"\n"), ":7:10: error: this route has the same host and path"),
        ("bad address", "[listen]\nhttps = \"443\"\n".into(), ":2:9: error: `443` is not a listen address"),
        ("bad duration", format!("{up}read_timeout = \"1 fortnight\"\n"), ":3:16: error: `1 fortnight` is not a duration"),
        ("missing certificate", "[[tls.certificates]]\nname = \"m\"\ncert = \"/no/such/cert.pem\"\nkey = \"/no/such/key.pem\"\n".into(), ":3:8: error: certificate file `/no/such/cert.pem` does not exist"),
        ("unset env", "[upstreams.api]\naddress = \"${UNSET_FOR_TEST}\"\n".into(), ":2:11: error: environment variable `UNSET_FOR_TEST` is not set"),
        ("syntax", "[listen\n".into(), ":1:"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (what, src, expected) in cases {
        let f = dir.path().join("proxy.toml");
        std::fs::write(&f, src).unwrap();
        let o = gateway(&["check", "--config", f.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        let want = format!("{}{expected}", f.display());
        assert!(err.contains(&want), "{what}: expected `{want}` in:\n{err}");
    }
}

#[test]
fn route_answers_the_issue_examples() {
    let cfg = shipped();
    let cases = [
        ("https://x/n8n/rest/push", "route:    n8n", "path:     /rest/push"),
        ("https://x/health", "upstream: api", "path:     /api/health"),
        ("https://x/api/../n8n/x", "upstream: n8n", "path:     /x"),
    ];
    for (url, a, b) in cases {
        let o = gateway(&["route", "--config", &cfg, url]);
        let out = text(&o);
        assert!(
            o.status.success() && out.contains(a) && out.contains(b),
            "{url}: {out}"
        );
    }
    let o = gateway(&["route", "--config", &cfg, "https://x/../x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("400: rejected"), "{}", text(&o));
    let o = gateway(&["route", "--config", &cfg, "https://x/n8n"]);
    assert!(text(&o).contains("301 redirect to /n8n/"), "{}", text(&o));
}

#[test]
fn check_refuses_shared_listeners_control_bytes_in_hsts_and_zero_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[listen]\nhttps = \"127.0.0.1:28443\"\nhttp = \"127.0.0.1:28443\"\n",
            "must not share an address with the HTTPS listener",
        ),
        (
            "[security]\nhsts = \"max-age=1\\r\\nSet-Cookie: x=1\"\n",
            "hsts must not contain control characters",
        ),
        (
            "[limits]\nheader_read_timeout = \"0s\"\n",
            "header_read_timeout must be above zero",
        ),
    ];
    for (section, want) in cases {
        let file = dir.path().join("proxy.toml");
        std::fs::write(
            &file,
            format!("{section}[upstreams.u]\naddress = \"127.0.0.1:9\"\n[[routes]]\nprefix = \"/\"\nupstream = \"u\"\n"),
        )
        .unwrap();
        let out = harness::gateway::check(&file);
        let text_out = text(&out);
        assert_eq!(out.status.code(), Some(1), "{section}: {text_out}");
        assert!(text_out.contains(want), "{section}: {text_out}");
    }
}

#[tokio::test]
async fn route_and_certs_give_the_running_view() {
    let (up, gw) = with_env(None).await;
    let addr = up.addr.to_string();
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

/// `gateway import-nginx` on the two reference files: each result passes `gateway check`
/// (`--check`); nginx.conf translates completely (exit 0), nginx-cloud.conf leaves certbot's
/// certificate to the gateway's ACME client (exit 2, the line named as `file:line: not
/// translated: ...`); an unparsable file is exit 1 with its line.
#[test]
fn import_nginx_translates_the_reference_files_into_configurations_check_accepts() {
    let dir = tempfile::tempdir().unwrap();
    // Copies of ../shared/reference/ kept with the importer's tests (its reference.rs checks
    // they equal the originals wherever those are present).
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nginx-import/tests/data");
    for (file, code) in [("nginx.conf", 0), ("nginx-cloud.conf", 2)] {
        let src = reference.join(file);
        let out = dir.path().join(format!("{file}.toml"));
        let o = gateway(&[
            "import-nginx",
            src.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--check",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{file}:\n{err}");
        assert!(
            err.contains("gateway check: the imported configuration is valid"),
            "{err}"
        );
        let checked = gateway(&["check", "--config", out.to_str().unwrap()]);
        assert!(
            checked.status.success(),
            "{}",
            String::from_utf8_lossy(&checked.stderr)
        );
        if code == 2 {
            assert!(
                err.contains(&format!("{file}:13: not translated: ssl_certificate")),
                "{err}"
            );
        }
    }
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "http {\n  server {\n    listen 80;\n").unwrap();
    let o = gateway(&["import-nginx", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.conf:"), "{err}");
}
