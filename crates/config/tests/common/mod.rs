//! Shared by the config crate's test files: parse a `proxy.toml` text as
//! `/etc/gateway/proxy.toml` with a test environment, and read its one error.

use gateway_config::{parse, Config, ConfigErrors};
use std::path::Path;

/// The test environment: `DOMAIN=example.com` and a base64 `TSIG_SECRET`; nothing else is set.
pub fn env(name: &str) -> Option<String> {
    match name {
        "DOMAIN" => Some("example.com".into()),
        "TSIG_SECRET" => Some("c2VjcmV0LWtleS1mb3ItdGhlLWdhdGV3YXktdGVzdHM=".into()),
        _ => None,
    }
}

pub fn ok(src: &str) -> Config {
    parse(src, Path::new("/etc/gateway/proxy.toml"), &env).unwrap_or_else(|e| panic!("refused: {e}"))
}

pub fn errors(src: &str) -> ConfigErrors {
    parse(src, Path::new("/etc/gateway/proxy.toml"), &env).expect_err("the file should be refused")
}

/// The one error of `src`: its line and message.
pub fn one(src: &str) -> (usize, String) {
    let e = errors(src);
    assert_eq!(e.0.len(), 1, "expected one error, got: {e}");
    (e.0[0].line, e.0[0].message.clone())
}
