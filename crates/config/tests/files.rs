//! The shipped files validate, and each kind of broken file is reported at its line.

use gateway_config::{parse, ConfigErrors, HostMatch, PathMatch};
use std::path::Path;

fn env(name: &str) -> Option<String> {
    match name {
        "DOMAIN" => Some("example.com".into()),
        // deploy/examples/cloud.toml: its wildcard certificate through alidns.
        "ALIDNS_ACCESS_KEY_ID" => Some("LTAI5tExampleKeyId".into()),
        "ALIDNS_ACCESS_KEY_SECRET" => Some("example-secret".into()),
        _ => None,
    }
}

fn errors(src: &str) -> ConfigErrors {
    parse(src, Path::new("/etc/gateway/proxy.toml"), &env).expect_err("the file should be refused")
}

/// The configuration of a valid `src`.
fn valid(src: &str) -> gateway_config::Config {
    parse(src, Path::new("p.toml"), &env).unwrap_or_else(|e| panic!("{e}"))
}

fn one_error(src: &str) -> (usize, usize, String) {
    let e = errors(src);
    assert_eq!(e.0.len(), 1, "expected one error, got: {e}");
    (e.0[0].line, e.0[0].column, e.0[0].message.clone())
}

/// The line of each error, in order.
fn lines_of(e: &ConfigErrors) -> Vec<usize> {
    e.0.iter().map(|e| e.line).collect()
}

const UP: &str = "[upstreams.api]\naddress = \"api:3001\"\n";

#[test]
fn shipped_proxy_toml_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proxy.toml");
    let cfg = gateway_config::load_with_env(&root, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.routes.len(), 9);
    assert_eq!(cfg.limits.max_body, 500 << 20);
    let acme = cfg.acme.as_ref().unwrap();
    assert_eq!(acme.certificates[0].names, vec!["example.com".to_string()]);
    assert_eq!(acme.directory, gateway_config::LETS_ENCRYPT_PRODUCTION);
    assert!(acme.ca_root.is_none(), "an empty ACME_CA_ROOT means none");
    let n8n = cfg.routes.iter().find(|r| r.name == "n8n").unwrap();
    assert_eq!(n8n.path, PathMatch::Prefix("/n8n/".into()));
    assert_eq!(n8n.rewrite.as_deref(), Some("/"));
    assert_eq!(n8n.timeouts.read.as_secs(), 86400);
    assert_eq!(cfg.security_headers.len(), 3);
}

#[test]
fn deploy_examples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            gateway_config::load_with_env(&p, &env).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 1, "no example in {}", dir.display());
}

#[test]
fn unknown_keys_are_all_reported_with_a_suggestion() {
    let src = format!("[listen]\nhtps = \"0.0.0.0:443\"\n\n{UP}keepalve = 3\n");
    let e = errors(&src);
    assert_eq!(e.0.len(), 2, "{e}");
    assert_eq!((e.0[0].line, e.0[0].column), (2, 1));
    assert!(
        e.0[0].message.contains("did you mean `https`"),
        "{}",
        e.0[0].message
    );
    assert_eq!(e.0[1].line, 6);
    assert!(
        e.0[1].message.contains("did you mean `keepalive`"),
        "{}",
        e.0[1].message
    );
    let shown = e.to_string();
    assert!(
        shown.starts_with("/etc/gateway/proxy.toml:2:1: error: unknown key `htps`"),
        "{shown}"
    );
}

#[test]
fn missing_upstream_is_reported_at_the_route() {
    let src = format!("{UP}\n[[routes]]\nprefix = \"/\"\nupstream = \"apj\"\n");
    let (line, col, msg) = one_error(&src);
    assert_eq!((line, col), (6, 12));
    assert!(
        msg.contains("`apj`") && msg.contains("did you mean `api`"),
        "{msg}"
    );
}

#[test]
fn duplicate_routes_are_refused() {
    let src = format!("{UP}\n[[routes]]\nprefix = \"/a/\"\nupstream = \"api\"\n[[routes]]\nprefix = \"/a/\"\nupstream = \"api\"\n");
    let (line, _, msg) = one_error(&src);
    assert_eq!(line, 8);
    assert!(msg.contains("same host and path"), "{msg}");
}

#[test]
fn bad_addresses_and_durations() {
    let src = format!(
        "[listen]\nhttps = \"0.0.0.0:99999\"\n{UP}read_timeout = \"60\"\nconnect_timeout = \"soon\"\n"
    );
    let e = errors(&src);
    assert_eq!(lines_of(&e), vec![2, 5, 6], "{e}");
    assert!(e.0[0].message.contains("not a listen address"));
    assert!(e.0[1].message.contains("no unit"));
    let (_, _, msg) = one_error("[upstreams.x]\naddress = \"http://api:3001\"\n");
    assert!(msg.contains("without a scheme"), "{msg}");
}

#[test]
fn missing_certificate_file() {
    let src = "[[tls.certificates]]\nname = \"m\"\ncert = \"/nonexistent/fullchain.pem\"\nkey = \"/nonexistent/privkey.pem\"\n";
    let e = errors(src);
    assert_eq!(e.0.len(), 2, "{e}");
    assert_eq!(e.0[0].line, 3);
    assert!(e.0[0].message.contains("does not exist"));
}

#[test]
fn unset_environment_variable() {
    let src = "[upstreams.api]\naddress = \"${API_ADDR}\"\n";
    let (line, col, msg) = one_error(src);
    assert_eq!((line, col), (2, 11));
    assert!(msg.contains("`API_ADDR` is not set"), "{msg}");
}

#[test]
fn syntax_errors_have_a_line() {
    let (line, _, _) = one_error("[listen]\nhttps = \n");
    assert_eq!(line, 2);
}

#[test]
fn host_and_path_matches() {
    let src = format!("{UP}[[routes]]\nhost = \"*.Example.com\"\nexact = \"/health\"\nupstream = \"api\"\nrewrite = \"/api/health\"\n");
    let cfg = valid(&src);
    assert_eq!(cfg.routes[0].host, Some(HostMatch::Suffix(".example.com".into())));
    assert_eq!(cfg.routes[0].path, PathMatch::Exact("/health".into()));
    let (_, _, msg) = one_error(&format!(
        "{UP}[[routes]]\nprefix = \"n8n/\"\nupstream = \"api\"\n"
    ));
    assert!(msg.contains("must start with `/`"));
    let (_, _, msg) = one_error(&format!("{UP}[[routes]]\nupstream = \"api\"\n"));
    assert!(msg.contains("needs `prefix"));
}

#[test]
fn acme_timeouts_and_per_certificate_directory() {
    let src = format!(
        "{UP}[acme]\nrequest_timeout = \"2s\"\n[[acme.certificates]]\nname = \"a\"\nnames = [\"a.example.com\"]\ndirectory = \"https://ca.example.net/dir\"\n[[acme.certificates]]\nname = \"b\"\nnames = [\"b.example.com\"]\n"
    );
    let cfg = valid(&src);
    let acme = cfg.acme.unwrap();
    assert_eq!(acme.request_timeout, std::time::Duration::from_secs(2));
    assert_eq!(acme.connect_timeout, std::time::Duration::from_secs(10));
    assert_eq!(acme.order_timeout, std::time::Duration::from_secs(600));
    assert_eq!(
        acme.certificates[0].directory.as_deref(),
        Some("https://ca.example.net/dir")
    );
    assert_eq!(acme.certificates[1].directory, None);
    let (line, _, msg) = one_error(&format!("{UP}[acme]\norder_timeout = \"0s\"\n"));
    assert_eq!(line, 4);
    assert!(msg.contains("longer than 0"), "{msg}");
    let (_, _, msg) = one_error(&format!(
        "{UP}[acme]\n[[acme.certificates]]\nname = \"a\"\nnames = [\"a.example.com\"]\ndirectory = \"ca.example.net\"\n"
    ));
    assert!(msg.contains("not an ACME directory URL"), "{msg}");
}

#[test]
fn resolver_takes_ips_with_optional_ports() {
    let src = format!("[server]\nresolver = [\"127.0.0.11\", \"10.0.0.2:5353\", \"[fd00::1]:53\"]\n{UP}");
    let cfg = valid(&src);
    let want: Vec<std::net::SocketAddr> = ["127.0.0.11:53", "10.0.0.2:5353", "[fd00::1]:53"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(cfg.server.resolver, want);
    let cfg = valid(UP);
    assert!(cfg.server.resolver.is_empty(), "the system's resolver by default");
    let (line, _, msg) = one_error(&format!("[server]\nresolver = [\"dns.local\"]\n{UP}"));
    assert_eq!(line, 2);
    assert!(msg.contains("not a name server address"), "{msg}");
}

#[test]
fn every_problem_of_a_file_is_reported_in_one_pass() {
    // A type error, an unknown key, another type error and a semantic error: all four.
    let e = errors(&format!(
        "[server]\nthreads = \"four\"\n[limits]\nmax_bdy = \"1M\"\n[listen]\nhttps = \"nowhere\"\n{UP}keepalive = \"many\"\n"
    ));
    assert_eq!(lines_of(&e), vec![2, 4, 6, 9], "{e}");
    assert!(e.0[1].message.contains("did you mean `max_body`"), "{e}");
    // A syntax error does not hide a later unknown key.
    let e = errors("[listen]\nhttps = \n[server]\nthreds = 2\n");
    assert_eq!(lines_of(&e), vec![2, 4], "{e}");
}

#[test]
fn sizes_in_decimal_units_are_refused_and_zero_body_is_unlimited() {
    let (line, _, msg) = one_error("[limits]\nmax_body = \"500MB\"\n");
    assert_eq!(line, 2);
    assert!(msg.contains("ambiguous") && msg.contains("`500M`"), "{msg}");
    let cfg = valid(&format!("[limits]\nmax_body = \"0\"\n{UP}"));
    assert_eq!(
        cfg.limits.max_body,
        u64::MAX,
        "0 means no limit, as nginx's client_max_body_size 0"
    );
    let cfg = valid(&format!("[limits]\nmax_body = 0\n{UP}"));
    assert_eq!(cfg.limits.max_body, u64::MAX);
}

#[test]
fn public_https_port_defaults_to_the_https_listener() {
    let cfg = valid("[listen]\nhttps = \"127.0.0.1:8443\"\n");
    assert_eq!(cfg.listen.public_https_port, 8443);
    let cfg = valid("[listen]\nhttps = \"127.0.0.1:8443\"\npublic_https_port = 443\n");
    assert_eq!(cfg.listen.public_https_port, 443);
}

#[test]
fn header_values_with_control_bytes_are_refused() {
    for bad in ["a\\u0001b", "a\\u007fb", "a\\rb", "a\\u0000"] {
        let src = format!("[security.headers]\n\"X-Test\" = \"{bad}\"\n");
        let (line, _, msg) = one_error(&src);
        assert_eq!(line, 2, "{bad}");
        assert!(msg.contains("control character"), "{bad}: {msg}");
    }
    // A tab and obs-text are allowed (RFC 9110 §5.5).
    valid("[security.headers]\n\"X-Test\" = \"a\\tb é\"\n");
}

/// Every key the parser accepts, in every section, is documented in docs/configuration.md.
/// The keys come from the parser itself: an unknown key in each table is refused with the
/// list of the keys that table accepts ("expected one of: ..."), so nothing reads source text.
#[test]
fn every_key_the_parser_accepts_is_documented() {
    const BOGUS: &str = "zq_not_a_key";
    let tables = [
        ("", ""),
        ("listen", "[listen]"),
        ("server", "[server]"),
        ("tls", "[tls]"),
        ("tls.certificates", "[[tls.certificates]]"),
        ("acme", "[acme]"),
        ("acme.certificates", "[[acme.certificates]]"),
        ("limits", "[limits]"),
        ("compression", "[compression]"),
        ("security", "[security]"),
        ("forwarding", "[forwarding]"),
        ("logging", "[logging]"),
        ("upstreams.x", "[upstreams.x]"),
        ("routes", "[[routes]]"),
        ("policies.p", "[policies.p]"),
        (
            "policies.p.basic_auth",
            "[policies.p]\nbasic_auth = { realm = \"r\", zq_not_a_key = 1 }\n#",
        ),
        (
            "policies.p.forward_auth",
            "[policies.p]\nforward_auth = { url = \"http://a:1/\", zq_not_a_key = 1 }\n#",
        ),
        (
            "policies.p.rate_limit",
            "[policies.p]\nrate_limit = { rate = \"1/s\", zq_not_a_key = 1 }\n#",
        ),
        (
            "policies.p.request_headers",
            "[policies.p]\nrequest_headers = { zq_not_a_key = 1 }\n#",
        ),
        ("errors", "[errors]"),
    ];
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"))
            .unwrap();
    let mut checked = 0;
    for (name, header) in tables {
        let src = format!("{header}\n{BOGUS} = 1\n");
        let e = parse(&src, Path::new("p.toml"), &env).expect_err("an unknown key");
        let msg =
            e.0.iter()
                .map(|e| e.message.as_str())
                .find(|m| m.contains(BOGUS))
                .unwrap_or_else(|| panic!("[{name}]: no unknown-key error: {e}"));
        let keys = msg
            .split_once("expected one of: ")
            .unwrap_or_else(|| panic!("[{name}]: {msg}"))
            .1;
        for key in keys.split(", ").map(str::trim) {
            // Top-level keys are the sections, documented as `[listen]`, `[[routes]]`...
            let documented = if name.is_empty() {
                doc.contains(&format!("[{key}")) || doc.contains(&format!("[[{key}"))
            } else {
                // A key that is a table of its own is documented as `[[tls.certificates]]`.
                doc.contains(&format!("`{key}`")) || doc.contains(&format!("{name}.{key}]"))
            };
            assert!(
                documented,
                "docs/configuration.md does not document `{key}` (in [{name}])"
            );
            checked += 1;
        }
    }
    assert!(checked > 80, "only {checked} keys found");
}

#[test]
fn header_rules_and_copy_headers_may_not_set_framing_fields() {
    for (rule, what) in [
        (
            "request_headers = { set = { \"Content-Length\" = \"0\" } }",
            "frames the message",
        ),
        (
            "request_headers = { set = { \"Transfer-Encoding\" = \"chunked\" } }",
            "frames the message",
        ),
        (
            "response_headers = { remove = [\"Connection\"] }",
            "frames the message",
        ),
        (
            "forward_auth = { url = \"http://a:1/\", copy_headers = [\"Host\"] }",
            "cannot be copied",
        ),
        (
            "forward_auth = { url = \"http://a:1/\", copy_headers = [\"Content-Length\"] }",
            "cannot be copied",
        ),
    ] {
        let src = format!("[policies.p]\n{rule}\n");
        let e = errors(&src);
        assert!(
            e.0.iter().any(|e| e.line == 2 && e.message.contains(what)),
            "{rule}: {e}"
        );
    }
}

#[test]
fn listeners_take_one_address_or_a_list() {
    let c = valid("[listen]\nhttps = [\"0.0.0.0:443\", \"[::]:443\"]\nhttp = \"[::]:80\"\n");
    let s = |v: &[std::net::SocketAddr]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    assert_eq!(s(&c.listen.https), ["0.0.0.0:443", "[::]:443"]);
    assert_eq!(s(&c.listen.http), ["[::]:80"]);
    let c = valid("");
    assert_eq!(s(&c.listen.https), ["[::]:443"], "dual-stack by default");
    assert_eq!(s(&c.listen.http), ["[::]:80"]);
    assert!(valid("[listen]\nhttp = \"off\"\n").listen.http.is_empty());
    for (src, needle) in [
        ("[listen]\nhttps = \"off\"\n", "cannot be `off`"),
        ("[listen]\nhttp = [\"off\", \"[::]:80\"]\n", "stands alone"),
        ("[listen]\nhttps = []\n", "an empty list"),
        ("[listen]\nhttps = [\"[::]:443\", \"[::]:443\"]\n", "listed twice"),
        (
            "[listen]\nhttps = [\"[::]:443\", \"localhost:443\"]\n",
            "not a listen address",
        ),
        (
            "[listen]\nhttp = [\"127.0.0.1:8080\", \"[::]:443\"]\n",
            "must not share an address",
        ),
    ] {
        let e = errors(src);
        assert!(e.to_string().contains(needle), "{src}: {e}");
        assert_eq!(e.0[0].line, 2, "{src}: {e}");
    }
}
