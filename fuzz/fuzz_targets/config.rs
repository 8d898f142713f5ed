//! The `proxy.toml` loader: parse + validate any text. No input may panic (errors are
//! values with file:line:col).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = gateway_config::parse(text, std::path::Path::new("proxy.toml"), &|_| None);
});
