//! `[policies.NAME]` and `[errors]`: every value checked here, so that the data plane never
//! meets one it would have to drop.

use super::{closest, is_token_byte, valid_field_value, Ctx};
use crate::file::{self, S};
use crate::model::*;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::time::Duration;

pub(super) fn policies(cx: &mut Ctx<'_>, map: &BTreeMap<String, Spanned<file::Policy>>) -> Vec<Policy> {
    let mut out = Vec::new();
    for (name, p) in map {
        let at = p.span().start;
        let p = p.get_ref();
        let empty = p.basic_auth.is_none()
            && p.forward_auth.is_none()
            && p.allow.is_none()
            && p.deny.is_none()
            && p.rate_limit.is_none()
            && p.request_headers.is_none()
            && p.response_headers.is_none();
        if empty {
            cx.err::<()>(at, format!("policy `{name}` does nothing: give it basic_auth, forward_auth, allow/deny, rate_limit, request_headers or response_headers"));
        }
        out.push(Policy {
            name: name.clone(),
            basic_auth: p.basic_auth.as_ref().and_then(|b| basic_auth(cx, name, b)),
            forward_auth: p.forward_auth.as_ref().and_then(|f| forward_auth(cx, f)),
            access: access(cx, p),
            rate_limit: p.rate_limit.as_ref().and_then(|r| rate_limit(cx, r)),
            request_headers: p
                .request_headers
                .as_ref()
                .map(|h| header_rules(cx, h))
                .unwrap_or_default(),
            response_headers: p
                .response_headers
                .as_ref()
                .map(|h| header_rules(cx, h))
                .unwrap_or_default(),
        });
    }
    out
}

/// The names a route lists, each a defined policy.
pub(super) fn route_policies(
    cx: &mut Ctx<'_>,
    list: &Option<Vec<S>>,
    defined: &BTreeMap<String, Spanned<file::Policy>>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in list.iter().flatten() {
        let Some(name) = cx.text(s) else { continue };
        if !defined.contains_key(&name) {
            let hint = closest(&name, defined.keys().map(String::as_str))
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_else(|| " (define it as [policies.NAME])".into());
            cx.err::<()>(
                s.span().start,
                format!("route names policy `{name}`, which is not defined{hint}"),
            );
        } else if out.contains(&name) {
            cx.err::<()>(s.span().start, format!("policy `{name}` is listed twice"));
        } else {
            out.push(name);
        }
    }
    out
}

/// `[listen] metrics_policy`: a defined policy with only `allow`/`deny` rules.
pub(super) fn metrics_policy(cx: &mut Ctx<'_>, s: &Option<S>, policies: &[Policy]) -> Option<String> {
    let s = s.as_ref()?;
    let name = cx.text(s)?;
    match policies.iter().find(|p| p.name == name) {
        None => cx.err(s.span().start, format!("metrics_policy names policy `{name}`, which is not defined")),
        Some(p) if p.access.is_empty() => cx.err(s.span().start, format!("policy `{name}` has no allow/deny rules to guard the metrics listener")),
        Some(p) if p.basic_auth.is_some() || p.forward_auth.is_some() || p.rate_limit.is_some() || !p.request_headers.is_empty() || !p.response_headers.is_empty() => cx.err(
            s.span().start,
            format!("the metrics listener applies only allow/deny: policy `{name}` has other rules (give the metrics listener a policy of its own)"),
        ),
        Some(_) => Some(name),
    }
}

fn basic_auth(cx: &mut Ctx<'_>, policy: &str, b: &Spanned<file::BasicAuth>) -> Option<BasicAuth> {
    let at = b.span().start;
    let b = b.get_ref();
    let mut users = Vec::new();
    for s in b.users.iter().flatten() {
        let Some(line) = cx.text(s) else { continue };
        match htpasswd_line(&line) {
            Ok(Some(u)) => users.push(u),
            Ok(None) => {}
            Err(why) => {
                cx.err::<()>(s.span().start, why);
            }
        }
    }
    let htpasswd_file = b.htpasswd_file.as_ref().and_then(|s| cx.path(s));
    if let (Some(path), Some(s)) = (&htpasswd_file, &b.htpasswd_file) {
        match std::fs::read_to_string(path) {
            Err(e) => {
                cx.err::<()>(
                    s.span().start,
                    format!("cannot read the htpasswd file {}: {e}", path.display()),
                );
            }
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    match htpasswd_line(line) {
                        Ok(Some(u)) => users.push(u),
                        Ok(None) => {}
                        Err(why) => {
                            cx.err::<()>(s.span().start, format!("{}:{}: {why}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
    }
    if b.users.is_none() && b.htpasswd_file.is_none() {
        return cx.err(
            at,
            "basic_auth needs `users = [\"name:hash\"]` or `htpasswd_file`",
        );
    }
    let realm = match &b.realm {
        None => policy.to_owned(),
        Some(s) => {
            let r = cx.text(s)?;
            if r.contains('"') || r.contains('\\') || !valid_field_value(&r) {
                return cx.err(
                    s.span().start,
                    "the realm is sent in a quoted header value: no `\"`, `\\` or control characters",
                );
            }
            r
        }
    };
    Some(BasicAuth {
        realm,
        users,
        htpasswd_file,
        forward_authorization: b.forward_authorization.unwrap_or(false),
    })
}

/// One `user:hash` line as `htpasswd` writes it (empty and `#` lines skipped). Only hashes
/// that are safe to keep are accepted: bcrypt (`htpasswd -B`) and argon2id.
pub(crate) fn htpasswd_line(line: &str) -> Result<Option<(String, String)>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let Some((user, hash)) = line.split_once(':') else {
        return Err("a user is written `name:hash` (as `htpasswd -nB name` prints it)".into());
    };
    if user.is_empty() || user.bytes().any(|b| b.is_ascii_control()) {
        return Err("the user name is empty or has control characters".into());
    }
    let bcrypt = ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p));
    if bcrypt {
        // `$2y$10$` + 22 characters of salt + 31 of hash.
        let cost = hash.get(4..6).and_then(|c| c.parse::<u32>().ok());
        if hash.len() != 60
            || hash.as_bytes().get(6) != Some(&b'$')
            || !cost.is_some_and(|c| (4..=31).contains(&c))
        {
            return Err(format!(
                "the bcrypt hash of `{user}` is malformed (expected `$2y$NN$` and 53 characters)"
            ));
        }
        return Ok(Some((user.to_owned(), hash.to_owned())));
    }
    if hash.starts_with("$argon2id$") {
        if hash.split('$').count() != 6 {
            return Err(format!("the argon2id hash of `{user}` is malformed (expected `$argon2id$v=19$m=...,t=...,p=...$salt$hash`)"));
        }
        return Ok(Some((user.to_owned(), hash.to_owned())));
    }
    let what = if hash.starts_with("$apr1$") || hash.starts_with("$1$") {
        "an MD5-crypt hash"
    } else if hash.starts_with("{SHA}") {
        "an unsalted SHA-1 hash"
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        "a SHA-crypt hash"
    } else if hash.starts_with("$argon2") {
        "an argon2 hash other than argon2id"
    } else {
        "a plaintext password or an unknown hash"
    };
    Err(format!(
        "the password of `{user}` is {what}, which is refused: use bcrypt (`htpasswd -nB {user}`) or argon2id"
    ))
}

fn forward_auth(cx: &mut Ctx<'_>, f: &Spanned<file::ForwardAuth>) -> Option<ForwardAuth> {
    let f = f.get_ref();
    let url = cx.text(&f.url)?;
    let at = f.url.span().start;
    let Some(rest) = url.strip_prefix("http://") else {
        return cx.err(at, format!("forward_auth url `{url}` must be `http://host:port/path` (the auth service on the private network)"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    let (host, port) = match super::parse_authority(authority) {
        Ok((h, p)) => (h, p),
        Err(_) if !authority.contains(':') && !authority.is_empty() => (authority.to_owned(), 80),
        Err(m) => return cx.err(at, format!("forward_auth url `{url}`: {m}")),
    };
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return cx.err(
            at,
            format!("forward_auth url `{url}` has spaces or control characters in its path"),
        );
    }
    let mut copy_headers = Vec::new();
    for s in f.copy_headers.iter().flatten() {
        let Some(h) = cx.text(s) else { continue };
        if h.is_empty() || !h.bytes().all(is_token_byte) {
            cx.err::<()>(s.span().start, format!("`{h}` is not a valid header name"));
        } else if framing_header(&h) || h.eq_ignore_ascii_case("host") {
            cx.err::<()>(s.span().start, format!("`{h}` cannot be copied from the auth answer: the gateway sets it for the proxied request"));
        } else {
            copy_headers.push(h);
        }
    }
    let timeout = cx.positive_duration(&f.timeout, Duration::from_secs(5), "forward_auth timeout");
    Some(ForwardAuth {
        url,
        host,
        port,
        path,
        copy_headers,
        timeout,
    })
}

fn access(cx: &mut Ctx<'_>, p: &file::Policy) -> Vec<AccessRule> {
    // The two keys in the order they appear in the file: `deny` before `allow` is checked first.
    let mut lists: Vec<(bool, &Spanned<Vec<S>>)> = Vec::new();
    if let Some(a) = &p.allow {
        lists.push((true, a));
    }
    if let Some(d) = &p.deny {
        lists.push((false, d));
    }
    lists.sort_by_key(|(_, l)| l.span().start);
    let mut out = Vec::new();
    for (allow, list) in lists {
        if list.get_ref().is_empty() {
            cx.err::<()>(
                list.span().start,
                "an empty list: write the addresses and networks, or `all`",
            );
        }
        for s in list.get_ref() {
            let Some(t) = cx.text(s) else { continue };
            let net = if t == "all" {
                None
            } else if let Ok(n) = t.parse::<ipnet::IpNet>() {
                if n.network() != n.addr() {
                    cx.err::<()>(
                        s.span().start,
                        format!("`{t}` has host bits set: write the network `{}`", n.trunc()),
                    );
                    continue;
                }
                Some(n)
            } else if let Ok(a) = t.parse::<std::net::IpAddr>() {
                Some(ipnet::IpNet::from(a))
            } else {
                cx.err::<()>(s.span().start, format!("`{t}` is not an IP address, a network such as `10.0.0.0/8` or `2001:db8::/32`, or `all`"));
                continue;
            };
            out.push(if allow {
                AccessRule::Allow(net)
            } else {
                AccessRule::Deny(net)
            });
        }
    }
    out
}

fn rate_limit(cx: &mut Ctx<'_>, r: &Spanned<file::RateLimit>) -> Option<RateLimit> {
    let r = r.get_ref();
    let text = cx.text(&r.rate)?;
    let at = r.rate.span().start;
    let bad = || {
        format!(
            "rate `{text}` is written `N/s`, `N/m` or `N/h` (requests per second, minute or hour), N above 0"
        )
    };
    let Some((n, unit)) = text.split_once('/') else {
        return cx.err(at, bad());
    };
    let n: f64 = match n.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => v,
        _ => return cx.err(at, bad()),
    };
    let per_second = match unit.trim() {
        "s" => n,
        "m" => n / 60.0,
        "h" => n / 3600.0,
        _ => return cx.err(at, bad()),
    };
    let burst = match &r.burst {
        None => 0,
        Some(b) => match u32::try_from(*b.get_ref()) {
            Ok(v) if v <= 1_000_000 => v,
            _ => return cx.err(b.span().start, "burst is a number of requests from 0 to 1000000"),
        },
    };
    let key = match &r.key {
        None => RateKey::Client,
        Some(s) => {
            let k = cx.text(s)?;
            match k.strip_prefix("header:") {
                _ if k == "client" => RateKey::Client,
                Some(h) if !h.is_empty() && h.bytes().all(is_token_byte) => {
                    RateKey::Header(h.to_ascii_lowercase())
                }
                _ => return cx.err(s.span().start, format!("key `{k}` is `client` or `header:NAME`")),
            }
        }
    };
    Some(RateLimit {
        per_second,
        burst,
        key,
    })
}

/// Fields the gateway sets itself for the message's framing and its hops (RFC 9110 §7.6.1,
/// RFC 9112 §6): a header rule or `copy_headers` that set them could put `Content-Length`
/// and `Transfer-Encoding` on one message (request smuggling) or drop a body.
const FRAMING: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

fn framing_header(name: &str) -> bool {
    FRAMING.iter().any(|f| f.eq_ignore_ascii_case(name))
}

fn header_rules(cx: &mut Ctx<'_>, h: &Spanned<file::HeaderRules>) -> HeaderRules {
    let h = h.get_ref();
    let mut rules = HeaderRules::default();
    for s in h.remove.iter().flatten() {
        let Some(n) = cx.text(s) else { continue };
        if n.is_empty() || !n.bytes().all(is_token_byte) {
            cx.err::<()>(s.span().start, format!("`{n}` is not a valid header name"));
        } else if framing_header(&n) {
            cx.err::<()>(s.span().start, format!("`{n}` frames the message or belongs to one hop: the gateway sets it, a header rule may not"));
        } else {
            rules.remove.push(n.to_ascii_lowercase());
        }
    }
    for (name, value) in h.set.iter().flatten() {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            cx.err::<()>(value.span().start, format!("`{name}` is not a valid header name"));
            continue;
        }
        if framing_header(name) {
            cx.err::<()>(value.span().start, format!("`{name}` frames the message or belongs to one hop: the gateway sets it, a header rule may not"));
            continue;
        }
        let Some(v) = cx.text(value) else { continue };
        match template(&v) {
            Ok(parts) if valid_field_value(&v) => rules.set.push((name.clone(), parts)),
            Ok(_) => {
                cx.err::<()>(value.span().start, format!("the value of header `{name}` contains a control character, which no HTTP field may carry (RFC 9110 §5.5)"));
            }
            Err(m) => {
                cx.err::<()>(value.span().start, m);
            }
        }
    }
    rules
}

/// `X-Prefix: $prefix` → text and variables of [`HeaderVar`] (`$name`; `${NAME}` is the
/// environment, expanded before). A `$` not followed by a letter is kept as it is.
fn template(v: &str) -> Result<Vec<TemplatePart>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = v;
    while let Some(i) = rest.find('$') {
        text.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let e = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let (name, tail) = (&after[..e], &after[e..]);
        if name.is_empty() {
            text.push('$');
            rest = after;
            continue;
        }
        let Some((_, var)) = HeaderVar::ALL.iter().find(|(n, _)| *n == name) else {
            let names: Vec<String> = HeaderVar::ALL.iter().map(|(n, _)| format!("${n}")).collect();
            return Err(format!(
                "unknown variable `${name}` in a header value; known: {}",
                names.join(", ")
            ));
        };
        if !text.is_empty() {
            parts.push(TemplatePart::Text(std::mem::take(&mut text)));
        }
        parts.push(TemplatePart::Var(*var));
        rest = tail;
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(TemplatePart::Text(text));
    }
    Ok(parts)
}

/// `[errors] pages`: an existing directory.
pub(super) fn error_pages(cx: &mut Ctx<'_>, e: &file::Errors) -> Option<std::path::PathBuf> {
    let s = e.pages.as_ref()?;
    let dir = cx.path(s)?;
    if !dir.is_dir() {
        return cx.err(
            s.span().start,
            format!(
                "{} is not a directory (the custom error pages: 404.html, 502.html...)",
                dir.display()
            ),
        );
    }
    Some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_lines() {
        let ok = "alice:$2y$05$abcdefghijklmnopqrstuu5Z8yI0Tk4l3S8Q6rLhJm9pV6j6Y2a2C";
        assert_eq!(ok.len() - "alice:".len(), 60);
        assert!(htpasswd_line(ok).unwrap().is_some());
        assert!(htpasswd_line("# comment").unwrap().is_none());
        assert!(htpasswd_line("bob:$apr1$x$y").unwrap_err().contains("MD5-crypt"));
        assert!(htpasswd_line("bob:secret").unwrap_err().contains("plaintext"));
        assert!(htpasswd_line("bob:{SHA}abc").unwrap_err().contains("SHA-1"));
        assert!(
            htpasswd_line("carol:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn templates() {
        assert_eq!(
            template("p=$prefix;$host $").unwrap(),
            vec![
                TemplatePart::Text("p=".into()),
                TemplatePart::Var(HeaderVar::Prefix),
                TemplatePart::Text(";".into()),
                TemplatePart::Var(HeaderVar::Host),
                TemplatePart::Text(" $".into()),
            ]
        );
        assert!(template("$nope").unwrap_err().contains("unknown variable"));
    }
}
