//! No input makes the importer panic (the cargo-fuzz target `fuzz/fuzz_targets/nginx_import.rs`
//! does the same, longer, with libFuzzer): arbitrary text, and texts assembled from nginx's
//! own tokens (braces, semicolons, both quotes, escapes, comments, variables, the directives
//! the translation reads, includes of missing files). Each output that comes back is loaded
//! by `gateway_config::parse`, which must not panic either.

use proptest::prelude::*;
use std::path::Path;

const TOKENS: &[&str] = &[
    "{",
    "}",
    ";",
    "\"",
    "'",
    "\\",
    "#",
    "$host",
    "${x}",
    " ",
    "\n",
    "http",
    "server",
    "location",
    "listen",
    "443",
    "ssl",
    "http2",
    "[::]:80",
    "server_name",
    "*.example.com",
    "_",
    "proxy_pass",
    "http://up/",
    "http://up",
    "upstream",
    "up",
    "server",
    "weight=2",
    "backup",
    "=",
    "^~",
    "~",
    "/api/",
    "/",
    "return",
    "301",
    "https://$host$request_uri",
    "include",
    "missing/*.conf",
    "proxy_set_header",
    "Upgrade",
    "$http_upgrade",
    "Connection",
    "\"upgrade\"",
    "add_header",
    "always",
    "client_max_body_size",
    "10M",
    "gzip",
    "on",
    "off",
    "auth_basic",
    "allow",
    "deny",
    "all",
    "limit_req_zone",
    "zone=z:10m",
    "rate=5r/s",
    "limit_req",
    "if",
    "($a)",
    "map",
    "ssl_certificate",
    "/etc/letsencrypt/live/x/fullchain.pem",
    "error_page",
    "502",
    "resolver",
];

fn check(text: &str) {
    let dir = std::env::temp_dir();
    if let Ok(i) = gateway_nginx_import::import_str(text, &dir.join("nginx.conf")) {
        let _ = gateway_config::parse(&i.toml, Path::new("/etc/gateway/proxy.toml"), &|_| None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        check(&text);
    }

    #[test]
    fn nginx_shaped_text_never_panics(parts in proptest::collection::vec(proptest::sample::select(TOKENS), 0..120)) {
        check(&parts.join(" "));
        check(&parts.concat());
    }
}
