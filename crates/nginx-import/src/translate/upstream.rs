//! `upstream` blocks and the targets of `proxy_pass` → `[upstreams.NAME]`.
//!
//! - `upstream NAME { server ADDR [weight=N] [max_fails=N] [fail_timeout=T] [backup]; ... }`
//!   (<https://nginx.org/en/docs/http/ngx_http_upstream_module.html#server>) → `address` (one
//!   plain server) or `servers = ["host:port", { address, weight, backup }]`; `max_fails` and
//!   `fail_timeout` are one per group (the first server's; others that differ are noted).
//! - `least_conn` → `balance = "least_conn"`; `ip_hash` → `"hash"` with `hash_key =
//!   "client"`; `hash $remote_addr|$request_uri|$http_NAME|$cookie_NAME [consistent]` →
//!   `"hash"` with `client`, `uri`, `header:NAME`, `cookie:NAME`; `random [two [least_conn]]`
//!   → `"random"`; `keepalive N` → `keepalive`; `keepalive_timeout` → `idle_timeout`.
//! - `proxy_pass http://NAME` names a block; `proxy_pass http://host:port` makes an upstream
//!   of that address (<https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_pass>).
//! - From locations: `proxy_next_upstream`, `_tries`, `_timeout` → `next_upstream*` of the
//!   route's upstream; NGINX Plus `health_check` → `health_check`.

use super::{at, src, values, Tr};
use crate::emit::{self, Section, Val};
use crate::parse::Directive;

/// One `[upstreams.NAME]`.
pub(super) struct Up {
    pub(super) name: String,
    /// An `upstream` block (else made for a `proxy_pass` address).
    pub(super) explicit: bool,
    /// A made one's `host:port`.
    pub(super) addr: Option<String>,
    pub(super) section: Section,
    pub(super) used: bool,
    /// It has a server the gateway can use.
    pub(super) valid: bool,
    /// The first server's `host:port` (for `forward_auth` URLs).
    pub(super) first: Option<String>,
}

/// Where a `proxy_pass` goes.
pub(super) struct Target {
    pub(super) up: usize,
    pub(super) name: String,
    /// The URI part (`/api/` of `http://api/api/`), if any.
    pub(super) uri: Option<String>,
    /// nginx's `$proxy_host`: the authority as `proxy_pass` wrote it.
    pub(super) proxy_host: String,
}

struct Srv<'a> {
    addr: String,
    weight: u32,
    backup: bool,
    max_fails: Option<u32>,
    fail_timeout: Option<String>,
    d: &'a Directive,
}

/// A `proxy_pass` URL split: the authority and the URI part; `Err` says why it does not
/// translate.
pub(super) fn split_url(url: &str) -> Result<(&str, Option<&str>), &'static str> {
    let rest = match url.strip_prefix("http://") {
        Some(r) => r,
        None if url.starts_with("https://") => {
            return Err(
                "the gateway connects to upstreams over plain HTTP (no TLS to upstreams): not translated",
            )
        }
        None => return Err("only http://host[:port][/uri] translates (not a variable or another scheme)"),
    };
    if rest.starts_with("unix:") {
        return Err("a UNIX socket: the gateway connects to upstreams over TCP");
    }
    let (authority, uri) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    if authority.contains('$') {
        return Err("a variable chooses the upstream at run time: not translated");
    }
    if let Some(u) = uri {
        if u.contains('$') {
            return Err("a URI with variables replaces the whole request URI in nginx: not translated");
        }
        if u.contains('?') {
            return Err("a query string in proxy_pass: not translated");
        }
    }
    Ok((authority, uri))
}

impl<'a> Tr<'a> {
    /// The `upstream` blocks of http.
    pub(super) fn upstream_blocks(&mut self, http: &'a [Directive]) {
        for d in http.iter().filter(|d| d.name == "upstream" && d.block.is_some()) {
            self.mark(d);
            let name = d.arg(0).to_ascii_lowercase();
            if name.is_empty() || self.ups.iter().any(|u| u.explicit && u.name == name) {
                self.note(
                    d,
                    "an upstream needs a name of its own (nginx refuses a duplicate)",
                );
                self.covered.insert(d.id);
                continue;
            }
            self.up_names.insert(name.clone());
            let up = self.upstream_block(d, name);
            self.ups.push(up);
        }
    }

    fn upstream_block(&mut self, d: &'a Directive, name: String) -> Up {
        let mut sec = Section::new(format!("upstreams.{}", emit::key(&name)));
        sec.comment(src(d));
        let mut servers: Vec<Srv<'a>> = Vec::new();
        for c in d.children() {
            match c.name.as_str() {
                "server" => {
                    if let Some(s) = self.upstream_server(c) {
                        servers.push(s);
                    }
                }
                "least_conn" => {
                    self.mark(c);
                    sec.set("balance", Val::Str("least_conn".into()), Some(src(c)));
                }
                "ip_hash" => {
                    self.mark(c);
                    sec.set("balance", Val::Str("hash".into()), Some(src(c)));
                    sec.set("hash_key", Val::Str("client".into()), None)
                        .note("nginx's ip_hash hashes the first three octets of an IPv4 address; the gateway hashes the whole address, consistently");
                }
                "hash" => self.hash_balance(c, &mut sec),
                "random" => {
                    let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
                    match args.as_slice() {
                        [] => {
                            self.mark(c);
                            sec.set("balance", Val::Str("random".into()), Some(src(c)))
                                .note("nginx's `random` picks a server by weight; the gateway's takes the less loaded of two (nginx's `random two least_conn`)");
                        }
                        ["two"] | ["two", "least_conn"] => {
                            self.mark(c);
                            sec.set("balance", Val::Str("random".into()), Some(src(c)));
                        }
                        _ => self.note(
                            c,
                            "only `random`, `random two` and `random two least_conn` translate",
                        ),
                    }
                }
                "keepalive" => match c.arg(0).parse::<i64>() {
                    Ok(n) if (0..=100_000).contains(&n) => {
                        self.mark(c);
                        sec.set("keepalive", Val::Int(n), Some(src(c)));
                    }
                    _ => self.note(c, "a number of idle connections from 0 to 100000"),
                },
                "keepalive_timeout" => match values::duration(c.arg(0)) {
                    Some(t) => {
                        self.mark(c);
                        sec.set("idle_timeout", Val::Str(t), Some(src(c)));
                    }
                    None => self.note(c, "not a time such as 60s"),
                },
                "zone" => self.drop(c, "the group's state needs no shared memory zone"),
                _ => {}
            }
        }
        let first = servers.first().map(|s| s.addr.clone());
        if servers.is_empty() {
            self.note_as(
                d,
                format!("upstream {name}"),
                "no server the gateway can use: routes to it are not translated",
            );
            return Up {
                name,
                explicit: true,
                addr: None,
                section: sec,
                used: false,
                valid: false,
                first,
            };
        }
        // The servers first, then the block's other settings.
        let settings = std::mem::take(&mut sec.entries);
        if servers.len() == 1 && servers[0].weight == 1 && !servers[0].backup {
            sec.set(
                "address",
                Val::Str(values::no_env(&servers[0].addr)),
                Some(src(servers[0].d)),
            );
        } else {
            let list: Vec<Val> = servers
                .iter()
                .map(|s| {
                    let addr = Val::Str(values::no_env(&s.addr));
                    if s.weight == 1 && !s.backup {
                        return addr;
                    }
                    let mut t = vec![("address".to_owned(), addr)];
                    if s.weight != 1 {
                        t.push(("weight".to_owned(), Val::Int(i64::from(s.weight))));
                    }
                    if s.backup {
                        t.push(("backup".to_owned(), Val::Bool(true)));
                    }
                    Val::Inline(t)
                })
                .collect();
            let lines: Vec<String> = servers.iter().map(|s| at(s.d)).collect();
            sec.set("servers", Val::List(list), None)
                .note(format!("server lines at {}", lines.join(", ")));
        }
        self.group_failures(&servers, &mut sec);
        sec.entries.extend(settings);
        Up {
            name,
            explicit: true,
            addr: None,
            section: sec,
            used: false,
            valid: true,
            first,
        }
    }

    /// `max_fails` / `fail_timeout`: one per group, those of the first server that sets
    /// them. Servers that set others are noted; servers at nginx's defaults get a comment.
    fn group_failures(&mut self, servers: &[Srv<'a>], sec: &mut Section) {
        let explicit = |s: &Srv<'a>| s.max_fails.is_some() || s.fail_timeout.is_some();
        let Some(set) = servers.iter().find(|s| explicit(s)) else {
            return;
        };
        let eff = |s: &Srv<'a>| {
            (
                s.max_fails.unwrap_or(1),
                s.fail_timeout.clone().unwrap_or_else(|| "10s".into()),
            )
        };
        let first = eff(set);
        let e = sec.set("max_fails", Val::Int(i64::from(first.0)), Some(src(set.d)));
        let defaults: Vec<String> = servers
            .iter()
            .filter(|s| !explicit(s))
            .map(|s| s.addr.clone())
            .collect();
        if !defaults.is_empty() {
            e.note(format!(
                "one per upstream: {} had nginx's defaults (max_fails=1 fail_timeout=10s)",
                defaults.join(", ")
            ));
        }
        sec.set("fail_timeout", Val::Str(first.1.clone()), Some(src(set.d)));
        for s in servers.iter().filter(|s| explicit(s) && eff(s) != first) {
            let why = format!(
                "max_fails and fail_timeout are one per upstream in the gateway: max_fails = {}, fail_timeout = \"{}\" ({}) apply to every server",
                first.0,
                first.1,
                at(set.d)
            );
            self.note(s.d, why);
        }
    }

    fn upstream_server(&mut self, c: &'a Directive) -> Option<Srv<'a>> {
        self.mark(c);
        let a = c.arg(0);
        if a.starts_with("unix:") {
            self.note(c, "a UNIX socket: the gateway connects to upstreams over TCP");
            return None;
        }
        let Some((host, port)) = values::authority(a) else {
            self.note(c, "not a host[:port] the gateway can connect to");
            return None;
        };
        let mut srv = Srv {
            addr: values::join_authority(&host, port.unwrap_or(80)),
            weight: 1,
            backup: false,
            max_fails: None,
            fail_timeout: None,
            d: c,
        };
        let mut bad: Vec<String> = Vec::new();
        for p in c.args.iter().skip(1) {
            if let Some(v) = p.strip_prefix("weight=") {
                match v.parse::<u32>() {
                    Ok(w) if (1..=1000).contains(&w) => srv.weight = w,
                    _ => bad.push(p.clone()),
                }
            } else if let Some(v) = p.strip_prefix("max_fails=") {
                match v.parse::<u32>() {
                    Ok(n) if n <= 1000 => srv.max_fails = Some(n),
                    _ => bad.push(p.clone()),
                }
            } else if let Some(v) = p.strip_prefix("fail_timeout=") {
                match values::duration(v).filter(|t| t != "0s") {
                    Some(t) => srv.fail_timeout = Some(t),
                    None => bad.push(p.clone()),
                }
            } else if p == "backup" {
                srv.backup = true;
            } else if p == "down" {
                self.note(c, "`down`: the server is left out");
                return None;
            } else if p != "resolve" {
                // `resolve`: names are always resolved again (every [server] dns_refresh).
                bad.push(p.clone());
            }
        }
        if !bad.is_empty() {
            self.note(
                c,
                format!(
                    "{} not translated (the gateway has weight, backup, max_fails, fail_timeout)",
                    bad.join(" ")
                ),
            );
        }
        Some(srv)
    }

    fn hash_balance(&mut self, c: &'a Directive, sec: &mut Section) {
        let key = c.arg(0);
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        let (hash_key, comment) = match key {
            "$remote_addr" | "$binary_remote_addr" => (Some("client".to_owned()), None),
            "$request_uri" => (Some("uri".to_owned()), None),
            "$uri" => (
                Some("uri".to_owned()),
                Some("nginx hashed the path; the gateway hashes path and query"),
            ),
            k => match (k.strip_prefix("$http_"), k.strip_prefix("$cookie_")) {
                (Some(h), _) if token(h) => (Some(format!("header:{}", h.replace('_', "-"))), None),
                (_, Some(ck)) if token(ck) => (Some(format!("cookie:{ck}")), None),
                _ => (None, None),
            },
        };
        let Some(k) = hash_key else {
            self.note(c, "the gateway hashes the client address, the URI ($request_uri), one header ($http_NAME) or one cookie ($cookie_NAME): round robin instead");
            return;
        };
        self.mark(c);
        sec.set("balance", Val::Str("hash".into()), Some(src(c)));
        let e = sec.set("hash_key", Val::Str(k), None);
        if let Some(cm) = comment {
            e.note(cm);
        }
        if !c.args.iter().any(|a| a == "consistent") {
            e.note("always consistent (Ketama): nginx's plain `hash` moved more keys when servers changed");
        }
    }

    /// The upstream of a `proxy_pass`: a block it names, or one made for its address
    /// (named after the host, or `base` for an IP address).
    pub(super) fn proxy_target(&mut self, pp: &'a Directive, base: &str) -> Option<Target> {
        let (authority, uri) = match split_url(pp.arg(0)) {
            Ok(v) => v,
            Err(why) => {
                self.note(pp, why);
                return None;
            }
        };
        let Some((host, port)) = values::authority(authority) else {
            self.note(pp, "not http://host[:port]: not translated");
            return None;
        };
        let uri = uri.map(str::to_owned);
        if port.is_none() {
            if let Some(i) = self.ups.iter().position(|u| u.explicit && u.name == host) {
                if !self.ups[i].valid {
                    self.note(
                        pp,
                        "its upstream has no server the gateway can use: not translated",
                    );
                    return None;
                }
                self.ups[i].used = true;
                return Some(Target {
                    up: i,
                    name: self.ups[i].name.clone(),
                    uri,
                    proxy_host: authority.to_owned(),
                });
            }
        }
        let addr = values::join_authority(&host, port.unwrap_or(80));
        if let Some(i) = self
            .ups
            .iter()
            .position(|u| u.addr.as_deref() == Some(addr.as_str()))
        {
            self.ups[i].used = true;
            return Some(Target {
                up: i,
                name: self.ups[i].name.clone(),
                uri,
                proxy_host: authority.to_owned(),
            });
        }
        let named = if values::is_ip(&host) {
            base.to_owned()
        } else {
            values::slug(host.split('.').next().unwrap_or(""))
        };
        let name = values::unique(
            if named.is_empty() {
                "upstream"
            } else {
                named.as_str()
            },
            &mut self.up_names,
        );
        let mut section = Section::new(format!("upstreams.{}", emit::key(&name)));
        section.set("address", Val::Str(values::no_env(&addr)), Some(src(pp)));
        self.ups.push(Up {
            name: name.clone(),
            explicit: false,
            addr: Some(addr.clone()),
            section,
            used: true,
            valid: true,
            first: Some(addr),
        });
        Some(Target {
            up: self.ups.len() - 1,
            name,
            uri,
            proxy_host: authority.to_owned(),
        })
    }

    /// A key of the route's upstream set from a location (`proxy_next_upstream`...): once
    /// per upstream; a location that asks for another value is noted.
    pub(super) fn up_setting(&mut self, up: usize, d: &'a Directive, key: &str, val: Val) {
        self.mark(d);
        let prev = self.ups.get(up).and_then(|u| u.section.get(key).cloned());
        match prev {
            Some(p) if p == val => {}
            Some(p) => {
                let why = format!(
                    "the gateway sets {key} once per upstream: {} is kept",
                    emit::value(&p)
                );
                self.note(d, why);
            }
            None => {
                if let Some(u) = self.ups.get_mut(up) {
                    u.section.set(key, val, Some(src(d)));
                }
            }
        }
    }

    /// `proxy_next_upstream`, `_tries`, `_timeout` and NGINX Plus `health_check` of a
    /// location, for its upstream.
    pub(super) fn upstream_settings(&mut self, up: usize, chain: &[&'a [Directive]], own: &'a [Directive]) {
        if let Some(d) = super::eff1(chain, "proxy_next_upstream") {
            let mut list = Vec::new();
            let mut bad = Vec::new();
            for a in &d.args {
                match a.as_str() {
                    "error" | "timeout" | "http_502" | "http_503" | "http_504" => {
                        list.push(Val::Str(a.clone()))
                    }
                    "off" if d.args.len() == 1 => list.push(Val::Str("off".into())),
                    _ => bad.push(a.clone()),
                }
            }
            if !bad.is_empty() {
                let why = format!(
                    "{} not translated: the gateway moves on after error, timeout, http_502, http_503, http_504",
                    bad.join(" ")
                );
                self.note(d, why);
            }
            if !list.is_empty() {
                self.up_setting(up, d, "next_upstream", Val::List(list));
            }
        }
        if let Some(d) = super::eff1(chain, "proxy_next_upstream_tries") {
            match d.arg(0).parse::<i64>() {
                Ok(n) if (1..=16).contains(&n) => self.up_setting(up, d, "next_upstream_tries", Val::Int(n)),
                Ok(0) => self.drop(d, "0: as many tries as the upstream has servers (the default)"),
                _ => self.note(d, "a number of tries from 1 to 16"),
            }
        }
        if let Some(d) = super::eff1(chain, "proxy_next_upstream_timeout") {
            match values::duration(d.arg(0)) {
                Some(t) => self.up_setting(up, d, "next_upstream_timeout", Val::Str(t)),
                None => self.note(d, "not a time such as 5s"),
            }
        }
        for d in own.iter().filter(|d| d.name == "health_check") {
            let mut pairs = Vec::new();
            let mut bad = Vec::new();
            for a in &d.args {
                let (k, v) = a.split_once('=').unwrap_or((a.as_str(), ""));
                match k {
                    "uri" if v.starts_with('/') => {
                        pairs.push(("path".to_owned(), Val::Str(values::no_env(v))))
                    }
                    "interval" => match values::duration(v) {
                        Some(t) => pairs.push(("interval".to_owned(), Val::Str(t))),
                        None => bad.push(a.clone()),
                    },
                    "fails" | "passes" => match v.parse::<i64>() {
                        Ok(n) if n > 0 => pairs.push((k.to_owned(), Val::Int(n))),
                        _ => bad.push(a.clone()),
                    },
                    _ => bad.push(a.clone()),
                }
            }
            if !bad.is_empty() {
                self.note(
                    d,
                    format!(
                        "{} not translated: health_check takes uri, interval, fails, passes",
                        bad.join(" ")
                    ),
                );
            }
            self.up_setting(up, d, "health_check", Val::Inline(pairs));
        }
    }
}
