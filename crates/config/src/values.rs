//! Parsers for the value syntaxes of `proxy.toml`: environment references, durations, sizes.

use std::time::Duration;

/// Expands `${NAME}` and `${NAME:-default}`; `$$` is a literal `$`.
///
/// Returns the name of the first variable that is unset and has no default.
pub(crate) fn expand_env(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !input.contains('$') {
        return Ok(input.to_owned());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err("unterminated `${` (expected `${NAME}` or `${NAME:-default}`)".into());
            };
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{inner}}}` is not a valid environment reference"));
            }
            match (lookup(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set and has no default (write `${{{name}:-value}}` to give one)"
                    ))
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `30s`, `500ms`, `5m`, `1h`, `1d` or combinations such as `1h 30m`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{t}` has no unit: write `{t}s`, `{t}ms`, `{t}m` or `{t}h`"
        ));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("`{t}` is not a duration ({e}); examples: `30s`, `500ms`, `5m`, `1h`"))
}

/// Parses sizes the way nginx does (`client_max_body_size`): `500M` or `500MiB` is 500 MiB
/// (524,288,000 bytes); `k`/`K`, `m`/`M`, `g`/`G`, optionally followed by `iB`; a bare number
/// (or with `B`) is bytes. `KB`/`MB`/`GB` are refused: they read as decimal units to many.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let bad = || format!("`{t}` is not a size; examples: `500M`, `64KiB`, `1G`, `1048576`");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" | "mb" | "gb" => {
            let (u, bytes) = match unit.trim().to_ascii_lowercase().as_str() {
                "kb" => ("K", "1,024"),
                "mb" => ("M", "1,048,576"),
                _ => ("G", "1,073,741,824"),
            };
            return Err(format!(
                "`{t}` is ambiguous (decimal or binary?): write `{num}{u}` or `{num}{u}iB`; sizes are binary like nginx's (1 {u}iB = {bytes} bytes)"
            ));
        }
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{t}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "DOMAIN" => Some("example.com".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn env_references() {
        assert_eq!(expand_env("${DOMAIN}", &env).unwrap(), "example.com");
        assert_eq!(expand_env("a.${DOMAIN}:443", &env).unwrap(), "a.example.com:443");
        assert_eq!(expand_env("${NOPE:-x.y}", &env).unwrap(), "x.y");
        assert_eq!(expand_env("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(expand_env("$$5 $x", &env).unwrap(), "$5 $x");
        assert!(expand_env("${NOPE}", &env)
            .unwrap_err()
            .contains("`NOPE` is not set"));
        assert!(expand_env("${DOMAIN", &env).is_err());
        assert!(expand_env("${a b}", &env).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("86400s").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("60").unwrap_err().contains("no unit"));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("12Q").is_err());
        assert_eq!(parse_size("500MiB").unwrap(), 500 << 20);
        assert_eq!(parse_size("10B").unwrap(), 10);
        let e = parse_size("500MB").unwrap_err();
        assert!(e.contains("ambiguous") && e.contains("`500M`"), "{e}");
        assert!(parse_size("1kb").unwrap_err().contains("`1K`"));
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
