//! The request targets and `Host` values: for every file, each location path and its
//! neighbours on every name (systematic), then targets from a seeded generator (SplitMix64,
//! the routing oracle's, with its pieces) that start from the file's location paths.

pub(crate) use crate::support::SplitMix64;
use crate::support::{FRAGMENTS, LONG, QUERIES, SEPARATORS};

/// The routing oracle's pieces (`crates/routing/tests/nginx_oracle.rs`): dot segments plain
/// and encoded, `%2F`, `%00`, `%25`, invalid escapes (`%zz`, `%2`), encoded control bytes,
/// `;`, backslashes, raw and encoded non-ASCII, characters nginx and the gateway escape
/// differently. The file's path segments are added to them.
#[rustfmt::skip]
const PIECES: &[&str] = &[
    "a", "b", "x.y", "index.html", ".", "..", "...", ".a", "a.", "%2e", "%2E", "%2e%2e", ".%2e",
    "%2e.", "..%2f", "%2F", "%2f..", "%2e%2e%2f", "%00", "%25", "%2525", "%252e", "%41", "%3F",
    "%3f", "%23", "%20", "%7E", "%5C", "%5B%5D", "[x]", "a;b", ";", "..;", ";x=1", "a\\b",
    "\\..\\", "\\", "é", "%C3%A9", "%FF", "%", "%2", "%zz", "%G0", "\"q\"", "<x>", "{|}", "^`",
    "+", "a+b", "~u", "@:", "!$&'()*,=", "", "%0A", "%09", "%7F", "%01", "%0d%0a",
    "%2e%2e%2f%2e%2e", "%80", "%E2%82%AC", "%2B", "~",
];

/// How generated targets start, besides the file's paths.
#[rustfmt::skip]
const GENERIC_HEADS: &[&str] = &["", "a/", "index.html", "%2e/", "favicon.ico", ".well-known/acme-challenge/x"];

pub(crate) struct Generator {
    heads: Vec<String>,
    pieces: Vec<String>,
}

impl Generator {
    /// `paths`: the location paths of the file (ASCII, starting with `/`).
    pub(crate) fn new(paths: &[String]) -> Generator {
        let mut heads: Vec<String> = GENERIC_HEADS.iter().map(|h| (*h).to_string()).collect();
        let mut pieces: Vec<String> = PIECES.iter().map(|p| (*p).to_string()).collect();
        fn add(list: &mut Vec<String>, s: String) {
            if !list.contains(&s) {
                list.push(s);
            }
        }
        for p in paths {
            assert!(p.is_ascii(), "location paths are ASCII here: {p:?}");
            let q = &p[1..];
            let t = q.trim_end_matches('/');
            if t.is_empty() {
                continue;
            }
            let slash = if q.ends_with('/') { "/" } else { "" };
            // The path, without and with its trailing slash, a neighbour without a segment
            // boundary (`apix`, `api.json`), an encoded slash, the first byte encoded, dot
            // segments before it, another case.
            for h in [
                q.to_string(),
                t.to_string(),
                format!("{t}/"),
                format!("{t}x"),
                format!("{t}.json"),
                format!("{t}%2F"),
                format!("%{:02x}{}{slash}", t.as_bytes()[0], &t[1..]),
                format!("./{q}"),
                format!("x/../{q}"),
                q.to_ascii_uppercase(),
            ] {
                add(&mut heads, h);
            }
            for seg in t.split('/').filter(|s| !s.is_empty()) {
                add(&mut pieces, seg.to_string());
            }
        }
        Generator { heads, pieces }
    }

    /// One origin-form target. Only bytes nginx accepts on a request line (no space, no
    /// control byte) appear raw; the others are percent-encoded.
    pub(crate) fn target(&self, rng: &mut SplitMix64) -> String {
        let mut s = String::from("/");
        s.push_str(rng.pick(&self.heads));
        let n = rng.below(7);
        for i in 0..n {
            if i > 0 {
                s.push_str(rng.pick(SEPARATORS));
            }
            s.push_str(rng.pick(&self.pieces));
        }
        if rng.chance(1, 4) {
            s.push('/');
        }
        if rng.chance(1, 40) {
            let piece = rng.pick(LONG);
            let reps = 200 + rng.below(800);
            s.push_str(&piece.repeat(reps));
        }
        if rng.chance(1, 4) {
            s.push('?');
            s.push_str(rng.pick(QUERIES));
        }
        if rng.chance(1, 40) {
            s.push('#');
            s.push_str(rng.pick(FRAGMENTS));
        }
        s
    }
}

/// For every location path: itself, with a query, below it; without and with its trailing
/// slash, and its neighbours `PATHx` and `PATH.json` (exact paths' neighbours, prefixes'
/// segment boundaries, slash redirects). `/` and `/?q=1` first.
pub(crate) fn systematic(paths: &[String]) -> Vec<String> {
    let mut out: Vec<String> = vec!["/".into(), "/?q=1".into()];
    for p in paths {
        let t = p.trim_end_matches('/');
        let below = if p.ends_with('/') { "a/b?x=1" } else { "/a/b?x=1" };
        let mut all = vec![p.clone(), format!("{p}?q=1"), format!("{p}{below}")];
        if !t.is_empty() {
            all.extend([
                t.to_string(),
                format!("{t}/"),
                format!("{t}x"),
                format!("{t}.json"),
            ]);
        }
        for x in all {
            if !out.contains(&x) {
                out.push(x);
            }
        }
    }
    out
}

/// A `Host` value for `name`: as it is, or (one in eight) in upper case, with a port, or
/// with a trailing dot, which nginx and the gateway both ignore.
pub(crate) fn host_variant(rng: &mut SplitMix64, name: &str) -> String {
    if !rng.chance(1, 8) {
        return name.to_string();
    }
    match rng.below(3) {
        0 => name.to_ascii_uppercase(),
        1 => format!("{name}:443"),
        _ => format!("{name}."),
    }
}

/// Targets also sent to the plain-HTTP port: only bytes that every parser in front of the
/// gateway's redirect takes as they are (the `http` crate's URI refuses some bytes nginx
/// takes, and drops a `#` fragment), and no ACME challenge path (answered by the gateway
/// itself, from memory or the webroot, not redirected).
pub(crate) fn plain_safe(target: &str) -> bool {
    target
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b))
        && !target.starts_with("/.well-known/acme-challenge/")
}
