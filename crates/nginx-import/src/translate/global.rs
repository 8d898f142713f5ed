//! The main context and the `http` settings that are one value for the whole gateway:
//! `[server]`, `[limits]`, `[compression]`, `[forwarding] trusted_proxies`, `[logging]`.
//!
//! - `worker_processes N` → `threads`; `worker_shutdown_timeout` → `grace_period`
//!   (<https://nginx.org/en/docs/ngx_core_module.html>);
//! - `client_max_body_size` → `max_body` (nginx's default `1m` when http sets none; servers
//!   and locations that differ get a route `max_body`),
//!   `keepalive_timeout`, `client_header_timeout`, `client_body_timeout`, `send_timeout`,
//!   `large_client_header_buffers` → `[limits]`
//!   (<https://nginx.org/en/docs/http/ngx_http_core_module.html>);
//! - `gzip_comp_level`, `gzip_types`, `gzip_min_length` → `[compression]`
//!   (<https://nginx.org/en/docs/http/ngx_http_gzip_module.html>);
//! - `resolver ... valid=` → `[server] resolver`, `dns_refresh`;
//! - `set_real_ip_from` + `real_ip_header X-Forwarded-For` → `trusted_proxies`
//!   (<https://nginx.org/en/docs/http/ngx_http_realip_module.html>);
//! - `log_format`, `access_log`, `error_log` → `[logging]`
//!   (<https://nginx.org/en/docs/http/ngx_http_log_module.html>).
//!
//! Where servers or locations set another value, the first is translated and the others
//! are noted: the gateway has one.

use super::server::ServerInfo;
use super::{at, src, values, Tr};
use crate::emit::Val;
use crate::parse::Directive;

/// The directives named `name` at http level, then in each server and its locations.
pub(super) fn all_named<'a>(
    http: &'a [Directive],
    servers: &[ServerInfo<'a>],
    name: &str,
) -> Vec<&'a Directive> {
    let mut out: Vec<&'a Directive> = http.iter().filter(|d| d.name == name).collect();
    for s in servers {
        collect(s.d.children(), name, &mut out);
    }
    out
}

fn collect<'a>(scope: &'a [Directive], name: &str, out: &mut Vec<&'a Directive>) {
    for d in scope {
        if d.name == name {
            out.push(d);
        }
        if d.name == "location" {
            collect(d.children(), name, out);
        }
    }
}

/// A name server as `[server] resolver` takes it: an IP with an optional port.
fn resolver_addr(a: &str) -> Option<String> {
    let bare = a.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(a);
    if values::is_ip(bare) {
        return Some(bare.to_owned());
    }
    a.parse::<std::net::SocketAddr>().ok().map(|_| a.to_owned())
}

impl<'a> Tr<'a> {
    /// One setting for the whole gateway out of `all`: the first; the others that say
    /// something else are noted.
    pub(super) fn global(&mut self, all: &[&'a Directive], what: &str) -> Option<&'a Directive> {
        let first: &'a Directive = all.first().copied()?;
        for &d in all {
            if d.args == first.args {
                self.mark(d);
            } else {
                let why = format!(
                    "the gateway has one {what} for every route: `{};` ({}) is the one translated",
                    first.text(),
                    at(first)
                );
                self.note(d, why);
            }
        }
        Some(first)
    }

    /// `worker_processes`, `worker_shutdown_timeout`, `events` (its directives are dropped
    /// by the sweep: the runtime has no such settings).
    pub(super) fn main_context(&mut self, tree: &'a [Directive]) {
        for d in tree {
            match d.name.as_str() {
                "worker_processes" if d.arg(0) != "auto" => {
                    if let Ok(n) = d.arg(0).parse::<i64>() {
                        if (1..=1024).contains(&n) && d.args.len() == 1 {
                            self.server.set("threads", Val::Int(n), Some(src(d)));
                            self.mark(d);
                        }
                    }
                }
                "worker_shutdown_timeout" => {
                    if let Some(v) = values::duration(d.arg(0)) {
                        self.server
                            .set("grace_period", Val::Str(v), Some(src(d)))
                            .note("the time in-flight requests get after SIGTERM");
                        self.mark(d);
                    }
                }
                "events" => self.mark(d),
                _ => {}
            }
        }
    }

    /// `limit_req_zone` (used by routes' `limit_req`) and `log_format`.
    pub(super) fn zones_and_formats(&mut self, http: &'a [Directive]) {
        for d in http {
            match d.name.as_str() {
                "limit_req_zone" => {
                    let zone = d
                        .args
                        .iter()
                        .find_map(|a| a.strip_prefix("zone="))
                        .and_then(|z| z.split(':').next());
                    if let Some(name) = zone.filter(|n| !n.is_empty()) {
                        self.zones.insert(name.to_owned(), d);
                    }
                }
                "log_format" => self.log_format(d),
                _ => {}
            }
        }
    }

    fn log_format(&mut self, d: &'a Directive) {
        let name = d.arg(0).to_owned();
        let mut parts: Vec<&str> = d.args.iter().skip(1).map(String::as_str).collect();
        let mut escape: Option<String> = None;
        if let Some(e) = parts.first().and_then(|a| a.strip_prefix("escape=")) {
            escape = Some(e.to_owned());
            parts.remove(0);
        }
        let text: String = parts.concat();
        if name.is_empty() || name == "combined" || text.is_empty() {
            self.log_formats.insert(name, false);
            return;
        }
        let unknown = values::unknown_log_vars(&text);
        if !unknown.is_empty() {
            let vars: Vec<String> = unknown.iter().map(|v| format!("${v}")).collect();
            let why = format!(
                "the gateway's access log has no {}: this format is not translated",
                vars.join(", ")
            );
            self.note(d, why);
            self.log_formats.insert(name, false);
            return;
        }
        self.mark(d);
        let comment = format!("{}: log_format {name} ...", at(d));
        self.formats.set(&name, Val::Str(text), None).note(comment);
        if let Some(esc) = escape.filter(|e| e != "default") {
            self.note(
                d,
                format!("escape={esc}: the gateway escapes values as escape=default does"),
            );
        }
        self.log_formats.insert(name, true);
    }

    /// The http settings that are one for the gateway.
    pub(super) fn http_globals(
        &mut self,
        tree: &'a [Directive],
        http: &'a [Directive],
        servers: &[ServerInfo<'a>],
    ) {
        // client_max_body_size: http's is the default; others become routes' max_body.
        let body = http.iter().rfind(|d| d.name == "client_max_body_size");
        match body {
            Some(d) => {
                self.mark(d);
                match values::size(d.arg(0)) {
                    Some(v) => {
                        self.global_max_body = v.clone();
                        self.limits.set("max_body", Val::Str(v), Some(src(d)));
                    }
                    None => self.note(d, "not a size such as 500M or 32k"),
                }
            }
            None if !servers.is_empty() => {
                self.limits.set("max_body", Val::Str("1M".into()), None).note(
                    "nginx's default client_max_body_size 1m (http sets none); routes that set more say so",
                );
            }
            None => {}
        }

        let all = all_named(http, servers, "keepalive_timeout");
        if let Some(d) = self.global(&all, "keepalive_timeout") {
            match values::duration(d.arg(0)).filter(|v| v != "0s") {
                Some(v) => {
                    self.limits.set("keepalive_timeout", Val::Str(v), Some(src(d)));
                    if d.args.len() > 1 {
                        self.note(
                            d,
                            "the second value (a `Keep-Alive: timeout=` header) is not sent",
                        );
                    }
                }
                None => self.note(
                    d,
                    "the gateway keeps client connections alive: a duration above zero such as 65s",
                ),
            }
        }
        for (name, key) in [
            ("client_header_timeout", "header_read_timeout"),
            ("client_body_timeout", "body_read_timeout"),
            ("send_timeout", "send_timeout"),
        ] {
            let all = all_named(http, servers, name);
            if let Some(d) = self.global(&all, name) {
                match values::duration(d.arg(0)) {
                    Some(v) => {
                        self.limits.set(key, Val::Str(v), Some(src(d)));
                    }
                    None => self.note(d, "not a time such as 60s"),
                }
            }
        }
        let all = all_named(http, servers, "large_client_header_buffers");
        if let Some(d) = self.global(&all, "large_client_header_buffers") {
            match (d.arg(0).parse::<u64>().ok(), values::size_bytes(d.arg(1))) {
                (Some(n), Some(b)) if n > 0 && b > 0 => {
                    self.limits
                        .set("max_uri", Val::Str(values::bytes_text(b)), Some(src(d)))
                        .note("the request line fits one buffer (nginx: 414 beyond)");
                    if let Some(total) = n.checked_mul(b) {
                        self.limits
                            .set("max_header_bytes", Val::Str(values::bytes_text(total)), None)
                            .note("the whole head: the number of buffers times their size (431 beyond)");
                    }
                }
                _ => self.note(d, "expected a number and a size such as `4 8k`"),
            }
        }
        self.compression_globals(http, servers);
        self.resolver(http, servers);
        self.real_ip(http, servers);
        self.logging_globals(tree, http, servers);
    }

    fn compression_globals(&mut self, http: &'a [Directive], servers: &[ServerInfo<'a>]) {
        self.http_gzip = http.iter().rfind(|d| d.name == "gzip");
        if let Some(d) = self.http_gzip {
            self.mark(d);
        }
        let all = all_named(http, servers, "gzip_comp_level");
        if let Some(d) = self.global(&all, "gzip_comp_level") {
            match d.arg(0).parse::<i64>() {
                Ok(n) if (1..=9).contains(&n) => {
                    self.compression.set("level", Val::Int(n), Some(src(d)));
                }
                _ => self.note(d, "a level from 1 to 9"),
            }
        }
        let all = all_named(http, servers, "gzip_types");
        if let Some(d) = self.global(&all, "gzip_types") {
            if d.args.iter().any(|a| a == "*") {
                self.note(
                    d,
                    "`*` (every type): the gateway compresses the types listed in [compression] types",
                );
            } else {
                let mut types = vec!["text/html".to_owned()];
                for a in &d.args {
                    let t = a.to_ascii_lowercase();
                    if !types.contains(&t) {
                        types.push(t);
                    }
                }
                let list = Val::List(types.iter().map(|t| Val::Str(values::no_env(t))).collect());
                let comment = format!("{} (and text/html, which nginx always compresses)", src(d));
                self.compression.set("types", list, None).note(comment);
            }
        }
        let all = all_named(http, servers, "gzip_min_length");
        if let Some(d) = self.global(&all, "gzip_min_length") {
            match values::size(d.arg(0)) {
                Some(v) => {
                    self.compression.set("min_length", Val::Str(v), Some(src(d)));
                }
                None => self.note(d, "not a length such as 256 or 1k"),
            }
        }
    }

    fn resolver(&mut self, http: &'a [Directive], servers: &[ServerInfo<'a>]) {
        let all = all_named(http, servers, "resolver");
        let Some(d) = self.global(&all, "resolver") else {
            return;
        };
        let mut addrs = Vec::new();
        let mut bad = Vec::new();
        for a in &d.args {
            if let Some(v) = a.strip_prefix("valid=") {
                match values::duration(v) {
                    Some(t) => {
                        self.server.set("dns_refresh", Val::Str(t), Some(src(d)));
                    }
                    None => bad.push(a.clone()),
                }
            } else if let Some(addr) = resolver_addr(a) {
                addrs.push(Val::Str(addr));
            } else {
                bad.push(a.clone());
            }
        }
        if !addrs.is_empty() {
            self.server.set("resolver", Val::List(addrs), Some(src(d)));
        }
        if !bad.is_empty() {
            let why = format!(
                "{} not translated: the gateway's name servers are IP addresses with an optional port (and valid=)",
                bad.join(", ")
            );
            self.note(d, why);
        }
    }

    fn real_ip(&mut self, http: &'a [Directive], servers: &[ServerInfo<'a>]) {
        let from = all_named(http, servers, "set_real_ip_from");
        if from.is_empty() {
            return;
        }
        let header = all_named(http, servers, "real_ip_header");
        let xff = header
            .first()
            .is_some_and(|d| d.arg(0).eq_ignore_ascii_case("x-forwarded-for"));
        if !xff {
            for d in &from {
                self.note(d, "the gateway finds the client through X-Forwarded-For only ([forwarding] trusted_proxies with real_ip_header X-Forwarded-For); X-Real-IP or proxy_protocol is not translated");
            }
            return;
        }
        let _ = self.global(&header, "real_ip_header");
        let mut list = Vec::new();
        let mut first_src = None;
        for d in &from {
            let v = d.arg(0);
            if v != "all" && values::access_value_ok(v) {
                self.mark(d);
                list.push(Val::Str(v.to_owned()));
                first_src.get_or_insert_with(|| src(d));
            } else {
                self.note(d, "an address or a network (CIDR) such as 10.0.0.0/8");
            }
        }
        if !list.is_empty() {
            self.forwarding
                .set("trusted_proxies", Val::List(list), first_src)
                .note("set_real_ip_from + real_ip_header X-Forwarded-For: X-Forwarded-For is kept only from these");
        }
    }

    fn logging_globals(&mut self, tree: &'a [Directive], http: &'a [Directive], servers: &[ServerInfo<'a>]) {
        let all = all_named(http, servers, "access_log");
        if let Some(d) = self.global(&all, "access log") {
            self.access_log(d);
        }
        let mut errs = all_named(http, servers, "error_log");
        for d in tree.iter().filter(|d| d.name == "error_log") {
            if !errs.iter().any(|e| e.id == d.id) {
                errs.push(d);
            }
        }
        if let Some(d) = self.global(&errs, "error log") {
            let level = match d.args.get(1).map(String::as_str) {
                None | Some("error" | "crit" | "alert" | "emerg") => "error",
                Some("debug") => "debug",
                Some("info" | "notice") => "info",
                Some("warn") => "warn",
                Some(_) => {
                    self.note(
                        d,
                        "the level is one of debug, info, notice, warn, error, crit, alert, emerg",
                    );
                    return;
                }
            };
            let e = self.logging.set("level", Val::Str(level.into()), Some(src(d)));
            if !matches!(d.arg(0), "stderr" | "/dev/stderr" | "/proc/self/fd/2") {
                e.note("log lines go to stderr (journald, docker logs), not to nginx's file");
            }
        }
    }

    fn access_log(&mut self, d: &'a Directive) {
        let path = d.arg(0);
        if path == "off" {
            self.logging
                .set("access_log", Val::Str("off".into()), Some(src(d)));
            return;
        }
        let format = d.args.get(1).map(String::as_str).unwrap_or("combined");
        let name = if format == "combined" || self.log_formats.get(format) == Some(&true) {
            format.to_owned()
        } else {
            self.note(
                d,
                format!("the format `{format}` is not translated: the access log is `combined`"),
            );
            "combined".to_owned()
        };
        self.logging.set("access_log", Val::Str(name), Some(src(d)));
        if path.starts_with("syslog:") {
            self.note(d, "syslog: the gateway writes access lines to stdout (journald takes them) or to access_log_file");
        } else if !matches!(path, "/dev/stdout" | "/proc/self/fd/1") {
            let file = values::no_env(&self.abs(path));
            self.logging.suggest(
                "access_log_file",
                Val::Str(file),
                "nginx wrote to this file; the gateway writes to stdout unless access_log_file is set (its user must be able to write there; reopened on SIGUSR1)",
            );
        }
        let params: Vec<&str> = d.args.iter().skip(2).map(String::as_str).collect();
        if !params.is_empty() {
            self.note(
                d,
                format!(
                    "{} not translated: the gateway writes each line as the request ends",
                    params.join(" ")
                ),
            );
        }
    }
}
