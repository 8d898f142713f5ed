//! `[upstreams.NAME]` groups: the issue's syntax as written, and every refusal at its line.

mod common;

use common::{ok, one};
use gateway_config::{Balance, HashKey};
use std::time::Duration;

const ROUTE: &str = "[[routes]]\nprefix = \"/\"\nupstream = \"api\"\n";

#[test]
fn the_issue_syntax_is_accepted_as_written() {
    let c = ok(r#"
[upstreams.api]
servers = ["api-1:3001", "api-2:3001", { address = "api-3:3001", weight = 2 }, { address = "spare:3001", backup = true }]
balance = "round_robin"
max_fails = 1
fail_timeout = "10s"
health_check = { path = "/health", interval = "5s", timeout = "2s", fails = 2, passes = 2 }

[upstreams.openwebui]
address = "open-webui:8080"          # every replica of the compose service
balance = "hash"
hash_key = "cookie:token"            # or client | header:NAME | uri

[[routes]]
prefix = "/"
upstream = "api"
"#);
    let api = c.upstream("api").unwrap();
    let servers: Vec<(String, u32, bool)> = api
        .servers
        .iter()
        .map(|s| (s.authority(), s.weight, s.backup))
        .collect();
    assert_eq!(
        servers,
        vec![
            ("api-1:3001".into(), 1, false),
            ("api-2:3001".into(), 1, false),
            ("api-3:3001".into(), 2, false),
            ("spare:3001".into(), 1, true),
        ]
    );
    assert_eq!(api.balance, Balance::RoundRobin);
    assert_eq!((api.max_fails, api.fail_timeout), (1, Duration::from_secs(10)));
    let hc = api.health_check.as_ref().unwrap();
    assert_eq!(hc.path, "/health");
    assert_eq!(
        (hc.interval, hc.timeout),
        (Duration::from_secs(5), Duration::from_secs(2))
    );
    assert_eq!((hc.fails, hc.passes), (2, 2));
    assert!(
        hc.expects(200) && hc.expects(399) && !hc.expects(400),
        "default expect 200-399"
    );
    let webui = c.upstream("openwebui").unwrap();
    assert_eq!(webui.balance, Balance::Hash(HashKey::Cookie("token".into())));
    assert_eq!(webui.servers.len(), 1);
}

#[test]
fn balancing_and_next_upstream_spellings() {
    for (value, want) in [
        ("\"least_conn\"", Balance::LeastConn),
        ("\"random\"", Balance::Random),
        ("\"hash\"\nhash_key = \"client\"", Balance::Hash(HashKey::Client)),
        ("\"hash\"\nhash_key = \"uri\"", Balance::Hash(HashKey::Uri)),
        (
            "\"hash\"\nhash_key = \"header:X-User\"",
            Balance::Hash(HashKey::Header("x-user".into())),
        ),
    ] {
        let c = ok(&format!(
            "[upstreams.api]\nservers = [\"a:1\", \"b:1\"]\nbalance = {value}\n{ROUTE}"
        ));
        assert_eq!(c.upstream("api").unwrap().balance, want);
    }
    let c = ok(&format!("[upstreams.api]\nservers = [\"a:1\", \"b:1\"]\nnext_upstream = [\"error\", \"http_502\", \"http_503\"]\nnext_upstream_tries = 2\nnext_upstream_timeout = \"3s\"\n{ROUTE}"));
    let u = c.upstream("api").unwrap();
    assert!(u.next_upstream.error && !u.next_upstream.timeout);
    assert_eq!(u.next_upstream.statuses, vec![502, 503]);
    assert_eq!(
        (u.next_upstream_tries, u.next_upstream_timeout),
        (Some(2), Duration::from_secs(3))
    );
    let off = ok(&format!(
        "[upstreams.api]\naddress = \"a:1\"\nnext_upstream = [\"off\"]\n{ROUTE}"
    ));
    let n = &off.upstream("api").unwrap().next_upstream;
    assert!(!n.error && !n.timeout && n.statuses.is_empty());
}

#[test]
fn each_mistake_is_refused_at_its_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("[upstreams.api]\nservers = [\"a:1\"]\nbalance = \"fastest\"\n", 3, "unknown balance `fastest`"),
        ("[upstreams.api]\nservers = [\"a:1\"]\nbalance = \"hash\"\nhash_key = \"session\"\n", 4, "hash_key `session`"),
        ("[upstreams.api]\nservers = [\"a:1\"]\nbalance = \"hash\"\nhash_key = \"cookie:\"\n", 4, "must be a token"),
        ("[upstreams.api]\nservers = [\"a:1\"]\nbalance = \"hash\"\n", 3, "needs hash_key"),
        ("[upstreams.api]\nservers = [\"a:1\"]\nhash_key = \"uri\"\n", 3, "only with balance = \"hash\""),
        (
            "[upstreams.api]\nbalance = \"hash\"\nhash_key = \"uri\"\nservers = [\"a:1\", { address = \"b:1\", backup = true }]\n",
            4,
            "`backup` servers cannot be used with balance = \"hash\"",
        ),
        ("[upstreams.api]\nservers = []\n", 2, "`servers` is empty"),
        ("[upstreams.api]\nmax_fails = 1\n", 1, "has no server"),
        ("[upstreams.api]\naddress = \"a:1\"\nservers = [\"b:1\"]\n", 3, "both `address` and `servers`"),
        ("[upstreams.api]\nservers = [\"a:1\",\n  \"A:1\"]\n", 3, "lists server `a:1` twice"),
        ("[upstreams.api]\nservers = [{ address = \"a:1\", weight = 0 }]\n", 2, "weight must be between 1 and 1000"),
        ("[upstreams.api]\nservers = [{ address = \"a:1\", wieght = 2 }]\n", 2, "a server as"),
        ("[upstreams.api]\nservers = [{ address = \"a:1\", backup = true }]\n", 2, "only backup servers"),
        ("[upstreams.api]\nservers = [\"a\"]\n", 2, "has no port"),
        ("[upstreams.api]\naddress = \"a:1\"\nhealth_check = { path = \"health\" }\n", 3, "must start with `/`"),
        ("[upstreams.api]\naddress = \"a:1\"\nhealth_check = { expect = \"2xx\" }\n", 3, "expect `2xx`"),
        ("[upstreams.api]\naddress = \"a:1\"\nhealth_check = { interval = \"1s\", timeout = \"5s\" }\n", 3, "not be longer than its interval"),
        ("[upstreams.api]\naddress = \"a:1\"\nhealth_check = { fails = 0 }\n", 3, "fails must be between 1 and 100"),
        ("[upstreams.api]\naddress = \"a:1\"\nhealth_check = { paht = \"/\" }\n", 3, "paht"),
        ("[upstreams.api]\naddress = \"a:1\"\nnext_upstream = [\"error\", \"http_500\"]\n", 3, "next_upstream `http_500`"),
        ("[upstreams.api]\naddress = \"a:1\"\nnext_upstream_tries = 0\n", 3, "next_upstream_tries must be between 1 and 16"),
        ("[upstreams.api]\naddress = \"a:1\"\nfail_timeout = \"0s\"\n", 3, "fail_timeout must be above zero"),
    ];
    for (src, line, what) in cases {
        let (at, msg) = one(&format!("{src}{ROUTE}"));
        assert!(msg.contains(what), "{src:?}: {msg}");
        assert_eq!(at, *line, "{src:?}: {msg}");
    }
}
