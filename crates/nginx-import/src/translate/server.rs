//! `server` blocks: listeners, names, certificates, TLS settings and the headers of every
//! response.
//!
//! - `listen` (<https://nginx.org/en/docs/http/ngx_http_core_module.html#listen>): `ssl`
//!   listeners → `[listen] https`, the others → `http` (the gateway's `:80` listener
//!   redirects to HTTPS and answers ACME challenges); `http2` and `reuseport` are built in;
//!   `0.0.0.0:P` with `[::]:P` → one `[::]:P` socket.
//! - `server_name` (<https://nginx.org/en/docs/http/server_names.html>): exact names and
//!   `*.example.com` → each route's `host`; `.example.com` → both; `_` → no host.
//! - `ssl_certificate[_key]` → `[[tls.certificates]]` (the hosts of the servers that use
//!   it); certbot's `/etc/letsencrypt/live/NAME/` → `[[acme.certificates]]`, with a note.
//! - `ssl_protocols`, `ssl_ciphers`, `ssl_session_cache`, `ssl_session_tickets`
//!   (<https://nginx.org/en/docs/http/ngx_http_ssl_module.html>) → built in or `[tls]`.
//! - `add_header` at http or server level
//!   (<https://nginx.org/en/docs/http/ngx_http_headers_module.html#add_header>) →
//!   `[security] headers` and `hsts`.

use super::global::all_named;
use super::{at, eff_all, src, values, Tr};
use crate::emit::{Section, Val};
use crate::parse::Directive;
use std::collections::HashSet;

/// One `server` block as the routes need it.
pub(super) struct ServerInfo<'a> {
    pub(super) d: &'a Directive,
    pub(super) listens: Vec<ListenInfo<'a>>,
    /// Any `ssl` listener.
    pub(super) https: bool,
    /// The route hosts of its `server_name`s (none: host-less routes).
    pub(super) hosts: Vec<String>,
    /// Names were given but none can be matched: the server is not translated.
    pub(super) skip: bool,
    pub(super) default_server: bool,
}

pub(super) struct ListenInfo<'a> {
    /// `None` for nginx's implicit `listen *:80`.
    pub(super) d: Option<&'a Directive>,
    pub(super) addr: Option<String>,
    pub(super) ssl: bool,
}

/// A certificate file pair and the servers that use it.
pub(super) struct Cert<'a> {
    cert: String,
    key: Option<String>,
    hosts: Vec<String>,
    d: &'a Directive,
    default: bool,
}

/// `/etc/letsencrypt/live/NAME/fullchain.pem` with its `privkey.pem`: certbot's NAME.
fn certbot_name(cert: &str, key: Option<&str>) -> Option<String> {
    let rest = cert.strip_prefix("/etc/letsencrypt/live/")?;
    let (name, file) = rest.split_once('/')?;
    if name.is_empty() || !matches!(file, "fullchain.pem" | "cert.pem") {
        return None;
    }
    let key_ok = key.is_none_or(|k| k == format!("/etc/letsencrypt/live/{name}/privkey.pem"));
    key_ok.then(|| name.to_owned())
}

/// Whether a `ssl_ciphers` entry is a forward-secret AEAD suite (or a TLS 1.3 one), or an
/// exclusion (`!aNULL`), which asks for nothing more.
fn aead_fs(c: &str) -> bool {
    if c.starts_with(['!', '-']) || c.starts_with('@') {
        return true;
    }
    let c = c.trim_start_matches('+');
    let tls13 = c.starts_with("TLS_AES_") || c.starts_with("TLS_CHACHA20_");
    let ecdhe = c.starts_with("ECDHE-") || c.starts_with("EECDH+");
    let aead = c.contains("GCM") || c.contains("CHACHA20");
    tls13 || (ecdhe && aead)
}

impl<'a> Tr<'a> {
    /// The `server` blocks of http, in order.
    pub(super) fn servers(&mut self, http: &'a [Directive]) -> Vec<ServerInfo<'a>> {
        let mut out = Vec::new();
        for d in http.iter().filter(|d| d.name == "server" && d.block.is_some()) {
            self.mark(d);
            let mut ssl_on = false;
            for c in d.children().iter().filter(|c| c.name == "ssl") {
                ssl_on = c.arg(0) == "on";
                self.drop(c, "`ssl on` (deprecated): this server's listeners are HTTPS");
            }
            let mut listens = Vec::new();
            let mut default_server = false;
            for l in d.children().iter().filter(|c| c.name == "listen") {
                let (info, default) = self.listen(l, ssl_on);
                default_server |= default;
                listens.push(info);
            }
            if listens.is_empty() {
                listens.push(ListenInfo {
                    d: None,
                    addr: Some("0.0.0.0:80".into()),
                    ssl: ssl_on,
                });
            }
            let https = listens.iter().any(|l| l.ssl);
            let (hosts, skip) = self.server_names(d);
            if skip {
                self.note_as(
                    d,
                    "server".into(),
                    "no server_name the gateway can match: this server's locations are not translated",
                );
                self.covered.insert(d.id);
            }
            out.push(ServerInfo {
                d,
                listens,
                https,
                hosts,
                skip,
                default_server,
            });
        }
        out
    }

    fn listen(&mut self, l: &'a Directive, ssl_on: bool) -> (ListenInfo<'a>, bool) {
        self.mark(l);
        let addr = values::listen_addr(l.arg(0));
        if addr.is_none() {
            self.note(l, "the gateway listens on an IP address and a port (`0.0.0.0:443`, `[::]:443`): a UNIX socket or a host name is not translated");
        }
        let (mut ssl, mut default) = (ssl_on, false);
        let mut unsupported = Vec::new();
        for p in l.args.iter().skip(1) {
            match p.as_str() {
                "ssl" => ssl = true,
                "http2" | "reuseport" => {}
                "default_server" | "default" => default = true,
                p if p.starts_with("ipv6only=") => {}
                "quic" | "http3" => unsupported.push(format!("{p} (no HTTP/3)")),
                "proxy_protocol" => {
                    unsupported.push("proxy_protocol (the PROXY protocol header is not read)".into())
                }
                other => unsupported.push(other.to_owned()),
            }
        }
        if !unsupported.is_empty() {
            self.note(l, format!("not translated: {}", unsupported.join(", ")));
        }
        (
            ListenInfo {
                d: Some(l),
                addr,
                ssl,
            },
            default,
        )
    }

    /// The route hosts of a server, and whether names were given but none is usable.
    fn server_names(&mut self, d: &'a Directive) -> (Vec<String>, bool) {
        let mut hosts: Vec<String> = Vec::new();
        let mut given = false;
        for sn in d.children().iter().filter(|c| c.name == "server_name") {
            self.mark(sn);
            let mut bad = Vec::new();
            for n in &sn.args {
                let n = n.to_ascii_lowercase();
                if n == "_" || n.is_empty() {
                    continue;
                }
                given = true;
                let mut add = |h: String| {
                    if !hosts.contains(&h) {
                        hosts.push(h);
                    }
                };
                if let Some(rest) = n.strip_prefix('.').filter(|r| values::valid_host(r)) {
                    add(rest.to_owned());
                    add(format!("*.{rest}"));
                } else if n.strip_prefix("*.").is_some_and(values::valid_host) || values::valid_host(&n) {
                    add(n);
                } else {
                    bad.push(n);
                }
            }
            if !bad.is_empty() {
                let why = format!(
                    "{}: the gateway matches exact names and `*.example.com` (no regular expressions, `www.example.*` or variables)",
                    bad.join(", ")
                );
                self.note(sn, why);
            }
        }
        let skip = given && hosts.is_empty();
        (hosts, skip)
    }

    /// `[listen] http` and `https` from every server's listeners.
    pub(super) fn listeners(&mut self, servers: &[ServerInfo<'a>]) {
        if servers.is_empty() {
            return;
        }
        let (mut https, mut http) = (Vec::new(), Vec::new());
        for s in servers {
            for l in &s.listens {
                if let Some(a) = &l.addr {
                    let list = if l.ssl { &mut https } else { &mut http };
                    list.push((a.clone(), l.d));
                }
            }
        }
        if let Some((addr, from, comment)) = self.pick(&https, "HTTPS") {
            let e = self.listen.set("https", Val::Str(addr), from);
            if let Some(c) = comment {
                e.note(c);
            }
            if servers
                .iter()
                .flat_map(|s| &s.listens)
                .any(|l| l.d.is_some_and(|d| d.args.iter().any(|a| a == "http2")))
            {
                e.note("listen ... http2: HTTP/2 and HTTP/1.1 by ALPN (built in)");
            }
        }
        match self.pick(&http, "HTTP") {
            Some((addr, from, comment)) => {
                let e = self.listen.set("http", Val::Str(addr), from);
                e.note(
                    "301 to https://$host$request_uri for every request, except ACME challenges (built in)",
                );
                if let Some(c) = comment {
                    e.note(c);
                }
            }
            None => {
                self.listen
                    .set("http", Val::Str("off".into()), None)
                    .note("nginx had no plain-HTTP listener: no :80 redirect to HTTPS, no ACME http-01");
            }
        }
    }

    /// One address out of a kind's listeners: the first (the `[::]` one when both wildcards
    /// of a port are there); the others are noted.
    #[allow(clippy::type_complexity)]
    fn pick(
        &mut self,
        list: &[(String, Option<&'a Directive>)],
        what: &str,
    ) -> Option<(String, Option<String>, Option<String>)> {
        let (first, first_d) = list.first()?;
        let port = first.rsplit(':').next().unwrap_or("").to_owned();
        let (v4, v6) = (format!("0.0.0.0:{port}"), format!("[::]:{port}"));
        let dual = list.iter().any(|(a, _)| *a == v4) && list.iter().any(|(a, _)| *a == v6);
        let (chosen, comment) = if dual {
            let c = format!("nginx listened on {v4} and {v6}: one [::] socket takes IPv4 too (unless net.ipv6.bindv6only = 1)");
            (v6.clone(), Some(c))
        } else if first.starts_with("[::]:") {
            let c = "nginx's [::] socket took IPv6 only (ipv6only=on); the gateway's takes IPv4 too, unless net.ipv6.bindv6only = 1";
            (first.clone(), Some(c.to_owned()))
        } else {
            (first.clone(), None)
        };
        for (a, d) in list {
            let same = *a == chosen || (dual && (*a == v4 || *a == v6));
            if let (false, Some(d)) = (same, d) {
                self.note(
                    d,
                    format!("the gateway has one {what} listener ({chosen}): this address is not translated"),
                );
            }
        }
        Some((chosen, first_d.map(src), comment))
    }

    /// `ssl_protocols`, `ssl_ciphers`, `ssl_session_cache`, `ssl_session_tickets`.
    pub(super) fn tls_settings(&mut self, http: &'a [Directive], servers: &[ServerInfo<'a>]) {
        for d in all_named(http, servers, "ssl_protocols") {
            let known: HashSet<&str> = d.args.iter().map(String::as_str).collect();
            let only_modern = known.iter().all(|p| matches!(*p, "TLSv1.2" | "TLSv1.3"));
            if only_modern && known.len() == 2 {
                self.drop(d, "built in: TLS 1.2 and 1.3");
            } else if only_modern {
                self.note(d, "the gateway offers TLS 1.2 and 1.3 (rustls), both always");
            } else {
                self.note(d, "rustls offers TLS 1.2 and 1.3 only: clients that need SSLv3, TLSv1 or TLSv1.1 cannot connect");
            }
        }
        for d in all_named(http, servers, "ssl_ciphers") {
            let suites: Vec<&str> = d.arg(0).split(':').filter(|s| !s.is_empty()).collect();
            if !suites.is_empty() && suites.iter().all(|c| aead_fs(c)) {
                self.drop(
                    d,
                    "built in: forward-secret AEAD suites only (ECDHE with AES-GCM or ChaCha20-Poly1305)",
                );
            } else {
                self.note(d, "rustls offers only forward-secret AEAD suites (ECDHE with AES-GCM or ChaCha20-Poly1305): the others named here are not offered");
            }
        }
        let all = all_named(http, servers, "ssl_session_cache");
        if let Some(d) = self.global(&all, "ssl_session_cache") {
            let mut sessions: Option<i64> = None;
            for a in &d.args {
                if a == "off" || a == "none" {
                    sessions = Some(0);
                } else if let Some(size) = a.strip_prefix("shared:").and_then(|r| r.rsplit(':').next()) {
                    // nginx: one megabyte holds about 4000 sessions.
                    sessions = values::size_bytes(size).map(|b| {
                        i64::try_from(b.saturating_mul(4000) >> 20)
                            .unwrap_or(10_000_000)
                            .min(10_000_000)
                    });
                }
            }
            match sessions {
                Some(n) => {
                    self.tls
                        .set("session_cache", Val::Int(n), Some(src(d)))
                        .note("sessions kept for resumption by ID (nginx: about 4000 a megabyte)");
                }
                None => self.note(
                    d,
                    "only `shared:NAME:SIZE`, `off` or `none` translate (to [tls] session_cache)",
                ),
            }
        }
        let all = all_named(http, servers, "ssl_session_tickets");
        if let Some(d) = self.global(&all, "ssl_session_tickets") {
            self.tls
                .set("session_tickets", Val::Bool(d.arg(0) == "on"), Some(src(d)));
        }
    }

    /// `add_header` of http and the servers → `[security]`.
    pub(super) fn security_headers(&mut self, http: &'a [Directive], servers: &[ServerInfo<'a>]) {
        let targets: Vec<&ServerInfo<'a>> = servers.iter().filter(|s| s.https && !s.skip).collect();
        let targets = if targets.is_empty() {
            servers.iter().filter(|s| !s.skip).collect()
        } else {
            targets
        };
        if targets.is_empty() {
            return;
        }
        let mut headers: Vec<(String, String, &'a Directive)> = Vec::new();
        let mut hsts: Option<(String, &'a Directive)> = None;
        let mut per_server: Vec<Vec<String>> = Vec::new();
        let mut not_always = Vec::new();
        for s in &targets {
            let chain: [&'a [Directive]; 2] = [http, s.d.children()];
            let list = eff_all(&chain, &["add_header"]);
            per_server.push(list.iter().map(|d| d.arg(0).to_ascii_lowercase()).collect());
            for d in list {
                self.mark(d);
                let (name, value) = (d.arg(0), d.arg(1));
                if d.args.len() < 2 || name.is_empty() {
                    self.note(d, "add_header takes a name and a value");
                    continue;
                }
                if value.contains('$') {
                    self.note(
                        d,
                        "a variable in a header of every response: [security] headers are fixed text",
                    );
                    continue;
                }
                if !d.args.iter().skip(2).any(|a| a == "always") && !not_always.iter().any(|n| n == name) {
                    not_always.push(name.to_owned());
                }
                if name.eq_ignore_ascii_case("strict-transport-security") {
                    let prev = hsts.as_ref().map(|(v, f)| (v.clone(), at(f)));
                    match prev {
                        Some((v, first)) if v != value => {
                            let why =
                                format!("the gateway sends one Strict-Transport-Security: `{v}` ({first})");
                            self.note(d, why);
                        }
                        Some(_) => {}
                        None => hsts = Some((value.to_owned(), d)),
                    }
                    continue;
                }
                let prev = headers
                    .iter()
                    .find(|(n, ..)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v, f)| (v.clone(), at(f)));
                match prev {
                    Some((v, first)) if v != value => {
                        let why = format!("the gateway sends one {name} on every response: `{v}` ({first})");
                        self.note(d, why);
                    }
                    Some(_) => {}
                    None => headers.push((name.to_owned(), value.to_owned(), d)),
                }
            }
        }
        // The :80 redirect servers' add_header: the gateway's redirects carry [security] too.
        for s in servers
            .iter()
            .filter(|s| !targets.iter().any(|t| t.d.id == s.d.id))
        {
            let chain: [&'a [Directive]; 2] = [http, s.d.children()];
            for d in eff_all(&chain, &["add_header"]) {
                self.mark(d);
            }
        }
        let partial = per_server.iter().any(|names| {
            headers
                .iter()
                .any(|(n, ..)| !names.contains(&n.to_ascii_lowercase()))
                || (hsts.is_some() && !names.iter().any(|n| n == "strict-transport-security"))
        });
        let pairs: Vec<(String, Val)> = headers
            .iter()
            .map(|(n, v, _)| (n.clone(), Val::Str(values::no_env(v))))
            .collect();
        let e = self.security.set("headers", Val::Inline(pairs), None);
        if headers.is_empty() {
            e.note("nginx added none; without this line the gateway adds X-Frame-Options, X-Content-Type-Options and X-XSS-Protection");
        } else {
            let lines: Vec<String> = headers.iter().map(|(_, _, d)| at(d)).collect();
            e.note(format!(
                "add_header at {} (on every response: errors and redirects too)",
                lines.join(", ")
            ));
        }
        if partial {
            e.note("nginx set these on some servers only; the gateway sends them on every response");
        }
        if !not_always.is_empty() {
            e.note(format!(
                "nginx added {} to 2xx and 3xx responses only (no `always`)",
                not_always.join(", ")
            ));
        }
        if let Some((v, d)) = hsts {
            self.security
                .set("hsts", Val::Str(values::no_env(&v)), Some(src(d)));
        }
    }

    /// `ssl_certificate` and `_key` of the HTTPS servers → `[[tls.certificates]]`, or
    /// `[[acme.certificates]]` for certbot's files.
    pub(super) fn certificates(&mut self, http: &'a [Directive], servers: &[ServerInfo<'a>]) {
        let https: Vec<&ServerInfo<'a>> = servers.iter().filter(|s| s.https && !s.skip).collect();
        let default_id = https
            .iter()
            .find(|s| s.default_server)
            .or_else(|| https.first())
            .map(|s| s.d.id);
        for s in &https {
            let chain: [&'a [Directive]; 2] = [http, s.d.children()];
            let certs = eff_all(&chain, &["ssl_certificate"]);
            let keys = eff_all(&chain, &["ssl_certificate_key"]);
            for k in &keys {
                self.mark(k);
            }
            if certs.is_empty() {
                self.note_as(
                    s.d,
                    "server".into(),
                    "an HTTPS server without ssl_certificate (nginx refuses it)",
                );
                continue;
            }
            for (i, &c) in certs.iter().enumerate() {
                self.mark(c);
                if i > 0 {
                    self.note(c, "a second certificate (RSA and ECDSA side by side): the gateway serves one per name; this one is not translated");
                    continue;
                }
                let path = c.arg(0);
                if path.contains('$') || path.starts_with("data:") || path.starts_with("engine:") {
                    self.note(
                        c,
                        "variables, data: and engine: certificates are not translated: name the PEM files",
                    );
                    continue;
                }
                let cert = self.abs(path);
                let key = keys.first().map(|k| self.abs(k.arg(0)));
                let default = Some(s.d.id) == default_id;
                match self.certs.iter_mut().find(|x| x.cert == cert) {
                    Some(x) => {
                        for h in &s.hosts {
                            if !x.hosts.contains(h) {
                                x.hosts.push(h.clone());
                            }
                        }
                        x.default |= default;
                    }
                    None => self.certs.push(Cert {
                        cert,
                        key,
                        hosts: s.hosts.clone(),
                        d: c,
                        default,
                    }),
                }
            }
        }
        self.emit_certificates();
    }

    fn emit_certificates(&mut self) {
        let http_off = self.listen.get("http") == Some(&Val::Str("off".into()));
        let mut taken = HashSet::new();
        let mut default_name = None;
        let certs = std::mem::take(&mut self.certs);
        for c in &certs {
            let wildcard = c.hosts.iter().any(|h| h.starts_with("*."));
            let certbot = certbot_name(&c.cert, c.key.as_deref());
            let name = match certbot {
                Some(ref n) if !wildcard => {
                    let name = values::unique(n, &mut taken);
                    let mut sec = Section::array("acme.certificates");
                    sec.comment(format!("{} (certbot's certificate)", src(c.d)));
                    sec.set("name", Val::Str(values::no_env(&name)), None);
                    let names = if c.hosts.is_empty() {
                        vec![n.to_ascii_lowercase()]
                    } else {
                        c.hosts.clone()
                    };
                    sec.set(
                        "names",
                        Val::List(names.iter().map(|h| Val::Str(values::no_env(h))).collect()),
                        None,
                    );
                    let challenge = if http_off {
                        sec.set("challenge", Val::Str("tls-alpn-01".into()), None)
                            .note("no :80 listener: the CA validates through the HTTPS listener");
                        "tls-alpn-01 on :443"
                    } else {
                        "http-01 on :80"
                    };
                    self.acme_certs.push(sec);
                    let key = c.key.clone().unwrap_or_default();
                    let why = format!(
                        "certbot's certificate: the gateway orders and renews `{name}` itself ([[acme.certificates]], {challenge}); set [acme] email; to keep certbot instead, write [[tls.certificates]] with cert = \"{}\" and key = \"{key}\"",
                        c.cert
                    );
                    self.note(c.d, why);
                    name
                }
                _ => {
                    let base = if taken.is_empty() {
                        "main".to_owned()
                    } else {
                        c.hosts.first().map(|h| values::slug(h)).unwrap_or_default()
                    };
                    let name =
                        values::unique(if base.is_empty() { "cert" } else { base.as_str() }, &mut taken);
                    let mut sec = Section::array("tls.certificates");
                    sec.comment(src(c.d));
                    sec.set("name", Val::Str(name.clone()), None);
                    if !c.hosts.is_empty() {
                        sec.set(
                            "hosts",
                            Val::List(c.hosts.iter().map(|h| Val::Str(values::no_env(h))).collect()),
                            None,
                        );
                    }
                    sec.set("cert", Val::Str(values::no_env(&c.cert)), None);
                    match &c.key {
                        Some(k) => {
                            sec.set("key", Val::Str(values::no_env(k)), None);
                        }
                        None => {
                            sec.set("key", Val::Str(values::no_env(&c.cert)), None);
                            self.note(c.d, "no ssl_certificate_key (nginx refuses that): the key is assumed to be in the certificate's file");
                        }
                    }
                    // nginx refuses to start without the files; `gateway check` would refuse
                    // the imported file on any machine that does not have them yet.
                    sec.comment("nginx refuses to start without these files; the gateway serves a self-signed stand-in until they appear (if_missing = \"error\" refuses instead)");
                    if c.hosts.is_empty() {
                        sec.comment("server_name _: the stand-in is made for localhost; as the default certificate it is served for every name");
                        sec.set("hosts", Val::List(vec![Val::Str("localhost".into())]), None);
                    }
                    sec.set("if_missing", Val::Str("self-signed".into()), None);
                    if certbot.is_some() {
                        sec.comment("a wildcard from certbot (a DNS plugin): the gateway can order it too, with [[acme.certificates]] challenge = \"dns-01\" and an [acme.dns_providers.NAME]");
                    }
                    self.tls_certs.push(sec);
                    name
                }
            };
            if c.default || default_name.is_none() {
                default_name = Some(name);
            }
        }
        if !self.acme_certs.is_empty() {
            let mut acme = Section::new("acme");
            acme.comment(
                "Certificates ordered and renewed by the gateway from Let's Encrypt (certbot's job).",
            );
            acme.suggest(
                "email",
                Val::Str("admin@example.com".into()),
                "the CA's notices (expiry, policy changes) go to this address",
            );
            acme.suggest(
                "storage",
                Val::Str("/var/lib/gateway/certs".into()),
                "where certificates and the account live (default: certs/ next to proxy.toml)",
            );
            self.acme = Some(acme);
        }
        if let Some(n) = default_name {
            self.tls.set("default_certificate", Val::Str(n), None).note(
                "the certificate of nginx's default server (clients without SNI or with an unknown name)",
            );
        }
    }
}
