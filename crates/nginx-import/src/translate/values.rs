//! nginx value syntaxes turned into `proxy.toml`'s: times, sizes, addresses, names.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

/// An nginx time (<https://nginx.org/en/docs/syntax.html>: `ms`, `s`, `m`, `h`, `d`, `w`,
/// `M` (30 days), `y` (365 days), combined as `1h 30m`; a bare number is seconds) as a
/// gateway duration: `65` → `65s`, `86400s` and `5m` kept, others in seconds.
pub(crate) fn duration(s: &str) -> Option<String> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = t.parse().ok()?;
        return Some(format!("{n}s"));
    }
    let mut total_ms: u128 = 0;
    let mut num = String::new();
    let mut parts = 0;
    let chars: Vec<char> = t.chars().collect();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c.is_ascii_digit() {
            num.push(c);
            i += 1;
            continue;
        }
        if c == ' ' {
            i += 1;
            continue;
        }
        let (unit_ms, len): (u128, usize) = match (c, chars.get(i + 1).copied()) {
            ('m', Some('s')) => (1, 2),
            ('s', _) => (1_000, 1),
            ('m', _) => (60_000, 1),
            ('h', _) => (3_600_000, 1),
            ('d', _) => (86_400_000, 1),
            ('w', _) => (7 * 86_400_000, 1),
            ('M', _) => (30 * 86_400_000, 1),
            ('y', _) => (365 * 86_400_000, 1),
            _ => return None,
        };
        let n: u128 = num.parse().ok()?;
        num.clear();
        total_ms = total_ms.checked_add(n.checked_mul(unit_ms)?)?;
        parts += 1;
        i += len;
    }
    if !num.is_empty() {
        // A trailing bare number is seconds (`1m 30`).
        let n: u128 = num.parse().ok()?;
        total_ms = total_ms.checked_add(n.checked_mul(1_000)?)?;
        parts += 1;
    }
    if parts == 0 || total_ms > u128::from(u64::MAX) {
        return None;
    }
    let simple = parts == 1 && {
        let unit = t.trim_start_matches(|c: char| c.is_ascii_digit());
        matches!(unit, "ms" | "s" | "m" | "h" | "d")
    };
    Some(if simple {
        t.to_owned()
    } else if total_ms.is_multiple_of(1000) {
        format!("{}s", total_ms / 1000)
    } else {
        format!("{total_ms}ms")
    })
}

/// An nginx size (`500m`, `32k`, `1g`, bytes) as a gateway size: `500M`, `32K`, `1G`.
pub(crate) fn size(s: &str) -> Option<String> {
    let t = s.trim();
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &t[digits.len()..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let unit = match unit {
        "" => "",
        "k" | "K" => "K",
        "m" | "M" => "M",
        "g" | "G" => "G",
        _ => return None,
    };
    Some(format!("{n}{unit}"))
}

/// An nginx size in bytes.
pub(crate) fn size_bytes(s: &str) -> Option<u64> {
    let g = size(s)?;
    let (num, mult) = if let Some(n) = g.strip_suffix('K') {
        (n, 1u64 << 10)
    } else if let Some(n) = g.strip_suffix('M') {
        (n, 1 << 20)
    } else if let Some(n) = g.strip_suffix('G') {
        (n, 1 << 30)
    } else {
        (g.as_str(), 1)
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Bytes written as the gateway reads sizes: `32K` when a whole number of KiB.
pub(crate) fn bytes_text(n: u64) -> String {
    if n > 0 && n.is_multiple_of(1 << 20) {
        format!("{}M", n >> 20)
    } else if n > 0 && n.is_multiple_of(1 << 10) {
        format!("{}K", n >> 10)
    } else {
        n.to_string()
    }
}

/// `host[:port]` or `[v6][:port]`: the host (lower case, without brackets) and the port.
pub(crate) fn authority(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        h.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (h.to_owned(), port)
    } else {
        match s.rsplit_once(':') {
            // An IPv6 address needs brackets.
            Some((h, _)) if h.contains(':') => return None,
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (s.to_ascii_lowercase(), None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0)?),
    };
    if !host.contains(':') && !valid_host(&host) {
        return None;
    }
    Some((host, port))
}

/// `host:port`, brackets around an IPv6 address.
pub(crate) fn join_authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A DNS name or IPv4 address as upstream hosts are written.
pub(crate) fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Whether `h` is an IP address (v4 or v6, without brackets).
pub(crate) fn is_ip(h: &str) -> bool {
    h.parse::<Ipv4Addr>().is_ok() || h.parse::<Ipv6Addr>().is_ok()
}

/// An nginx `listen` address (`443`, `*:80`, `127.0.0.1:8080`, `[::]:443`, `localhost`) as
/// `ip:port`; `None` for a UNIX socket or a host name.
pub(crate) fn listen_addr(a: &str) -> Option<String> {
    if a.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = a.parse().ok().filter(|p| *p > 0)?;
        return Some(format!("0.0.0.0:{port}"));
    }
    if a.starts_with("unix:") {
        return None;
    }
    // `*:80` and `*` are every IPv4 address, as nginx reads them.
    let a = match a.strip_prefix('*') {
        Some(rest) if rest.is_empty() || rest.starts_with(':') => format!("0.0.0.0{rest}"),
        _ => a.to_owned(),
    };
    let (host, port) = authority(&a)?;
    let port = port.unwrap_or(80);
    let ip = match host.as_str() {
        "localhost" => "127.0.0.1".to_owned(),
        h if is_ip(h) => h.to_owned(),
        _ => return None,
    };
    Some(join_authority(&ip, port))
}

/// A name for routes, upstreams and policies: lower-case letters, digits and `-`.
pub(crate) fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// `base`, or `base-2`, `base-3`... the first not in `taken` (then taken).
pub(crate) fn unique(base: &str, taken: &mut HashSet<String>) -> String {
    let base = if base.is_empty() { "route" } else { base };
    let mut name = base.to_owned();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    taken.insert(name.clone());
    name
}

/// A string as `proxy.toml` reads it: every string value goes through `${NAME}` expansion,
/// where `$$` is a literal `$`, so a `$` before `{` or `$` is doubled.
pub(crate) fn no_env(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        out.push(c);
        if c == '$' && matches!(it.peek(), Some('{' | '$')) {
            out.push('$');
        }
    }
    out
}

/// The variables a header rule may use (docs/configuration.md, "request_headers").
const HEADER_VARS: &[&str] = &["remote_addr", "scheme", "host", "request_id"];

/// The nginx variables in `v` (`$name`; `${name}` too).
pub(crate) fn variables(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = v;
    while let Some(i) = rest.find('$') {
        let after = &rest[i + 1..];
        let (body, braced) = match after.strip_prefix('{') {
            Some(b) => (b, true),
            None => (after, false),
        };
        let end = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        if end > 0 {
            out.push(body[..end].to_owned());
        }
        rest = if braced && body[end..].starts_with('}') {
            &body[end + 1..]
        } else {
            &body[end..]
        };
    }
    out
}

/// Whether a header value's variables are all ones the gateway's header rules know, written
/// `$name` (not `${name}`).
pub(crate) fn header_value_ok(v: &str) -> bool {
    !v.contains("${") && variables(v).iter().all(|n| HEADER_VARS.contains(&n.as_str()))
}

/// The access-log variables of docs/configuration.md (`[logging.formats]`).
const LOG_VARS: &[&str] = &[
    "remote_addr",
    "remote_port",
    "remote_user",
    "time_local",
    "time_iso8601",
    "msec",
    "request",
    "request_method",
    "server_protocol",
    "request_uri",
    "uri",
    "document_uri",
    "args",
    "query_string",
    "is_args",
    "status",
    "body_bytes_sent",
    "request_time",
    "host",
    "scheme",
    "route",
    "upstream",
    "upstream_addr",
    "ssl_protocol",
    "ssl_cipher",
    "ssl_curve",
    "request_id",
];

/// Whether the access log knows `$name` (`$http_NAME` for any NAME).
fn known_log_var(name: &str) -> bool {
    LOG_VARS.contains(&name) || name.strip_prefix("http_").is_some_and(|h| !h.is_empty())
}

/// The variables of a `log_format` the gateway cannot write.
pub(crate) fn unknown_log_vars(format: &str) -> Vec<String> {
    variables(format)
        .into_iter()
        .filter(|n| !known_log_var(n))
        .collect()
}

/// `remote_user` → `Remote-User`, the spelling of a header named by an nginx variable.
pub(crate) fn header_name(var_suffix: &str) -> String {
    var_suffix
        .split(['_', '-'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// An `allow`/`deny` value the gateway reads: `all`, an address or a network.
pub(crate) fn access_value_ok(v: &str) -> bool {
    if v == "all" || is_ip(v) {
        return true;
    }
    match v.split_once('/') {
        Some((ip, bits)) => {
            let Ok(bits) = bits.parse::<u8>() else {
                return false;
            };
            (ip.parse::<Ipv4Addr>().is_ok() && bits <= 32) || (ip.parse::<Ipv6Addr>().is_ok() && bits <= 128)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("65").as_deref(), Some("65s"));
        assert_eq!(duration("86400s").as_deref(), Some("86400s"));
        assert_eq!(duration("5m").as_deref(), Some("5m"));
        assert_eq!(duration("500ms").as_deref(), Some("500ms"));
        assert_eq!(duration("1h30m").as_deref(), Some("5400s"));
        assert_eq!(duration("1h 30m").as_deref(), Some("5400s"));
        assert_eq!(duration("1w").as_deref(), Some("604800s"));
        assert_eq!(duration("1M").as_deref(), Some("2592000s"));
        assert_eq!(duration("1s500ms").as_deref(), Some("1500ms"));
        assert_eq!(duration("x"), None);
        assert_eq!(duration(""), None);
        assert_eq!(duration("99999999999999999999999999999999999999d"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(size("500M").as_deref(), Some("500M"));
        assert_eq!(size("50m").as_deref(), Some("50M"));
        assert_eq!(size("8k").as_deref(), Some("8K"));
        assert_eq!(size("1024").as_deref(), Some("1024"));
        assert_eq!(size("0").as_deref(), Some("0"));
        assert_eq!(size("5MB"), None);
        assert_eq!(size("m"), None);
        assert_eq!(size_bytes("8k"), Some(8192));
        assert_eq!(bytes_text(32 * 1024), "32K");
        assert_eq!(bytes_text(1 << 20), "1M");
        assert_eq!(bytes_text(1000), "1000");
    }

    #[test]
    fn addresses() {
        assert_eq!(authority("api:3001"), Some(("api".into(), Some(3001))));
        assert_eq!(authority("API"), Some(("api".into(), None)));
        assert_eq!(authority("[::1]:8080"), Some(("::1".into(), Some(8080))));
        assert_eq!(authority("[::1]"), Some(("::1".into(), None)));
        assert_eq!(authority("api:0"), None);
        assert_eq!(authority("a b:1"), None);
        assert_eq!(listen_addr("80").as_deref(), Some("0.0.0.0:80"));
        assert_eq!(listen_addr("*:8080").as_deref(), Some("0.0.0.0:8080"));
        assert_eq!(listen_addr("[::]:443").as_deref(), Some("[::]:443"));
        assert_eq!(listen_addr("127.0.0.1").as_deref(), Some("127.0.0.1:80"));
        assert_eq!(listen_addr("localhost:81").as_deref(), Some("127.0.0.1:81"));
        assert_eq!(listen_addr("unix:/run/x.sock"), None);
        assert_eq!(listen_addr("example.com:80"), None);
    }

    #[test]
    fn names_and_strings() {
        assert_eq!(slug("/n8n/rest/login"), "n8n-rest-login");
        assert_eq!(slug("/"), "");
        let mut taken = HashSet::new();
        assert_eq!(unique("api", &mut taken), "api");
        assert_eq!(unique("api", &mut taken), "api-2");
        assert_eq!(no_env("a${b}$$c$d"), "a$${b}$$$c$d");
        assert_eq!(variables("$host:${port}x$1"), ["host", "port", "1"]);
        assert!(header_value_ok("$scheme://$host"));
        assert!(!header_value_ok("$http_x"));
        assert!(!header_value_ok("${host}"));
        assert_eq!(
            unknown_log_vars("$remote_addr $http_user_agent $upstream_response_time"),
            ["upstream_response_time"]
        );
        assert_eq!(header_name("remote_user"), "Remote-User");
        assert!(access_value_ok("10.0.0.0/8"));
        assert!(access_value_ok("2001:db8::/32"));
        assert!(access_value_ok("all"));
        assert!(!access_value_ok("unix:"));
        assert!(!access_value_ok("10.0.0.0/33"));
    }
}
