//! The headers of a location: `proxy_set_header`
//! (<https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_set_header>), `add_header`
//! in the location itself, `proxy_hide_header`, and `auth_request_set`.
//!
//! - `Upgrade $http_upgrade` with a `Connection` asking for `upgrade` → `websocket = true`;
//! - `Host $host` / `$http_host` → a vote for `[forwarding] host_header`; no `Host` line →
//!   nginx's `$proxy_host`, sent by a policy;
//! - X-Real-IP, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host with nginx's usual
//!   values, and `Connection ""` → built in (listed in `[forwarding]`);
//! - any other header → a policy's `request_headers` (`set`, or `remove` for `""`), when its
//!   value uses only the variables header rules have;
//! - `add_header` → the route's `headers` (fixed values) or `response_headers` (variables).

use super::route::{HostMode, Plan};
use super::upstream::Target;
use super::{at, eff, eff_all, values, Tr};
use crate::emit::Val;
use crate::parse::Directive;
use std::collections::HashMap;

/// The framing and hop-by-hop fields no header rule may set.
const FRAMING: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

impl<'a> Tr<'a> {
    /// `auth_request_set $VAR $upstream_http_NAME` → VAR → the header NAME.
    pub(super) fn auth_vars(&mut self, chain: &[&'a [Directive]]) -> HashMap<String, String> {
        let mut vars = HashMap::new();
        for d in eff_all(chain, &["auth_request_set"]) {
            match (d.arg(0).strip_prefix('$'), d.arg(1).strip_prefix("$upstream_http_")) {
                (Some(v), Some(h)) if !v.is_empty() && !h.is_empty() => {
                    self.mark(d);
                    vars.insert(v.to_owned(), values::header_name(h));
                }
                _ => self.note(d, "only `auth_request_set $VAR $upstream_http_NAME` sent upstream as NAME translates (forward_auth copy_headers)"),
            }
        }
        vars
    }

    /// The `proxy_set_header` lines in effect.
    pub(super) fn header_plan(
        &mut self,
        chain: &[&'a [Directive]],
        pp: &'a Directive,
        target: &Target,
        auth_vars: &HashMap<String, String>,
    ) -> Plan<'a> {
        let mut plan = Plan {
            websocket: None,
            half_websocket: false,
            set: Vec::new(),
            remove: Vec::new(),
            copy: Vec::new(),
        };
        let (mut upgrade, mut connection) = (None, false);
        let mut host_seen = false;
        for d in eff_all(chain, &["proxy_set_header"]) {
            self.mark(d);
            if d.args.len() != 2 {
                self.note(d, "proxy_set_header takes a name and a value");
                continue;
            }
            let (name, value) = (d.arg(0), d.arg(1));
            let lname = name.to_ascii_lowercase();
            if let Some(h) = value.strip_prefix('$').and_then(|v| auth_vars.get(v)) {
                if h.eq_ignore_ascii_case(name) {
                    plan.copy.push(h.clone());
                } else {
                    self.note(
                        d,
                        format!(
                            "forward_auth copies the auth answer's {h} under its own name, not as {name}"
                        ),
                    );
                }
                continue;
            }
            let builtin = match lname.as_str() {
                "x-real-ip" => value == "$remote_addr",
                "x-forwarded-for" => value == "$proxy_add_x_forwarded_for" || value == "$remote_addr",
                "x-forwarded-proto" => value == "$scheme" || value == "https",
                "x-forwarded-host" => matches!(value, "$host" | "$http_host" | "$server_name"),
                "connection" => value.is_empty(),
                _ => false,
            };
            let dup = plan.set.iter().any(|(n, ..)| n.eq_ignore_ascii_case(name))
                || plan.remove.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
            if dup {
                self.note(d, "a second line for this header: the gateway sets one value per header name (the first is kept)");
                continue;
            }
            if builtin {
                let shown = if value.is_empty() {
                    format!("{name} \"\"")
                } else {
                    name.to_owned()
                };
                self.builtin.entry(shown).or_insert_with(|| at(d));
                continue;
            }
            match lname.as_str() {
                "host" => {
                    host_seen = true;
                    match value {
                        "$host" => self.host_votes.push((HostMode::Nginx, d)),
                        "$http_host" => self.host_votes.push((HostMode::Client, d)),
                        "$proxy_host" => plan.set.push(("Host".into(), target.proxy_host.clone(), d)),
                        v if !v.is_empty() && values::header_value_ok(v) => plan.set.push(("Host".into(), v.to_owned(), d)),
                        _ => self.note(d, "only $host, $http_host, $proxy_host or a fixed name translate"),
                    }
                }
                "upgrade" if value == "$http_upgrade" => upgrade = Some(d),
                "connection" if value.to_ascii_lowercase().contains("upgrade") => connection = true,
                n if FRAMING.contains(&n) => self.note(d, "the gateway sets the framing and hop-by-hop fields itself"),
                _ if value.is_empty() => plan.remove.push((name.to_owned(), d)),
                _ if values::header_value_ok(value) => plan.set.push((name.to_owned(), value.to_owned(), d)),
                _ => self.note(d, "the value uses variables header rules do not have (they have $remote_addr, $scheme, $host, $request_id)"),
            }
        }
        if !host_seen {
            // nginx's default: `proxy_set_header Host $proxy_host`.
            plan.set.push(("Host".into(), target.proxy_host.clone(), pp));
        }
        match (upgrade, connection) {
            (Some(u), true) => plan.websocket = Some(u),
            (None, false) => {}
            _ => plan.half_websocket = true,
        }
        plan
    }

    /// `add_header` set in the location itself → the route's `headers` (fixed values) and
    /// response header rules (values with variables); `proxy_hide_header` → removals.
    #[allow(clippy::type_complexity)]
    pub(super) fn location_headers(
        &mut self,
        chain: &[&'a [Directive]],
        comments: &mut Vec<String>,
    ) -> (
        Vec<(String, Val)>,
        Vec<(String, String, &'a Directive)>,
        Vec<(String, &'a Directive)>,
    ) {
        let mut headers: Vec<(String, Val)> = Vec::new();
        let mut set: Vec<(String, String, &'a Directive)> = Vec::new();
        let mut remove: Vec<(String, &'a Directive)> = Vec::new();
        if let Some((level, list)) = eff(chain, &["add_header"]) {
            if level >= 2 {
                let outer = chain.get(..2).unwrap_or(chain);
                if eff(outer, &["add_header"]).is_some() {
                    comments.push("nginx sent only this location's add_header here, not the server's; the gateway sends [security] headers too".into());
                }
                let mut not_always = Vec::new();
                for d in list {
                    self.mark(d);
                    let (name, value) = (d.arg(0), d.arg(1));
                    if d.args.len() < 2 || name.is_empty() {
                        self.note(d, "add_header takes a name and a value");
                        continue;
                    }
                    if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
                        || set.iter().any(|(n, ..)| n.eq_ignore_ascii_case(name))
                    {
                        self.note(d, "a second value of this header: the gateway sets one value per header name (the first is kept)");
                        continue;
                    }
                    if !d.args.iter().skip(2).any(|a| a == "always") {
                        not_always.push(name.to_owned());
                    }
                    if !value.contains('$') {
                        headers.push((name.to_owned(), Val::Str(values::no_env(value))));
                    } else if values::header_value_ok(value) {
                        set.push((name.to_owned(), value.to_owned(), d));
                    } else {
                        self.note(d, "the value uses variables header rules do not have (they have $remote_addr, $scheme, $host, $request_id)");
                    }
                }
                if !not_always.is_empty() {
                    comments.push(format!(
                        "nginx added {} to 2xx and 3xx responses only (no `always`); the gateway to every proxied response",
                        not_always.join(", ")
                    ));
                }
            }
        }
        for d in eff_all(chain, &["proxy_hide_header"]) {
            self.mark(d);
            remove.push((d.arg(0).to_owned(), d));
        }
        (headers, set, remove)
    }
}
