//! Configuration text for the tests, from the pieces the files used to copy: the listeners on
//! the placeholders `Gateway::start` fills in, `[server]` with its usual settings, upstreams
//! and routes. Each piece is TOML text, so a test still writes, `replace`s or appends what it
//! is about; the result is the same text the tests used to spell out.

use std::fmt::Display;

/// `[listen]` on the harness's placeholders (`{HTTPS}`, `{HTTP}`, `{METRICS}`).
pub const LISTEN: &str = "[listen]\nhttps = \"{HTTPS}\"\nhttp = \"{HTTP}\"\nmetrics = \"{METRICS}\"\n";

/// [`LISTEN`], then `[server]` with `grace_period = "{grace}"` and `threads = 2`, then
/// `server`: more `[server]` keys, each on a line ending in `\n`, or empty.
pub fn preamble(grace: &str, server: &str) -> String {
    format!("{LISTEN}[server]\ngrace_period = \"{grace}\"\nthreads = 2\n{server}")
}

/// `[upstreams.NAME]` with `address`.
pub fn upstream_at(name: &str, address: impl Display) -> String {
    format!("[upstreams.{name}]\naddress = \"{address}\"\n")
}

/// `[[routes]]` with `name` (left out when empty), `prefix` and `upstream`, then `more`:
/// further keys of the route, each on a line ending in `\n`, or empty.
pub fn route(name: &str, prefix: &str, upstream: &str, more: &str) -> String {
    let name = if name.is_empty() {
        String::new()
    } else {
        format!("name = \"{name}\"\n")
    };
    format!("[[routes]]\n{name}prefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{more}")
}
