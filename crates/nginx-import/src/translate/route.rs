//! `location` blocks → `[[routes]]` (one per location and server name).
//!
//! - `location /p/` → `prefix`, `location = /p` → `exact`, `location ^~ /p/` → `prefix`;
//!   regular expressions (`~`, `~*`) and named locations (`@x`) are noted, not guessed
//!   (<https://nginx.org/en/docs/http/ngx_http_core_module.html#location>).
//! - `proxy_pass` (<https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_pass>):
//!   without a URI part the path is passed whole (no key); with one, the part of the path
//!   the location matched is replaced by it: the URI equal to the location's path → no key,
//!   `/` for a location ending in `/` → `strip_prefix = true`, any other → `rewrite = URI`
//!   (the gateway replaces the matched prefix, or the whole path of an exact route, the
//!   same way).
//! - `proxy_set_header`: `Upgrade $http_upgrade` + `Connection upgrade` → `websocket`;
//!   `Host $host` / `$http_host` → `[forwarding] host_header`; X-Real-IP and X-Forwarded-*
//!   as nginx's usual lines → built in; no `Host` line → nginx's `$proxy_host`, sent by a
//!   policy; others → a policy's `request_headers`.
//! - `proxy_read/send/connect_timeout` → `read/write/connect_timeout`;
//!   `client_max_body_size` → `max_body`; `gzip off` → `compress = false`; `add_header` in
//!   a location → `headers`; `allow`/`deny`, `limit_req`, `auth_basic`, `auth_request` →
//!   policies (see `policy.rs`).
//! - The ACME location `/.well-known/acme-challenge/` with `root` is dropped (the gateway
//!   answers challenges), or becomes `[server] acme_webroot` when certificates stay certbot's.

use super::server::ServerInfo;
use super::upstream::{split_url, Target};
use super::{at, eff, eff1, eff_all, src, values, Tr};
use crate::emit::{Section, Val};
use crate::parse::Directive;
use std::collections::HashMap;

/// A route and whether nginx compressed it (`gzip` in effect there).
pub(super) struct RouteOut {
    pub(super) section: Section,
    pub(super) gzip: bool,
}

/// What a `proxy_set_header Host` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HostMode {
    /// `$http_host`: as the client sent it.
    Client,
    /// `$host`: the name without the port.
    Nginx,
}

/// The request headers of a location, after `proxy_set_header`.
pub(super) struct Plan<'a> {
    /// The `Upgrade` line, when `Upgrade` and `Connection` both ask for upgrades.
    pub(super) websocket: Option<&'a Directive>,
    pub(super) half_websocket: bool,
    pub(super) set: Vec<(String, String, &'a Directive)>,
    pub(super) remove: Vec<(String, &'a Directive)>,
    /// Headers of the auth answer sent upstream (`forward_auth` `copy_headers`).
    pub(super) copy: Vec<String>,
}

/// `auth_request` URI → the auth service's URL, or why it does not translate.
pub(super) type AuthMap = HashMap<String, Result<String, String>>;

/// `(exact, path)` of a location, or why it is not translated.
pub(super) fn location_path(loc: &Directive) -> Result<(bool, String), String> {
    // `location = /x`, `location =/x` (nginx accepts the modifier joined to the path).
    let (modifier, path): (&str, &str) = match loc.args.as_slice() {
        [m, p] => (m.as_str(), p.as_str()),
        [p] => {
            if let Some(rest) = p.strip_prefix("^~") {
                ("^~", rest)
            } else if let Some(rest) = p.strip_prefix('=') {
                ("=", rest)
            } else if p.starts_with(['~', '@']) {
                (p.as_str(), "")
            } else {
                ("", p.as_str())
            }
        }
        _ => return Err("a location takes a path (and =, ^~, ~ or ~*)".into()),
    };
    let exact = match modifier {
        "" | "^~" => false,
        "=" => true,
        m if m.starts_with('@') => {
            return Err("a named location (for error_page or try_files): not translated".into())
        }
        m if m.starts_with('~') => {
            return Err("a regular-expression location: the gateway matches prefixes and exact paths only; write a prefix or exact route for the paths it served".into())
        }
        _ => return Err("a location takes a path (and =, ^~, ~ or ~*)".into()),
    };
    if !path.starts_with('/') {
        return Err("a path that does not start with `/`: not translated".into());
    }
    Ok((exact, path.to_owned()))
}

/// `return 301 https://$host$request_uri` (or 302, 303, 307, 308; `$server_name`,
/// `$http_host`; a port): the redirect the `:80` listener makes. The port, if any.
fn https_redirect(r: &Directive) -> Option<Option<u16>> {
    if !matches!(r.arg(0), "301" | "302" | "303" | "307" | "308") {
        return None;
    }
    let rest = r.arg(1).strip_prefix("https://")?.strip_suffix("$request_uri")?;
    let (host, port) = match rest.split_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
        None => (rest, None),
    };
    matches!(host, "$host" | "$server_name" | "$http_host").then_some(port)
}

fn why_return(r: &Directive) -> &'static str {
    match r.arg(0) {
        "301" | "302" | "303" | "307" | "308" => {
            "the gateway makes no redirects but :80 to HTTPS: answer this one in the application"
        }
        "503" => "maintenance: a route with maintenance = true (or `gateway maintenance on ROUTE`) answers 503 with Retry-After",
        _ => "fixed responses are not translated: the gateway only proxies",
    }
}

/// certbot's `if ($host = NAME) { return 301 https://$host$request_uri; }`.
fn certbot_if(i: &Directive) -> bool {
    i.args.first().is_some_and(|a| a == "($host")
        && i.children().len() == 1
        && i.children()
            .iter()
            .all(|r| r.name == "return" && https_redirect(r).is_some())
}

/// `demo-api`: the host's first label and the path, or `root`.
fn route_name(host: Option<&str>, path: &str) -> String {
    let p = values::slug(path);
    let label = host
        .map(|h| values::slug(h.trim_start_matches("*.").split('.').next().unwrap_or("")))
        .unwrap_or_default();
    match (label.is_empty(), p.is_empty()) {
        (false, true) => label,
        (false, false) => format!("{label}-{p}"),
        (true, true) => "root".to_owned(),
        (true, false) => p,
    }
}

/// The location `auth_request` asks in a server: `location = URI`, or a prefix location of
/// exactly that path (a longer match, such as `location /`, would be a normal route).
fn find_location<'a>(scope: &'a [Directive], uri: &str) -> Option<(&'a Directive, bool, String)> {
    let mut found: Option<(&'a Directive, bool, String)> = None;
    let mut stack: Vec<&'a [Directive]> = vec![scope];
    while let Some(sc) = stack.pop() {
        for d in sc.iter().filter(|d| d.name == "location") {
            if let Ok((exact, path)) = location_path(d) {
                if path == uri && (exact || found.is_none()) {
                    found = Some((d, exact, path));
                }
            }
            stack.push(d.children());
        }
    }
    found
}

/// Every `auth_request` URI of a scope and its locations.
fn auth_uris(scope: &[Directive], out: &mut Vec<String>) {
    for d in scope {
        if d.name == "auth_request" && d.arg(0) != "off" && !out.iter().any(|u| u == d.arg(0)) {
            out.push(d.arg(0).to_owned());
        }
        if d.name == "location" {
            auth_uris(d.children(), out);
        }
    }
}

impl<'a> Tr<'a> {
    /// The routes of one server.
    pub(super) fn server_routes(&mut self, http: &'a [Directive], s: &ServerInfo<'a>) {
        if s.skip {
            return;
        }
        let chain: [&'a [Directive]; 2] = [http, s.d.children()];
        for r in s.d.children().iter().filter(|d| d.name == "return") {
            self.return_directive(r, s.https);
        }
        if !s.https {
            for i in s.d.children().iter().filter(|d| d.name == "if" && certbot_if(d)) {
                self.drop(
                    i,
                    "certbot's redirect: the :80 listener redirects every host to HTTPS (built in)",
                );
                self.covered.insert(i.id);
            }
        }
        let auth = self.auth_targets(&chain, s);
        let before = self.routes.len();
        self.locations(&chain, s.d.children(), s, &auth);
        if self.routes.len() > before {
            let why = "nginx proxied plain HTTP here; the gateway's HTTP listener only redirects to HTTPS (and answers ACME): these locations are HTTPS routes";
            for l in s.listens.iter().filter(|l| !l.ssl) {
                match l.d {
                    Some(d) => self.note(d, why),
                    None => self.note_as(s.d, "server (no listen: *:80)".into(), why),
                }
            }
        }
    }

    fn return_directive(&mut self, r: &'a Directive, https: bool) {
        match https_redirect(r) {
            Some(port) if !https => {
                self.drop(
                    r,
                    "the :80 listener redirects every request to https://$host$request_uri (built in)",
                );
                if let Some(p) = port.filter(|p| *p != 443) {
                    self.listen
                        .set("public_https_port", Val::Int(i64::from(p)), Some(src(r)))
                        .note("the HTTPS port clients see, in the redirects");
                }
            }
            _ if !https && r.arg(0) == "404" => {
                self.drop(r, "the :80 listener redirects every host to HTTPS (nginx answered 404 to names it did not serve)");
            }
            _ => self.note(r, why_return(r)),
        }
    }

    /// The locations that `auth_request` asks, as `forward_auth` URLs.
    fn auth_targets(&mut self, chain: &[&'a [Directive]], s: &ServerInfo<'a>) -> AuthMap {
        let mut uris = Vec::new();
        for scope in chain {
            auth_uris(scope, &mut uris);
        }
        let mut map = AuthMap::new();
        for uri in uris {
            let Some((loc, exact, path)) = find_location(s.d.children(), &uri) else {
                map.insert(
                    uri,
                    Err(
                        "no location of this server is exactly this URI (location = URI): not translated"
                            .into(),
                    ),
                );
                continue;
            };
            let Some(pp) = loc.children().iter().find(|d| d.name == "proxy_pass") else {
                map.insert(
                    uri,
                    Err("the location it asks has no proxy_pass: not translated".into()),
                );
                continue;
            };
            match self.auth_url(pp, exact, &path, &uri) {
                Ok(url) => {
                    self.auth_locations.insert(loc.id);
                    self.mark(loc);
                    for c in loc.children() {
                        match c.name.as_str() {
                            "proxy_pass" | "internal" => self.mark(c),
                            "proxy_set_header" | "proxy_pass_request_body" | "proxy_pass_request_headers" | "proxy_http_version" => {
                                self.drop(c, "the gateway's auth request is a GET without body, with Cookie, Authorization, X-Forwarded-* and X-Original-URL")
                            }
                            _ => {}
                        }
                    }
                    map.insert(uri, Ok(url));
                }
                Err(why) => {
                    map.insert(uri, Err(why));
                }
            }
        }
        map
    }

    fn auth_url(&self, pp: &Directive, exact: bool, path: &str, uri: &str) -> Result<String, String> {
        let (authority, part) = split_url(pp.arg(0)).map_err(str::to_owned)?;
        let (host, port) = values::authority(authority).ok_or_else(|| "not http://host[:port]".to_owned())?;
        let addr = match (port, self.ups.iter().find(|u| u.explicit && u.name == host)) {
            (None, Some(u)) => u
                .first
                .clone()
                .ok_or_else(|| "its upstream has no server".to_owned())?,
            _ => values::join_authority(&host, port.unwrap_or(80)),
        };
        let path = match part {
            None => uri.to_owned(),
            Some(p) if exact => p.to_owned(),
            Some(p) => format!("{p}{}", uri.strip_prefix(path).unwrap_or("")),
        };
        Ok(format!("http://{addr}{path}"))
    }

    fn locations(
        &mut self,
        chain: &[&'a [Directive]],
        scope: &'a [Directive],
        s: &ServerInfo<'a>,
        auth: &AuthMap,
    ) {
        for loc in scope.iter().filter(|d| d.name == "location" && d.block.is_some()) {
            if self.auth_locations.contains(&loc.id) {
                continue;
            }
            let mut sub: Vec<&'a [Directive]> = chain.to_vec();
            sub.push(loc.children());
            let nested = self.location(&sub, loc, s, auth);
            self.mark(loc);
            if nested {
                self.locations(&sub, loc.children(), s, auth);
            }
        }
    }

    /// One location; whether its nested locations are to be read.
    fn location(
        &mut self,
        chain: &[&'a [Directive]],
        loc: &'a Directive,
        s: &ServerInfo<'a>,
        auth: &AuthMap,
    ) -> bool {
        let (exact, path) = match location_path(loc) {
            Ok(p) => p,
            Err(why) => {
                self.note(loc, why);
                self.covered.insert(loc.id);
                return false;
            }
        };
        let own = loc.children();
        if path.starts_with("/.well-known/acme-challenge") {
            if let Some(root) = own.iter().find(|d| d.name == "root" || d.name == "alias") {
                self.mark(root);
                self.acme_roots.push((loc, root));
                self.covered.insert(loc.id);
                return false;
            }
        }
        let proxies: Vec<&'a Directive> = own.iter().filter(|d| d.name == "proxy_pass").collect();
        let ret = own.iter().find(|d| d.name == "return");
        let Some(&pp) = proxies.first() else {
            if let Some(r) = ret {
                self.return_directive(r, s.https);
                self.covered.insert(loc.id);
                return false;
            }
            if own.iter().any(|d| d.name == "location") {
                self.note(loc, "no proxy_pass of its own: nginx answered this path itself; its nested locations are translated");
                return true;
            }
            self.note(loc, "no proxy_pass: nginx answered it itself (root, alias, try_files, files); the gateway only proxies: serve these from an upstream");
            self.covered.insert(loc.id);
            return false;
        };
        for extra in proxies.iter().skip(1) {
            self.note(extra, "a second proxy_pass (nginx refuses it)");
        }
        if let Some(r) = ret {
            self.note(
                r,
                "`return` answers before proxy_pass in nginx: this location is translated as a proxied route",
            );
        }
        self.mark(pp);
        let base = route_name(s.hosts.first().map(String::as_str), &path);
        let Some(target) = self.proxy_target(pp, &base) else {
            self.partly.insert(loc.id);
            return true;
        };
        self.route(chain, loc, pp, s, auth, exact, &path, &target, &base);
        true
    }

    /// The `[[routes]]` tables of a proxied location.
    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        chain: &[&'a [Directive]],
        loc: &'a Directive,
        pp: &'a Directive,
        s: &ServerInfo<'a>,
        auth: &AuthMap,
        exact: bool,
        path: &str,
        target: &Target,
        base: &str,
    ) {
        let mut comments: Vec<String> = Vec::new();
        let mut keys: Vec<(&'static str, Val, Option<String>, Vec<String>)> = Vec::new();
        let mut rewritten = true;
        match target.uri.as_deref() {
            None => rewritten = false,
            Some(u) if u == path => rewritten = false,
            Some("/") if !exact && path.ends_with('/') => {
                keys.push(("strip_prefix", Val::Bool(true), Some(src(pp)), vec![]))
            }
            Some(u) => {
                let mut above = Vec::new();
                if !exact && !path.ends_with('/') && u.ends_with('/') {
                    above.push(format!("nginx sent {path}/x as {u}/x; the gateway sends {u}x"));
                }
                keys.push(("rewrite", Val::Str(values::no_env(u)), Some(src(pp)), above));
            }
        }
        if !exact && !path.ends_with('/') {
            comments.push(format!(
                "nginx's `location {path}` also matched {path}x...; this prefix matches {path} and {path}/... only (exact = \"{path}\" for one path)"
            ));
        }
        match eff1(chain, "proxy_redirect") {
            Some(d) if d.arg(0) == "off" => {}
            Some(d) if d.arg(0) != "default" => {
                self.note(d, "Location rewriting is not translated: the gateway passes Location on as the upstream sent it");
            }
            found => {
                if let Some(d) = found {
                    self.mark(d);
                }
                if rewritten {
                    comments.push(format!(
                        "nginx's proxy_redirect default rewrote `Location: http://{}{}...` to {path}...; the gateway passes Location on as sent",
                        target.proxy_host,
                        target.uri.as_deref().unwrap_or("")
                    ));
                }
            }
        }
        let auth_vars = self.auth_vars(chain);
        let plan = self.header_plan(chain, pp, target, &auth_vars);
        let mut ws_above = Vec::new();
        if plan.half_websocket {
            ws_above.push(
                "nginx set only one of Upgrade and Connection: WebSocket upgrades did not pass".to_owned(),
            );
        } else if plan.websocket.is_none() {
            ws_above.push(
                "no proxy_set_header Upgrade/Connection here: nginx passed no WebSocket upgrade".to_owned(),
            );
        }
        keys.push((
            "websocket",
            Val::Bool(plan.websocket.is_some()),
            plan.websocket.map(src),
            ws_above,
        ));
        for (name, key) in [
            ("proxy_read_timeout", "read_timeout"),
            ("proxy_send_timeout", "write_timeout"),
            ("proxy_connect_timeout", "connect_timeout"),
        ] {
            for d in eff_all(chain, &[name]) {
                self.mark(d);
            }
            if let Some(d) = eff1(chain, name) {
                match values::duration(d.arg(0)) {
                    Some(v) => keys.push((key, Val::Str(v), Some(src(d)), vec![])),
                    None => self.note(d, "not a time such as 60s"),
                }
            }
        }
        if let Some((level, list)) = eff(chain, &["client_max_body_size"]) {
            for x in &list {
                self.mark(x);
            }
            let d = list[list.len() - 1];
            match values::size(d.arg(0)) {
                Some(v) if level > 0 && v != self.global_max_body => {
                    keys.push(("max_body", Val::Str(v), Some(src(d)), vec![]))
                }
                Some(_) => {}
                None => self.note(d, "not a size such as 500M or 32k"),
            }
        }
        let gzip = match eff1(chain, "gzip") {
            Some(d) => {
                self.mark(d);
                d.arg(0) == "on"
            }
            None => false,
        };
        let (headers, resp_set, resp_remove) = self.location_headers(chain, &mut comments);
        if !headers.is_empty() {
            keys.push(("headers", Val::Inline(headers), None, vec![]));
        }
        let mut policies: Vec<String> = Vec::new();
        policies.extend(self.access_policies(chain, base));
        policies.extend(self.rate_policies(chain));
        policies.extend(self.basic_policy(chain));
        policies.extend(self.forward_policy(chain, auth, &plan.copy));
        policies.extend(self.header_policy(base, &plan, &resp_set, &resp_remove));
        if !policies.is_empty() {
            let list = policies.iter().map(|p| Val::Str(p.clone())).collect();
            keys.push(("policies", Val::List(list), None, vec![]));
        }
        self.upstream_settings(target.up, chain, loc.children());

        let hosts: Vec<Option<String>> = if s.hosts.is_empty() {
            vec![None]
        } else {
            s.hosts.iter().cloned().map(Some).collect()
        };
        for host in hosts {
            let key = (host.clone(), exact, path.to_owned());
            if let Some(first) = self.route_keys.get(&key).cloned() {
                self.note(
                    loc,
                    format!("the same host and path as the location at {first}, which nginx uses"),
                );
                continue;
            }
            self.route_keys.insert(key, at(loc));
            let name = values::unique(&route_name(host.as_deref(), path), &mut self.route_names);
            let mut sec = Section::array("routes");
            sec.comment(format!(
                "{}: location {} {{ {}; }}",
                at(loc),
                loc.args.join(" "),
                pp.text()
            ));
            for c in &comments {
                sec.comment(c.clone());
            }
            sec.set("name", Val::Str(values::no_env(&name)), None);
            if let Some(h) = &host {
                sec.set("host", Val::Str(values::no_env(h)), None);
            }
            sec.set(
                if exact { "exact" } else { "prefix" },
                Val::Str(values::no_env(path)),
                None,
            );
            sec.set("upstream", Val::Str(values::no_env(&target.name)), None);
            for (k, v, from, above) in &keys {
                let e = sec.set(k, v.clone(), from.clone());
                for a in above {
                    e.note(a.clone());
                }
            }
            self.routes.push(RouteOut { section: sec, gzip });
        }
    }

    /// After every server: ACME locations, compression per route, the Host header, the
    /// built-in headers, upstreams no route uses.
    pub(super) fn finish_routes(&mut self) {
        for (loc, root) in std::mem::take(&mut self.acme_roots) {
            if self.acme.is_some() {
                self.drop(loc, "the gateway answers ACME http-01 challenges itself ([acme])");
                continue;
            }
            let dir = root.arg(0).trim_end_matches('/');
            let dir = if root.name == "alias" {
                dir.strip_suffix("/.well-known/acme-challenge").unwrap_or("")
            } else {
                dir
            };
            if dir.is_empty() {
                self.note(root, "an alias that does not end in /.well-known/acme-challenge/: write [server] acme_webroot (the directory holding .well-known/acme-challenge/)");
                continue;
            }
            let path = values::no_env(&self.abs(dir));
            self.server
                .set("acme_webroot", Val::Str(path), Some(src(root)))
                .note("certbot's webroot (certificates stay certbot's): challenges under /.well-known/acme-challenge/ are answered from here");
            self.drop(loc, "served from [server] acme_webroot");
        }

        // Each route's `gzip` is the one in effect there (http's when it sets none).
        let http_on = self.http_gzip.is_some_and(|d| d.arg(0) == "on");
        let any = http_on || self.routes.iter().any(|r| r.gzip);
        if !self.routes.is_empty() || self.http_gzip.is_some() {
            let from = self.http_gzip.map(src);
            let e = self.compression.set("enabled", Val::Bool(any), from);
            if self.http_gzip.is_none() {
                e.note("nginx's default: gzip off");
            } else if !http_on && any {
                e.note("gzip is off in http but on in some locations: the others say compress = false");
            }
        }
        if any {
            if self.compression.get("types").is_none() {
                self.compression
                    .set("types", Val::List(vec![Val::Str("text/html".into())]), None)
                    .note("nginx compresses only text/html without gzip_types");
            }
            for r in &mut self.routes {
                if !r.gzip {
                    r.section
                        .set("compress", Val::Bool(false), None)
                        .note("gzip off here in nginx");
                }
            }
        }

        let votes = self.host_votes.clone();
        let nginx_vote = votes.iter().find(|(m, _)| *m == HostMode::Nginx).map(|(_, d)| *d);
        let client_vote = votes
            .iter()
            .find(|(m, _)| *m == HostMode::Client)
            .map(|(_, d)| *d);
        if let Some(d) = nginx_vote {
            self.forwarding
                .set("host_header", Val::Str("nginx".into()), Some(src(d)))
                .note("proxy_set_header Host $host: the name without the port");
            for (m, c) in &votes {
                if *m == HostMode::Client {
                    let why = format!("the gateway sends one kind of Host for every route: host_header = \"nginx\" ($host, {})", at(d));
                    self.note(c, why);
                }
            }
        } else if let Some(d) = client_vote {
            self.forwarding
                .set("host_header", Val::Str("client".into()), Some(src(d)))
                .note("proxy_set_header Host $http_host: as the client sent it, port included");
        }
        if !self.builtin.is_empty() {
            let list: Vec<String> = self.builtin.iter().map(|(n, w)| format!("{n} ({w})")).collect();
            self.forwarding.comment(format!(
                "proxy_set_header {}: built in (the gateway sends X-Real-IP, X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host on every route, and keeps upstream connections alive)",
                list.join(", ")
            ));
        }
        for u in &mut self.ups {
            if u.explicit && !u.used && u.valid {
                u.section.comment("not used by any translated route");
            }
        }
    }
}
