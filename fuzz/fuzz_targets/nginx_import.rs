//! `gateway import-nginx`: any text as an nginx configuration. No input may panic (parse
//! errors are values with file:line); an accepted file's output is valid TOML text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let dir = std::env::temp_dir();
    if let Ok(i) = gateway_nginx_import::import_str(text, &dir.join("nginx.conf")) {
        let _ = gateway_config::parse(&i.toml, &dir.join("proxy.toml"), &|_| None);
    }
});
