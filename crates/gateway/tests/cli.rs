//! `gateway check` and `gateway route` as a person runs them.

mod harness;

use harness::gateway::text;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn gateway(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.args(args)
        .env("DOMAIN", "example.com")
        .env_remove("UNSET_FOR_TEST");
    harness::run_cmd(&mut cmd, Duration::from_secs(60))
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
