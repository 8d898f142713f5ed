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

/// Configuration number `version`: the listeners, `[server]` with a 3 s grace period, no
/// access log, the upstreams `echo` (`up`) and `ws`; the route `/only-even/` in even versions
/// only; `/ws/`, and a catch-all whose responses carry `X-Config: <version>`.
pub fn numbered(up: impl Display, ws: impl Display, version: usize) -> String {
    let only_even = if version.is_multiple_of(2) {
        "[[routes]]\nprefix = \"/only-even/\"\nupstream = \"echo\"\nheaders = { \"X-Even\" = \"yes\" }\n"
    } else {
        ""
    };
    format!(
        r#"
{head}[logging]
access_log = "off"
{echo}{ws}{only_even}
{ws_route}{all}"#,
        head = preamble("3s", ""),
        echo = upstream_at("echo", up),
        ws = upstream_at("ws", ws),
        ws_route = route("", "/ws/", "ws", ""),
        all = route(
            "all",
            "/",
            "echo",
            &format!("headers = {{ \"X-Config\" = \"{version}\" }}\n")
        ),
    )
}

/// A configuration read from the environment: a route whose response header `X-Mark` shows
/// the process's `MARK` environment variable (`from-the-caller` when unset), and an upstream
/// whose address comes only from the environment (`UP_ADDR`). No file watching, an 8 s grace
/// period.
pub fn from_env() -> String {
    format!(
        "\n{}{}{}",
        preamble("8s", "watch_config = false\n"),
        upstream_at("echo", "${UP_ADDR}"),
        route(
            "all",
            "/",
            "echo",
            "headers = { \"X-Mark\" = \"${MARK:-from-the-caller}\" }\n"
        ),
    )
}

/// `[upstreams.ws]` at `address` and the route `/ws/` to it, with `more` (further keys of the
/// route, each on a line ending in `\n`, or empty).
pub fn ws_route(address: impl Display, more: &str) -> String {
    format!("{}{}", upstream_at("ws", address), route("", "/ws/", "ws", more))
}

/// The framing tests' configuration: `[limits]` with `limits` (its keys, or empty), no access
/// log, upstreams `rec` and `other` both at `up`; the route `a` (host `a.test`, to `other`)
/// and the catch-all `all` (to `rec`, WebSockets allowed), each naming itself in an
/// `X-Route` response header.
pub fn framing(up: impl Display, limits: &str) -> String {
    format!(
        r#"
{head}[limits]
{limits}
[logging]
access_log = "off"
{rec}{other}[[routes]]
name = "a"
host = "a.test"
prefix = "/"
upstream = "other"
headers = {{ X-Route = "a" }}
[[routes]]
name = "all"
prefix = "/"
upstream = "rec"
websocket = true
headers = {{ X-Route = "all" }}
"#,
        head = preamble("2s", ""),
        rec = upstream_at("rec", &up),
        other = upstream_at("other", &up),
    )
}
