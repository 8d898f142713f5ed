//! `[acme] storage` as a directory or `s3://bucket/prefix` (with `local_storage`), the
//! lease and poll settings, and `[listen] proxy_protocol`: the syntax as written,
//! the defaults, and every refusal at its line.

mod common;

use common::{ok, one};
use gateway_config::parse;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CERT: &str = "[[acme.certificates]]\nname = \"main\"\nnames = [\"a.example.com\"]\n";

#[test]
fn a_directory_storage_has_no_object_storage_and_the_lease_defaults() {
    let c = ok(&format!("[acme]\nstorage = \"/mnt/nas/gateway-acme\"\n{CERT}"));
    let a = c.acme.unwrap();
    assert_eq!(a.storage, Path::new("/mnt/nas/gateway-acme"));
    assert_eq!(a.object_storage, None);
    assert_eq!(a.lease_ttl, Duration::from_secs(120));
    assert_eq!(a.poll_interval, Duration::from_secs(30));
}

#[test]
fn an_s3_storage_keeps_a_local_copy_under_the_state_directory_or_where_told() {
    let src = format!("[acme]\nstorage = \"s3://my-bucket/gateway-acme/\"\nlease_ttl = \"2m\"\npoll_interval = \"30s\"\n{CERT}");
    let a = ok(&src).acme.unwrap();
    assert_eq!(a.object_storage.as_deref(), Some("s3://my-bucket/gateway-acme"));
    assert_eq!(
        a.storage,
        Path::new("/etc/gateway/certs"),
        "beside the file without GATEWAY_STATE_DIR"
    );
    let state = |n: &str| (n == "GATEWAY_STATE_DIR").then(|| "/var/lib/gateway".to_string());
    let a = parse(&src, Path::new("/etc/gateway/proxy.toml"), &state)
        .unwrap()
        .acme
        .unwrap();
    assert_eq!(a.storage, PathBuf::from("/var/lib/gateway/certs"));
    let src = format!("[acme]\nstorage = \"s3://b\"\nlocal_storage = \"/srv/copy\"\n{CERT}");
    let a = ok(&src).acme.unwrap();
    assert_eq!(
        (a.storage.as_path(), a.object_storage.as_deref()),
        (Path::new("/srv/copy"), Some("s3://b"))
    );
}

#[test]
fn storage_urls_other_than_s3_and_misplaced_keys_are_refused_at_their_line() {
    let (line, msg) = one(&format!("[acme]\nstorage = \"gs://bucket/x\"\n{CERT}"));
    assert_eq!(line, 2);
    assert!(msg.contains("s3://bucket/prefix"), "{msg}");
    let (line, msg) = one(&format!("[acme]\nstorage = \"s3:///x\"\n{CERT}"));
    assert_eq!(line, 2);
    assert!(msg.contains("names no bucket"), "{msg}");
    let (line, msg) = one(&format!(
        "[acme]\nstorage = \"/d\"\nlocal_storage = \"/e\"\n{CERT}"
    ));
    assert_eq!(line, 3);
    assert!(msg.contains("s3://"), "{msg}");
    let (line, msg) = one(&format!("[acme]\nlease_ttl = \"500ms\"\n{CERT}"));
    assert_eq!(line, 2);
    assert!(msg.contains("at least 1s"), "{msg}");
    let (line, _) = one(&format!("[acme]\npoll_interval = \"0s\"\n{CERT}"));
    assert_eq!(line, 2);
}

#[test]
fn proxy_protocol_needs_trusted_proxies_and_takes_a_deadline() {
    let c = ok("[listen]\nproxy_protocol = true\nproxy_protocol_timeout = \"2s\"\n[forwarding]\ntrusted_proxies = [\"100.64.0.0/10\"]\n");
    assert!(c.listen.proxy_protocol);
    assert_eq!(c.listen.proxy_protocol_timeout, Duration::from_secs(2));
    let c = ok("[listen]\nhttps = \"[::]:443\"\n");
    assert!(!c.listen.proxy_protocol);
    assert_eq!(c.listen.proxy_protocol_timeout, Duration::from_secs(5));
    let (line, msg) = one("[listen]\nproxy_protocol = true\n");
    assert_eq!(line, 2);
    assert!(msg.contains("trusted_proxies"), "{msg}");
    let (line, _) =
        one("[listen]\nproxy_protocol_timeout = \"0s\"\n[forwarding]\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
    assert_eq!(line, 2);
    // Restart-only: a reload names it.
    let before = ok("[forwarding]\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
    let after = ok("[listen]\nproxy_protocol = true\n[forwarding]\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
    assert_eq!(before.restart_only_changes(&after), vec!["listen.proxy_protocol"]);
}
