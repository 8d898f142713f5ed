//! The router on the shipped `proxy.toml`: normalize + decide + rewrite for any host and
//! request-target (the first line of the input is the Host). No input may panic; a forwarded
//! path is always origin-form.
#![no_main]

use gateway_routing::{Decision, RouteTable};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn table() -> &'static RouteTable {
    static T: OnceLock<RouteTable> = OnceLock::new();
    T.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy.toml");
        let cfg = gateway_config::load_with_env(&path, &|_| None).expect("the shipped proxy.toml is valid");
        RouteTable::new(&cfg.routes)
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (host, target) = match text.split_once('\n') {
        Some((h, t)) => (Some(h), t),
        None => (None, text.as_ref()),
    };
    if let Decision::Forward { upstream_path, .. } = table().decide(host, target) {
        assert!(upstream_path.starts_with('/'), "origin-form: {upstream_path:?}");
    }
});
