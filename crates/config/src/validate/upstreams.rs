//! `[upstreams.NAME]`: servers, balancing, passive and active health, next-upstream rules.
//! Each rule here is one of nginx's (`upstream`, `server`, `proxy_next_upstream*`), and a
//! value `check` accepts is one the data plane uses as written.

use super::{valid_hostname, Ctx};
use crate::file::{self, S};
use crate::model::*;
use serde_spanned::Spanned;
use std::collections::{BTreeMap, HashSet};
use std::ops::RangeInclusive;
use std::time::Duration;

/// `host:port` (`[v6]:port`), no scheme. The host is lower-cased.
pub(super) fn parse_authority(t: &str) -> Result<(String, u16), String> {
    if t.contains("://") {
        return Err(format!(
            "write the upstream as `host:port` without a scheme, not `{t}`"
        ));
    }
    let (host, port) = if let Some(rest) = t.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| format!("`{t}` is not `[ipv6]:port`"))?;
        (h.to_owned(), p)
    } else {
        let (h, p) = t
            .rsplit_once(':')
            .ok_or_else(|| format!("`{t}` has no port; write `host:port` such as `api:3001`"))?;
        (h.to_ascii_lowercase(), p)
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("`{port}` is not a port (1-65535)"))?;
    if host.parse::<std::net::IpAddr>().is_err() && !valid_hostname(&host) {
        return Err(format!("`{host}` is not a host name or IP address"));
    }
    Ok((host, port))
}

pub(super) fn upstreams(cx: &mut Ctx<'_>, ups: &BTreeMap<String, Spanned<file::Upstream>>) -> Vec<Upstream> {
    let mut out = Vec::new();
    for (name, u) in ups {
        let at = u.span().start;
        let u = u.get_ref();
        if name.is_empty() {
            cx.err::<()>(at, "an upstream needs a name");
        }
        let Some(servers) = servers(cx, name, at, u) else {
            continue;
        };
        let balance = balance(cx, u);
        if matches!(balance, Balance::Hash(_)) {
            if let Some(list) = &u.servers {
                if servers.iter().any(|s| s.backup) {
                    // nginx: "invalid parameter backup" with `hash`: a key's server would
                    // change whenever a backup joins or leaves.
                    cx.err::<()>(list.span().start, format!("upstream `{name}`: `backup` servers cannot be used with balance = \"hash\" (as in nginx): a key would move whenever a backup joins or leaves"));
                }
            }
        }
        let tries = u.next_upstream_tries.as_ref().map(|_| {
            cx.int(
                &u.next_upstream_tries,
                1,
                MAX_TRIES as i64,
                "next_upstream_tries",
                1,
            ) as u32
        });
        out.push(Upstream {
            name: name.clone(),
            servers,
            balance,
            max_fails: cx.int(&u.max_fails, 0, 1000, "max_fails", 1) as u32,
            fail_timeout: cx.positive_duration(&u.fail_timeout, Duration::from_secs(10), "fail_timeout"),
            health_check: u.health_check.as_ref().and_then(|h| health_check(cx, h)),
            next_upstream: next_upstream(cx, &u.next_upstream),
            next_upstream_tries: tries,
            next_upstream_timeout: cx.duration(&u.next_upstream_timeout, Duration::ZERO),
            keepalive: cx.int(&u.keepalive, 0, 100_000, "keepalive", 32) as usize,
            proxy_protocol: match &u.proxy_protocol {
                None => None,
                Some(s) => match cx.text(s).as_deref() {
                    Some("v1") => Some(SendProxy::V1),
                    Some("v2") => Some(SendProxy::V2),
                    Some(other) => cx.err(
                        s.span().start,
                        format!("proxy_protocol is \"v1\" or \"v2\" (the header sent to the servers, HAProxy's send-proxy and send-proxy-v2), not `{other}`"),
                    ),
                    None => None,
                },
            },
            timeouts: Timeouts {
                connect: cx.duration(&u.connect_timeout, Duration::from_secs(10)),
                read: cx.duration(&u.read_timeout, Duration::from_secs(60)),
                write: cx.duration(&u.write_timeout, Duration::from_secs(60)),
                idle: cx.duration(&u.idle_timeout, Duration::from_secs(60)),
            },
        });
    }
    out
}

/// `address` or `servers` (one of the two), each entry checked; no duplicates.
fn servers(cx: &mut Ctx<'_>, name: &str, at: usize, u: &file::Upstream) -> Option<Vec<UpstreamServer>> {
    let one = |cx: &mut Ctx<'_>, text: &str, at: usize, weight: u32, backup: bool| match parse_authority(text)
    {
        Ok((host, port)) => Some(UpstreamServer {
            host,
            port,
            weight,
            backup,
        }),
        Err(m) => cx.err(at, m),
    };
    match (&u.address, &u.servers) {
        (Some(_), Some(list)) => cx.err(
            list.span().start,
            format!("upstream `{name}` has both `address` and `servers`: keep one (`address` is one server)"),
        ),
        (None, None) if cx.blanked.iter().any(|k| k == "servers" || k == "address") => None,
        (None, None) => cx.err(
            at,
            format!(
                "upstream `{name}` has no server: give it `address = \"host:port\"` or `servers = [...]`"
            ),
        ),
        (Some(a), None) => {
            let t = cx.text(a)?;
            Some(vec![one(cx, &t, a.span().start, 1, false)?])
        }
        (None, Some(list)) => {
            if list.get_ref().is_empty() {
                return cx.err(
                    list.span().start,
                    format!("upstream `{name}`: `servers` is empty"),
                );
            }
            let mut out = Vec::new();
            let mut seen = HashSet::new();
            let mut ok = true;
            for entry in list.get_ref() {
                let at = entry.span().start;
                let (text, weight, backup) = match entry.get_ref() {
                    file::ServerEntry::Address(a) => (a.clone(), None, false),
                    file::ServerEntry::Table(t) => (t.address.clone(), t.weight, t.backup.unwrap_or(false)),
                };
                let text = match crate::values::expand_env(&text, cx.env) {
                    Ok(t) => t,
                    Err(m) => {
                        ok = false;
                        cx.err::<()>(at, m);
                        continue;
                    }
                };
                let weight = match weight {
                    None => 1,
                    Some(w) if (1..=1000).contains(&w) => w as u32,
                    Some(w) => {
                        ok = false;
                        cx.err::<()>(at, format!("weight must be between 1 and 1000, not {w}"));
                        continue;
                    }
                };
                let Some(server) = one(cx, &text, at, weight, backup) else {
                    ok = false;
                    continue;
                };
                if !seen.insert((server.host.clone(), server.port)) {
                    ok = false;
                    cx.err::<()>(
                        at,
                        format!("upstream `{name}` lists server `{}` twice", server.authority()),
                    );
                    continue;
                }
                out.push(server);
            }
            if ok && out.iter().all(|s| s.backup) {
                return cx.err(list.span().start, format!("upstream `{name}` has only backup servers: a backup is used only when no primary server is available"));
            }
            ok.then_some(out)
        }
    }
}

fn balance(cx: &mut Ctx<'_>, u: &file::Upstream) -> Balance {
    let key = u.hash_key.as_ref().and_then(|k| hash_key(cx, k));
    let Some(b) = &u.balance else {
        if let Some(k) = &u.hash_key {
            cx.err::<()>(k.span().start, "hash_key is used only with balance = \"hash\"");
        }
        return Balance::RoundRobin;
    };
    let Some(t) = cx.text(b) else {
        return Balance::RoundRobin;
    };
    let balance = match t.as_str() {
        "round_robin" => Balance::RoundRobin,
        "least_conn" => Balance::LeastConn,
        "random" => Balance::Random,
        "hash" => match (key, &u.hash_key) {
            (Some(k), _) => return Balance::Hash(k),
            (None, Some(_)) => return Balance::RoundRobin, // its error is already reported
            (None, None) => {
                return cx
                    .err(b.span().start, "balance = \"hash\" needs hash_key = \"client\", \"uri\", \"header:NAME\" or \"cookie:NAME\"")
                    .unwrap_or(Balance::RoundRobin)
            }
        },
        other => {
            return cx
                .err(
                    b.span().start,
                    format!("unknown balance `{other}`: use \"round_robin\", \"least_conn\", \"random\" or \"hash\""),
                )
                .unwrap_or(Balance::RoundRobin)
        }
    };
    if let Some(k) = &u.hash_key {
        cx.err::<()>(k.span().start, "hash_key is used only with balance = \"hash\"");
    }
    balance
}

fn hash_key(cx: &mut Ctx<'_>, k: &S) -> Option<HashKey> {
    let t = cx.text(k)?;
    let named = |cx: &mut Ctx<'_>, what: &str, name: &str| -> Option<String> {
        if !name.is_empty() && name.bytes().all(super::is_token_byte) {
            Some(name.to_owned())
        } else {
            cx.err(k.span().start, format!("hash_key `{what}:{name}`: the {what} name must be a token (letters, digits, `-`, `_`...)"))
        }
    };
    match t.split_once(':') {
        None if t == "client" => Some(HashKey::Client),
        None if t == "uri" => Some(HashKey::Uri),
        Some(("header", name)) => named(cx, "header", name).map(|n| HashKey::Header(n.to_ascii_lowercase())),
        Some(("cookie", name)) => named(cx, "cookie", name).map(HashKey::Cookie),
        _ => cx.err(
            k.span().start,
            format!("hash_key `{t}` is not one of \"client\", \"uri\", \"header:NAME\", \"cookie:NAME\""),
        ),
    }
}

fn next_upstream(cx: &mut Ctx<'_>, list: &Option<Spanned<Vec<S>>>) -> NextUpstream {
    let Some(list) = list else {
        return NextUpstream::default();
    };
    let mut n = NextUpstream {
        error: false,
        timeout: false,
        statuses: Vec::new(),
    };
    for item in list.get_ref() {
        let Some(t) = cx.text(item) else { continue };
        match t.as_str() {
            "error" => n.error = true,
            "timeout" => n.timeout = true,
            "http_502" => n.statuses.push(502),
            "http_503" => n.statuses.push(503),
            "http_504" => n.statuses.push(504),
            "off" if list.get_ref().len() == 1 => {}
            other => {
                cx.err::<()>(item.span().start, format!("next_upstream `{other}` is not one of \"error\", \"timeout\", \"http_502\", \"http_503\", \"http_504\" (or [\"off\"] alone)"));
            }
        }
    }
    n
}

fn health_check(cx: &mut Ctx<'_>, h: &Spanned<file::HealthCheck>) -> Option<HealthCheck> {
    let h = h.get_ref();
    let path = match &h.path {
        None => "/".to_owned(),
        Some(p) => {
            let t = cx.text(p)?;
            if !t.starts_with('/') || t.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return cx.err(
                    p.span().start,
                    format!(
                        "health_check path `{t}` must start with `/` and have no spaces or control bytes"
                    ),
                );
            }
            t
        }
    };
    let interval = cx.positive_duration(&h.interval, Duration::from_secs(5), "health_check interval");
    let timeout = cx.positive_duration(&h.timeout, Duration::from_secs(2), "health_check timeout");
    if timeout > interval {
        if let Some(t) = &h.timeout {
            cx.err::<()>(
                t.span().start,
                "health_check timeout must not be longer than its interval",
            );
        }
    }
    let expect = match &h.expect {
        None => vec![200..=399],
        Some(e) => {
            let t = cx.text(e)?;
            match parse_expect(&t) {
                Some(r) => r,
                None => return cx.err(e.span().start, format!("health_check expect `{t}` is not a status or range list such as \"200-399\" or \"200,204\"")),
            }
        }
    };
    let host = match &h.host {
        None => None,
        Some(s) => {
            let t = cx.text(s)?;
            let bare =
                t.rsplit_once(':').map_or(
                    t.as_str(),
                    |(h, p)| if p.parse::<u16>().is_ok() { h } else { t.as_str() },
                );
            if !valid_hostname(&bare.to_ascii_lowercase()) && bare.parse::<std::net::IpAddr>().is_err() {
                return cx.err(
                    s.span().start,
                    format!("health_check host `{t}` is not a host name"),
                );
            }
            Some(t)
        }
    };
    Some(HealthCheck {
        path,
        interval,
        timeout,
        fails: cx.int(&h.fails, 1, 100, "health_check fails", 1) as u32,
        passes: cx.int(&h.passes, 1, 100, "health_check passes", 1) as u32,
        expect,
        host,
    })
}

/// `"200-399"`, `"200,204"`, `"200-299,301"`: statuses 100-599.
fn parse_expect(t: &str) -> Option<Vec<RangeInclusive<u16>>> {
    let status = |s: &str| s.trim().parse::<u16>().ok().filter(|c| (100..=599).contains(c));
    t.split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (status(a)?, status(b)?);
                (a <= b).then_some(a..=b)
            }
            None => status(part).map(|c| c..=c),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_expect;

    #[test]
    fn expect_lists() {
        assert_eq!(parse_expect("200-399"), Some(vec![200..=399]));
        assert_eq!(parse_expect("200,204"), Some(vec![200..=200, 204..=204]));
        assert_eq!(parse_expect("399-200"), None);
        assert_eq!(parse_expect("2xx"), None);
        assert_eq!(parse_expect("600"), None);
    }
}
