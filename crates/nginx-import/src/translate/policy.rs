//! The directives in front of a location → `[policies.NAME]` tables that routes name.
//!
//! - `allow` / `deny` (<https://nginx.org/en/docs/http/ngx_http_access_module.html>) →
//!   `allow = [...]`, `deny = [...]`, in nginx's order (first match decides): `deny a; allow
//!   b; deny all;` is two policies, `{ deny = [a] }` then `{ allow = [b], deny = [all] }`.
//! - `limit_req_zone KEY zone=N:SIZE rate=Rr/s` + `limit_req zone=N burst=B nodelay`
//!   (<https://nginx.org/en/docs/http/ngx_http_limit_req_module.html>) → `rate_limit = {
//!   rate = "R/s", burst = B, key }`, one policy per zone (routes naming it share its
//!   buckets, as locations share a zone).
//! - `auth_basic` + `auth_basic_user_file`
//!   (<https://nginx.org/en/docs/http/ngx_http_auth_basic_module.html>) → `basic_auth`.
//! - `auth_request` (<https://nginx.org/en/docs/http/ngx_http_auth_request_module.html>) →
//!   `forward_auth = { url, copy_headers }`.
//! - `proxy_set_header` beyond the built-in ones, `proxy_hide_header`, and `add_header`
//!   values with variables → `request_headers` / `response_headers`.
//!
//! Policies with the same content are one policy.

use super::route::{AuthMap, Plan};
use super::{at, eff1, eff_all, src, values, Tr};
use crate::emit::{self, Section, Val};
use crate::parse::Directive;

/// `rate=10r/s` → `10/s`.
fn rate(a: &str) -> Option<String> {
    let (n, unit) = a.strip_prefix("rate=")?.split_once("r/")?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && n != "0" && matches!(unit, "s" | "m"))
        .then(|| format!("{n}/{unit}"))
}

/// The `rate_limit` key of a `limit_req_zone` key: `None` for the client address.
fn zone_key(k: &str) -> Result<Option<String>, String> {
    match k {
        "$binary_remote_addr" | "$remote_addr" => Ok(None),
        _ => match k.strip_prefix("$http_") {
            Some(h) if !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
                Ok(Some(format!("header:{}", values::header_name(h))))
            }
            _ => Err(format!(
                "the key {k}: the gateway counts by client address ($binary_remote_addr) or by one request header ($http_NAME)"
            )),
        },
    }
}

/// A policy name out of `base`: kept when it is a plain key, else made one.
fn policy_base(base: &str) -> String {
    if !base.is_empty()
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        base.to_owned()
    } else {
        let s = values::slug(base);
        if s.is_empty() {
            "policy".to_owned()
        } else {
            s
        }
    }
}

impl<'a> Tr<'a> {
    /// A policy: an existing one with the same keys and values, or a new one named after
    /// `base`.
    pub(super) fn add_policy(&mut self, base: &str, mut sec: Section) -> String {
        let content = sec.content();
        if let Some(i) = self.policies.iter().position(|(_, s)| s.content() == content) {
            let comments = std::mem::take(&mut sec.comments);
            let (name, existing) = &mut self.policies[i];
            for c in comments {
                existing.comment(c);
            }
            return name.clone();
        }
        let name = values::unique(&policy_base(base), &mut self.policy_names);
        sec.header = format!("policies.{}", emit::key(&name));
        self.policies.push((name.clone(), sec));
        name
    }

    /// `allow` / `deny` in effect → one or two policies.
    pub(super) fn access_policies(&mut self, chain: &[&'a [Directive]], base: &str) -> Vec<String> {
        let rules = eff_all(chain, &["allow", "deny"]);
        if rules.is_empty() {
            return Vec::new();
        }
        for d in &rules {
            self.mark(d);
        }
        if let Some(bad) = rules
            .iter()
            .find(|d| d.args.len() != 1 || !values::access_value_ok(d.arg(0)))
        {
            self.note(bad, "not an address, a network or `all`: this location's allow/deny rules are not translated, so its routes are open to every client");
            return Vec::new();
        }
        let allow: Vec<bool> = rules.iter().map(|d| d.name == "allow").collect();
        let groups: Vec<Vec<&'a Directive>> = match allow.iter().position(|a| *a) {
            None => vec![rules.clone()],
            Some(fa) => {
                let fd = allow[fa..]
                    .iter()
                    .position(|a| !*a)
                    .map_or(rules.len(), |i| i + fa);
                if let Some(i) = allow[fd..].iter().position(|a| *a) {
                    self.note(
                        rules[fd + i],
                        "an allow after a deny after an allow: policies cannot keep this order (each passes the clients it allows on to the next); these rules are not translated, so the routes are open to every client",
                    );
                    return Vec::new();
                }
                if fa == 0 {
                    vec![rules.clone()]
                } else {
                    vec![rules[..fa].to_vec(), rules[fa..].to_vec()]
                }
            }
        };
        let mut names = Vec::new();
        for g in groups {
            let mut sec = Section::default();
            let text: Vec<String> = g.iter().map(|d| format!("{} {};", d.name, d.arg(0))).collect();
            let first = g.first().map(|d| at(d)).unwrap_or_default();
            sec.comment(format!("{first}: {}", text.join(" ")));
            // Runs of one kind, in order: at most one `deny` run, or an `allow` run then a
            // `deny` run (TOML allows each key once; the gateway keeps their order).
            let mut runs: Vec<(&str, Vec<Val>)> = Vec::new();
            for d in &g {
                let v = Val::Str(d.arg(0).to_owned());
                let same = runs.last().is_some_and(|(k, _)| *k == d.name);
                if same {
                    if let Some((_, list)) = runs.last_mut() {
                        list.push(v);
                    }
                } else {
                    runs.push((d.name.as_str(), vec![v]));
                }
            }
            for (k, list) in runs {
                sec.set(k, Val::List(list), None);
            }
            names.push(self.add_policy(&format!("{base}-access"), sec));
        }
        names
    }

    /// `limit_req` in effect → one policy per zone and burst.
    pub(super) fn rate_policies(&mut self, chain: &[&'a [Directive]]) -> Vec<String> {
        let status = eff1(chain, "limit_req_status");
        let mut names = Vec::new();
        for d in eff_all(chain, &["limit_req"]) {
            self.mark(d);
            let mut zone = None;
            let mut burst: i64 = 0;
            let mut nodelay = false;
            let mut bad = Vec::new();
            for a in &d.args {
                if let Some(z) = a.strip_prefix("zone=") {
                    zone = Some(z.to_owned());
                } else if let Some(b) = a.strip_prefix("burst=") {
                    match b.parse::<i64>() {
                        Ok(n) if (0..=1_000_000).contains(&n) => burst = n,
                        _ => bad.push(a.clone()),
                    }
                } else if a == "nodelay" {
                    nodelay = true;
                } else if !a.starts_with("delay=") {
                    bad.push(a.clone());
                }
            }
            let Some(zname) = zone else {
                self.note(d, "limit_req needs zone=NAME");
                continue;
            };
            let Some(zd) = self.zones.get(&zname).copied() else {
                self.note(
                    d,
                    format!("no limit_req_zone named {zname} in http: not translated"),
                );
                continue;
            };
            if !bad.is_empty() {
                self.note(d, format!("{} not translated", bad.join(" ")));
            }
            let key = zone_key(zd.arg(0));
            let r = zd.args.iter().find_map(|a| rate(a));
            let (key, r) = match (key, r) {
                (Ok(k), Some(r)) => (k, r),
                (Err(why), _) => {
                    self.note(zd, why);
                    continue;
                }
                (_, None) => {
                    self.note(zd, "the rate is written rate=Nr/s or rate=Nr/m");
                    continue;
                }
            };
            self.mark(zd);
            let mut pairs = vec![("rate".to_owned(), Val::Str(r))];
            if burst > 0 {
                pairs.push(("burst".to_owned(), Val::Int(burst)));
            }
            if let Some(k) = key {
                pairs.push(("key".to_owned(), Val::Str(k)));
            }
            let mut sec = Section::default();
            sec.comment(src(zd));
            sec.comment(src(d));
            sec.set("rate_limit", Val::Inline(pairs), None);
            if !nodelay {
                sec.comment("nginx delayed the requests over the rate (no `nodelay`); the gateway refuses them at once (429)");
            }
            match status {
                Some(s) if s.arg(0) == "429" => {
                    self.mark(s);
                }
                Some(s) => {
                    self.mark(s);
                    sec.comment(format!(
                        "nginx answered {} (limit_req_status); the gateway answers 429 with Retry-After",
                        s.arg(0)
                    ));
                }
                None => {
                    sec.comment("nginx answered 503 by default; the gateway answers 429 with Retry-After")
                }
            }
            names.push(self.add_policy(&zname, sec));
        }
        names
    }

    /// `auth_basic` + `auth_basic_user_file` in effect → `basic_auth`.
    pub(super) fn basic_policy(&mut self, chain: &[&'a [Directive]]) -> Option<String> {
        for d in eff_all(chain, &["auth_basic"]) {
            self.mark(d);
        }
        let ab = eff1(chain, "auth_basic")?;
        let file = eff1(chain, "auth_basic_user_file");
        if let Some(f) = file {
            self.mark(f);
        }
        if ab.arg(0) == "off" {
            return None;
        }
        let Some(file) = file else {
            self.note(ab, "auth_basic without auth_basic_user_file: not translated");
            return None;
        };
        let realm = ab.arg(0);
        if realm.contains(['"', '\\', '$']) || realm.chars().any(char::is_control) {
            self.note(ab, "the realm is sent in a quoted header: plain text without \", \\, variables or control characters");
            return None;
        }
        let path = values::no_env(&self.abs(file.arg(0)));
        let mut sec = Section::default();
        sec.comment(format!("{} + {}", src(ab), src(file)));
        sec.comment("bcrypt ($2y$) and argon2id lines only: re-create MD5 ($apr1$), {SHA} and crypt lines with `htpasswd -B`");
        sec.comment("nginx also passed Authorization to the upstream: add forward_authorization = true if it needs it");
        let pairs = vec![
            ("realm".to_owned(), Val::Str(values::no_env(realm))),
            ("htpasswd_file".to_owned(), Val::Str(path)),
        ];
        sec.set("basic_auth", Val::Inline(pairs), None);
        let base = values::slug(realm);
        Some(self.add_policy(if base.is_empty() { "auth" } else { base.as_str() }, sec))
    }

    /// `auth_request` in effect → `forward_auth`.
    pub(super) fn forward_policy(
        &mut self,
        chain: &[&'a [Directive]],
        auth: &AuthMap,
        copy: &[String],
    ) -> Option<String> {
        for d in eff_all(chain, &["auth_request"]) {
            self.mark(d);
        }
        let ar = eff1(chain, "auth_request")?;
        if ar.arg(0) == "off" {
            return None;
        }
        let url = match auth.get(ar.arg(0)) {
            Some(Ok(url)) => url.clone(),
            Some(Err(why)) => {
                self.note(ar, why.clone());
                return None;
            }
            None => {
                self.note(ar, "no location of this server answers this URI: not translated");
                return None;
            }
        };
        let mut pairs = vec![("url".to_owned(), Val::Str(values::no_env(&url)))];
        if !copy.is_empty() {
            pairs.push((
                "copy_headers".to_owned(),
                Val::List(copy.iter().map(|h| Val::Str(h.clone())).collect()),
            ));
        }
        let mut sec = Section::default();
        sec.comment(src(ar));
        sec.comment("a 2xx lets the request through; any other answer (401, a 302 to the login page) goes to the client as it is");
        sec.set("forward_auth", Val::Inline(pairs), None);
        Some(self.add_policy("forward-auth", sec))
    }

    /// Request and response header rules → one policy.
    pub(super) fn header_policy(
        &mut self,
        base: &str,
        plan: &Plan<'a>,
        resp_set: &[(String, String, &'a Directive)],
        resp_remove: &[(String, &'a Directive)],
    ) -> Option<String> {
        if plan.set.is_empty() && plan.remove.is_empty() && resp_set.is_empty() && resp_remove.is_empty() {
            return None;
        }
        let mut sec = Section::default();
        let rules = |set: &[(String, String, &'a Directive)], remove: &[(String, &'a Directive)]| {
            let mut t = Vec::new();
            if !set.is_empty() {
                let pairs = set
                    .iter()
                    .map(|(n, v, _)| (n.clone(), Val::Str(values::no_env(v))))
                    .collect();
                t.push(("set".to_owned(), Val::Inline(pairs)));
            }
            if !remove.is_empty() {
                t.push((
                    "remove".to_owned(),
                    Val::List(remove.iter().map(|(n, _)| Val::Str(n.clone())).collect()),
                ));
            }
            t
        };
        for (n, v, d) in &plan.set {
            if n == "Host" && d.name == "proxy_pass" {
                sec.comment(format!(
                    "{}: no proxy_set_header Host: nginx sent `Host: {v}` ($proxy_host)",
                    at(d)
                ));
            } else {
                sec.comment(src(d));
            }
        }
        for (_, d) in plan.remove.iter().chain(resp_remove.iter()) {
            sec.comment(src(d));
        }
        for (_, _, d) in resp_set {
            sec.comment(src(d));
        }
        if !plan.set.is_empty() || !plan.remove.is_empty() {
            sec.set(
                "request_headers",
                Val::Inline(rules(plan.set.as_slice(), plan.remove.as_slice())),
                None,
            );
        }
        if !resp_set.is_empty() || !resp_remove.is_empty() {
            sec.set(
                "response_headers",
                Val::Inline(rules(resp_set, resp_remove)),
                None,
            );
        }
        let only_host =
            plan.remove.is_empty() && resp_set.is_empty() && resp_remove.is_empty() && plan.set.len() == 1;
        let name = match plan.set.first() {
            Some((n, v, _)) if only_host && n == "Host" => format!("host-{}", values::slug(v)),
            _ => format!("{base}-headers"),
        };
        Some(self.add_policy(&name, sec))
    }
}
