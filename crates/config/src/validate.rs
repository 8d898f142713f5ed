//! Conversion of the file format into the model, collecting every problem on the way.

use crate::error::{ConfigError, ConfigErrors, Locator};
use crate::file::{self, SizeRaw, SizeValue, S};
use crate::model::*;
use crate::values::{expand_env, parse_duration, parse_size};
use serde_spanned::Spanned;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

// `[logging]` (access log formats, level, targets): validate/logging.rs.
mod logging;
use logging::logging;
// `[policies.NAME]`, route `policies`, `[errors]`: validate/policies.rs.
mod policies;
mod upstreams;
use upstreams::{parse_authority, upstreams};
// `[acme]`, its certificates and `[acme.dns_providers.NAME]`: validate/acme.rs.
mod acme;
use acme::acme;

struct Ctx<'a> {
    loc: &'a Locator<'a>,
    base: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
    /// Keys whose value could not be read (already reported): not reported missing too.
    blanked: &'a [String],
}

impl Ctx<'_> {
    fn err<T>(&mut self, at: usize, msg: impl Into<String>) -> Option<T> {
        self.errors.push(self.loc.error(Some(at), msg));
        None
    }

    /// The string with `${...}` expanded.
    fn text(&mut self, s: &S) -> Option<String> {
        match expand_env(s.get_ref(), self.env) {
            Ok(v) => Some(v),
            Err(msg) => self.err(s.span().start, msg),
        }
    }

    /// A duration that must be above zero (a zero timeout would refuse every request).
    fn positive_duration(&mut self, s: &Option<S>, default: Duration, what: &str) -> Duration {
        let d = self.duration(s, default);
        match s {
            Some(s) if d.is_zero() => self
                .err(s.span().start, format!("{what} must be above zero"))
                .unwrap_or(default),
            _ => d,
        }
    }

    fn duration(&mut self, s: &Option<S>, default: Duration) -> Duration {
        let Some(s) = s else { return default };
        let Some(t) = self.text(s) else { return default };
        match parse_duration(&t) {
            Ok(d) => d,
            Err(m) => self.err(s.span().start, m).unwrap_or(default),
        }
    }

    fn size(&mut self, v: &Option<SizeValue>, default: u64) -> u64 {
        match v {
            None => default,
            Some(v) => {
                let at = v.span().start;
                match v.get_ref() {
                    SizeRaw::Bytes(n) => match u64::try_from(*n) {
                        Ok(n) => n,
                        Err(_) => self.err(at, "a size cannot be negative").unwrap_or(default),
                    },
                    SizeRaw::Text(s) => {
                        let t = match expand_env(s, self.env) {
                            Ok(t) => t,
                            Err(m) => return self.err(at, m).unwrap_or(default),
                        };
                        match parse_size(&t) {
                            Ok(n) => n,
                            Err(m) => self.err(at, m).unwrap_or(default),
                        }
                    }
                }
            }
        }
    }

    fn int(&mut self, v: &Option<Spanned<i64>>, min: i64, max: i64, what: &str, default: i64) -> i64 {
        match v {
            None => default,
            Some(n) if (min..=max).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => self
                .err(
                    n.span().start,
                    format!("{what} must be between {min} and {max}, not {}", n.get_ref()),
                )
                .unwrap_or(default),
        }
    }

    fn addr(&mut self, s: &Option<S>, default: &str) -> Option<SocketAddr> {
        let Some(s) = s else { return default.parse().ok() };
        let t = self.text(s)?;
        if t == "off" {
            return None;
        }
        match t.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => self.err(
                s.span().start,
                format!("`{t}` is not a listen address; write an IP and a port such as `0.0.0.0:443` or `[::]:443`, or `off`"),
            ),
        }
    }

    /// `[listen] http` / `https`: one address or a list (`off` alone: none, when `may_be_off`).
    /// Defaults to `default`. Duplicates are refused.
    fn addrs(&mut self, v: &Option<file::Addrs>, default: &str, may_be_off: bool) -> Vec<SocketAddr> {
        let Some(v) = v else {
            return default.parse().into_iter().collect();
        };
        let at = v.span().start;
        let texts: Vec<String> = match v.get_ref() {
            file::AddrsRaw::One(t) => vec![t.clone()],
            file::AddrsRaw::Many(list) if list.is_empty() => {
                return self
                    .err(at, "an empty list: give at least one address, or `\"off\"`")
                    .unwrap_or_default();
            }
            file::AddrsRaw::Many(list) => list.clone(),
        };
        let mut out = Vec::new();
        for t in texts {
            let t = match expand_env(&t, self.env) {
                Ok(t) => t,
                Err(m) => return self.err(at, m).unwrap_or_default(),
            };
            if t == "off" {
                if !may_be_off {
                    return self.err(at, "the HTTPS listener cannot be `off`").unwrap_or(out);
                }
                if matches!(v.get_ref(), file::AddrsRaw::Many(_)) {
                    return self
                        .err(at, "`off` stands alone, not in a list")
                        .unwrap_or_default();
                }
                return Vec::new();
            }
            match t.parse::<SocketAddr>() {
                Ok(a) if out.contains(&a) => {
                    self.err::<()>(at, format!("`{a}` is listed twice"));
                }
                Ok(a) => out.push(a),
                Err(_) => {
                    self.err::<()>(
                        at,
                        format!("`{t}` is not a listen address; write an IP and a port such as `0.0.0.0:443` or `[::]:443`, a list of them, or `off`"),
                    );
                }
            }
        }
        out
    }

    fn path(&mut self, s: &S) -> Option<PathBuf> {
        let t = self.text(s)?;
        let p = PathBuf::from(t);
        Some(if p.is_absolute() { p } else { self.base.join(p) })
    }

    fn headers(&mut self, map: &BTreeMap<String, S>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, value) in map {
            let Some(v) = self.text(value) else { continue };
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                self.err::<()>(value.span().start, format!("`{name}` is not a valid header name"));
            } else if !valid_field_value(&v) {
                self.err::<()>(
                    value.span().start,
                    format!("the value of header `{name}` contains a control character (CR, LF, NUL, \\u0001...), which no HTTP field may carry (RFC 9110 §5.5)"),
                );
            } else {
                out.push((name.clone(), v));
            }
        }
        out
    }
}

/// `max_body = 0` means no limit, as nginx's `client_max_body_size 0`.
fn body_limit(n: u64) -> u64 {
    if n == 0 {
        u64::MAX
    } else {
        n
    }
}

/// RFC 9110 §5.5: a field value is visible characters, SP, HTAB and obs-text (bytes ≥ 0x80);
/// any other control byte (CR, LF, NUL, `\u0001`, DEL...) makes the field invalid, and the
/// data plane could not send it.
fn valid_field_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A certificate's `name` is a directory of the ACME storage and a metrics label: letters,
/// digits, `.`, `_` and `-`, starting with a letter or digit, at most 64; never `accounts`
/// (the storage's account directory).
fn cert_name(cx: &mut Ctx<'_>, s: &S, name: &str) {
    let ok = name.len() <= 64
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && name != "accounts";
    if !ok {
        cx.err::<()>(
            s.span().start,
            format!("`{name}` cannot name a certificate (it is a directory name in the ACME storage): use up to 64 letters, digits, `.`, `_` and `-`, starting with a letter or digit, and not `accounts`"),
        );
    }
}

fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(s, _)| *s > 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

pub(crate) fn convert(
    f: file::File,
    loc: &Locator<'_>,
    source: &Path,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    blanked: &[String],
) -> Result<Config, ConfigErrors> {
    let mut cx = Ctx {
        loc,
        base,
        env,
        errors: Vec::new(),
        blanked,
    };

    let mut listen = Listen {
        http: cx.addrs(&f.listen.http, "[::]:80", true),
        https: cx.addrs(&f.listen.https, "[::]:443", false),
        metrics: cx.addr(&f.listen.metrics, "127.0.0.1:9100"),
        public_https_port: 0,
        metrics_policy: None,
        proxy_protocol: f.listen.proxy_protocol.as_ref().is_some_and(|b| *b.get_ref()),
        proxy_protocol_timeout: Duration::ZERO,
    };
    listen.proxy_protocol_timeout = cx.positive_duration(
        &f.listen.proxy_protocol_timeout,
        Duration::from_secs(5),
        "proxy_protocol_timeout",
    );
    // Redirects name the port clients use; by default the HTTPS listener's own.
    listen.public_https_port = cx.int(
        &f.listen.public_https_port,
        1,
        65535,
        "public_https_port",
        i64::from(listen.https.first().map_or(443, |a| a.port())),
    ) as u16;
    // The same port on the same address, or on a wildcard address that includes the other
    // (`0.0.0.0:443` and `127.0.0.1:443`), is one listener as far as clients are concerned.
    let overlaps = |a: SocketAddr, b: SocketAddr| {
        a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
    };
    if let Some(s) = &f.listen.http {
        if listen
            .http
            .iter()
            .any(|h| listen.https.iter().any(|t| overlaps(*h, *t)))
        {
            cx.err::<()>(
                s.span().start,
                "the HTTP listener must not share an address with the HTTPS listener",
            );
        }
    }
    if let (Some(m), Some(s)) = (listen.metrics, &f.listen.metrics) {
        if listen.http.iter().chain(&listen.https).any(|h| overlaps(m, *h)) {
            cx.err::<()>(
                s.span().start,
                "the metrics listener must not share an address with a public listener",
            );
        }
    }

    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get()) as i64;
    let server = Server {
        threads: cx.int(&f.server.threads, 1, 1024, "threads", cpus) as usize,
        grace_period: cx.duration(&f.server.grace_period, Duration::from_secs(8)),
        acme_webroot: f.server.acme_webroot.as_ref().and_then(|s| cx.path(s)),
        watch_config: f.server.watch_config.unwrap_or(true),
        work_stealing: f.server.work_stealing.unwrap_or(false),
        reuseport: f.server.reuseport.unwrap_or(true),
        dns_refresh: cx.duration(&f.server.dns_refresh, Duration::from_secs(30)),
        resolver: resolver(&mut cx, &f.server.resolver),
    };

    let limits = Limits {
        max_body: body_limit(cx.size(&f.limits.max_body, 500 << 20)),
        max_header_bytes: cx.size(&f.limits.max_header_bytes, 32 << 10) as usize,
        max_header_count: cx.int(&f.limits.max_header_count, 1, 10_000, "max_header_count", 100) as usize,
        header_read_timeout: cx.positive_duration(
            &f.limits.header_read_timeout,
            Duration::from_secs(10),
            "header_read_timeout",
        ),
        body_read_timeout: cx.positive_duration(
            &f.limits.body_read_timeout,
            Duration::from_secs(60),
            "body_read_timeout",
        ),
        send_timeout: cx.positive_duration(&f.limits.send_timeout, Duration::from_secs(60), "send_timeout"),
        max_uri: cx.size(&f.limits.max_uri, 8 << 10) as usize,
        keepalive_timeout: cx.duration(&f.limits.keepalive_timeout, Duration::from_secs(65)),
    };

    let compression = compression(&mut cx, &f.compression);
    let security_headers = security(&mut cx, &f.security);
    let forwarding = forwarding(&mut cx, &f.forwarding);
    if let Some(pp) = f.listen.proxy_protocol.as_ref().filter(|b| *b.get_ref()) {
        if forwarding.trusted_proxies.is_empty() {
            cx.err::<()>(
                pp.span().start,
                "proxy_protocol = true needs forwarding.trusted_proxies: the PROXY header is accepted only from those addresses (the load balancer's), so with none every connection would be refused",
            );
        }
    }
    let logging = logging(&mut cx, &f.logging);
    let acme = f.acme.as_ref().map(|a| acme(&mut cx, a, !listen.http.is_empty()));
    let tls = tls(&mut cx, &f.tls, acme.as_ref());
    let upstreams = upstreams(&mut cx, &f.upstreams);
    let policies = policies::policies(&mut cx, &f.policies);
    listen.metrics_policy = policies::metrics_policy(&mut cx, &f.listen.metrics_policy, &policies);
    let routes = routes(&mut cx, &f, &upstreams, &limits);
    let error_pages = policies::error_pages(&mut cx, &f.errors);

    if !cx.errors.is_empty() {
        cx.errors.sort_by_key(|e| (e.line, e.column));
        return Err(ConfigErrors(cx.errors));
    }
    Ok(Config {
        source: source.to_path_buf(),
        listen,
        server,
        tls,
        acme,
        limits,
        compression,
        security_headers,
        forwarding,
        logging,
        upstreams,
        routes,
        policies,
        error_pages,
    })
}

fn compression(cx: &mut Ctx<'_>, c: &file::Compression) -> Compression {
    let mut algorithms = Vec::new();
    for a in c.algorithms.iter().flatten() {
        let Some(t) = cx.text(a) else { continue };
        match t.as_str() {
            "gzip" => algorithms.push(Algorithm::Gzip),
            "br" | "brotli" => algorithms.push(Algorithm::Brotli),
            "zstd" => algorithms.push(Algorithm::Zstd),
            other => {
                cx.err::<()>(
                    a.span().start,
                    format!("unknown compression `{other}`; use gzip, br or zstd"),
                );
            }
        }
    }
    if c.algorithms.is_none() {
        algorithms = vec![Algorithm::Gzip, Algorithm::Brotli, Algorithm::Zstd];
    }
    let types = match &c.types {
        None => DEFAULT_COMPRESSIBLE_TYPES.iter().map(|s| s.to_string()).collect(),
        Some(list) => list
            .iter()
            .filter_map(|t| cx.text(t))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect(),
    };
    Compression {
        enabled: c.enabled.unwrap_or(true),
        algorithms,
        level: cx.int(&c.level, 1, 9, "compression level", 6) as u32,
        min_length: cx.size(&c.min_length, 256),
        types,
    }
}

fn security(cx: &mut Ctx<'_>, s: &file::Security) -> Vec<(String, String)> {
    let mut headers = match &s.headers {
        Some(map) => cx.headers(map),
        None => vec![
            ("X-Frame-Options".into(), "SAMEORIGIN".into()),
            ("X-Content-Type-Options".into(), "nosniff".into()),
            ("X-XSS-Protection".into(), "1; mode=block".into()),
        ],
    };
    if let Some(h) = &s.hsts {
        if let Some(v) = cx.text(h) {
            if v.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                cx.err::<()>(
                    h.span().start,
                    "hsts must not contain control characters (CR, LF, NUL...): it is one header value",
                );
            } else if !v.is_empty() {
                headers.push(("Strict-Transport-Security".into(), v));
            }
        }
    }
    headers
}

/// `[server] resolver`: name server addresses as nginx's `resolver` directive takes them, an
/// IP with an optional port (`127.0.0.11`, `10.0.0.2:5353`, `[fd00::1]:53`); 53 by default
/// (RFC 1035 section 4.2).
fn resolver(cx: &mut Ctx<'_>, list: &Option<Vec<S>>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for s in list.iter().flatten() {
        let Some(t) = cx.text(s) else { continue };
        let t = t.trim();
        let parsed = t
            .parse::<SocketAddr>()
            .or_else(|_| t.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
        match parsed {
            Ok(a) => out.push(a),
            Err(_) => {
                cx.err::<()>(
                    s.span().start,
                    format!(
                        "`{t}` is not a name server address; write an IP such as `127.0.0.11`, or an IP and a port such as `10.0.0.2:5353` or `[fd00::1]:53`"
                    ),
                );
            }
        }
    }
    out
}

fn forwarding(cx: &mut Ctx<'_>, f: &file::Forwarding) -> Forwarding {
    let mut trusted = Vec::new();
    for s in f.trusted_proxies.iter().flatten() {
        let Some(t) = cx.text(s) else { continue };
        let parsed = t
            .parse::<ipnet::IpNet>()
            .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(n) => trusted.push(n),
            Err(_) => {
                cx.err::<()>(
                    s.span().start,
                    format!("`{t}` is not an IP address or CIDR such as `10.0.0.0/8`"),
                );
            }
        }
    }
    let host_header = match &f.host_header {
        None => HostHeader::Client,
        Some(s) => match cx.text(s).as_deref() {
            Some("client") => HostHeader::Client,
            Some("nginx") => HostHeader::NginxHost,
            Some(other) => cx
                .err(s.span().start, format!("host_header is `client` (as sent, port kept) or `nginx` (name without port), not `{other}`"))
                .unwrap_or(HostHeader::Client),
            None => HostHeader::Client,
        },
    };
    Forwarding {
        trusted_proxies: trusted,
        host_header,
    }
}

fn tls(cx: &mut Ctx<'_>, t: &file::Tls, acme: Option<&Acme>) -> Tls {
    let mut certificates: Vec<CertFiles> = Vec::new();
    for c in &t.certificates {
        let c_ref = c.get_ref();
        let Some(name) = cx.text(&c_ref.name) else {
            continue;
        };
        cert_name(cx, &c_ref.name, &name);
        let if_missing = match c_ref.if_missing.as_ref().map(|s| (s, cx.text(s))) {
            None => IfMissing::Error,
            Some((_, Some(v))) if v == "error" => IfMissing::Error,
            Some((_, Some(v))) if v == "self-signed" => IfMissing::SelfSigned,
            Some((s, v)) => cx
                .err(
                    s.span().start,
                    format!(
                        "if_missing is `error` or `self-signed`, not `{}`",
                        v.unwrap_or_default()
                    ),
                )
                .unwrap_or(IfMissing::Error),
        };
        let mut hosts = Vec::new();
        for h in &c_ref.hosts {
            let Some(v) = cx.text(h) else { continue };
            let v = v.to_ascii_lowercase();
            if valid_hostname(v.trim_start_matches("*.")) {
                hosts.push(v);
            } else {
                cx.err::<()>(h.span().start, format!("`{v}` is not a DNS name"));
            }
        }
        let (Some(cert), Some(key)) = (cx.path(&c_ref.cert), cx.path(&c_ref.key)) else {
            continue;
        };
        if if_missing == IfMissing::Error {
            for (p, s) in [(&cert, &c_ref.cert), (&key, &c_ref.key)] {
                if !p.is_file() {
                    cx.err::<()>(
                        s.span().start,
                        format!("certificate file `{}` does not exist (set `if_missing = \"self-signed\"` to start without it)", p.display()),
                    );
                }
            }
        }
        if hosts.is_empty() && if_missing == IfMissing::SelfSigned {
            cx.err::<()>(
                c.span().start,
                format!("certificate `{name}` needs `hosts` to generate a self-signed stand-in"),
            );
        }
        if certificates.iter().any(|x| x.name == name) {
            cx.err::<()>(
                c_ref.name.span().start,
                format!("two certificates are named `{name}`"),
            );
        }
        certificates.push(CertFiles {
            name,
            hosts,
            cert,
            key,
            if_missing,
        });
    }
    if let Some(a) = acme {
        for c in &t.certificates {
            let name = c.get_ref().name.get_ref();
            if a.certificates.iter().any(|x| x.name == *name) {
                cx.err::<()>(c.get_ref().name.span().start, format!("certificate `{name}` is defined both here and under [acme]; give one of them another name"));
            }
        }
    }
    let default_certificate = t.default_certificate.as_ref().and_then(|s| {
        let v = cx.text(s)?;
        let known = certificates.iter().map(|c| c.name.as_str()).chain(
            acme.into_iter()
                .flat_map(|a| a.certificates.iter().map(|c| c.name.as_str())),
        );
        let names: Vec<&str> = known.collect();
        if names.contains(&v.as_str()) {
            Some(v)
        } else {
            let hint = closest(&v, names.iter().copied())
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            cx.err(
                s.span().start,
                format!("default_certificate `{v}` names no certificate{hint}"),
            )
        }
    });
    Tls {
        certificates,
        default_certificate,
        session_cache: cx.int(&t.session_cache, 0, 10_000_000, "session_cache", 20_000) as usize,
        session_tickets: t.session_tickets.unwrap_or(true),
    }
}

fn host_match(cx: &mut Ctx<'_>, s: &S) -> Option<HostMatch> {
    let t = cx.text(s)?.to_ascii_lowercase();
    if let Some(rest) = t.strip_prefix("*.") {
        if valid_hostname(rest) {
            return Some(HostMatch::Suffix(format!(".{rest}")));
        }
    } else if valid_hostname(&t) {
        return Some(HostMatch::Exact(t));
    }
    cx.err(
        s.span().start,
        format!("`{t}` is not a host match; write `example.com` or `*.example.com`"),
    )
}

fn routes(cx: &mut Ctx<'_>, f: &file::File, upstreams: &[Upstream], limits: &Limits) -> Vec<Route> {
    let (routes, upstream_spans) = (&f.routes, &f.upstreams);
    let mut out: Vec<Route> = Vec::new();
    let mut seen: HashMap<(Option<HostMatch>, PathMatch), usize> = HashMap::new();
    for r in routes {
        let at = r.span().start;
        let r = r.get_ref();
        let path = match (&r.prefix, &r.exact) {
            (Some(p), None) => cx.text(p).map(|t| (PathMatch::Prefix(t), p.span().start)),
            (None, Some(e)) => cx.text(e).map(|t| (PathMatch::Exact(t), e.span().start)),
            (Some(_), Some(e)) => cx.err(e.span().start, "a route has either `prefix` or `exact`, not both"),
            (None, None) => cx.err(at, "a route needs `prefix = \"/path/\"` or `exact = \"/path\"`"),
        };
        let Some((path, path_at)) = path else { continue };
        if !path.path().starts_with('/') {
            cx.err::<()>(path_at, format!("the path `{}` must start with `/`", path.path()));
            continue;
        }
        let host = r.host.as_ref().and_then(|h| host_match(cx, h));
        let Some(upstream_name) = cx.text(&r.upstream) else {
            continue;
        };
        let Some(up) = upstreams.iter().find(|u| u.name == upstream_name) else {
            if !upstream_spans.contains_key(&upstream_name) {
                let hint = closest(&upstream_name, upstream_spans.keys().map(String::as_str))
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_else(|| " (define it under [upstreams])".into());
                cx.err::<()>(
                    r.upstream.span().start,
                    format!("route names upstream `{upstream_name}`, which is not defined{hint}"),
                );
            }
            continue;
        };
        let rewrite = match (r.strip_prefix, &r.rewrite) {
            (Some(true), Some(s)) => {
                cx.err(s.span().start, "use either `strip_prefix` or `rewrite`, not both")
            }
            (Some(true), None) => Some("/".to_owned()),
            (_, Some(s)) => match cx.text(s) {
                Some(t) if t.starts_with('/') => Some(t),
                Some(t) => cx.err(s.span().start, format!("rewrite `{t}` must start with `/`")),
                None => None,
            },
            (_, None) => None,
        };
        let name = match &r.name {
            Some(n) => cx.text(n).unwrap_or_default(),
            None => match &host {
                Some(h) => format!("{h}{}", path.path()),
                None => path.path().to_owned(),
            },
        };
        let read = cx.duration(&r.read_timeout, up.timeouts.read);
        let timeouts = Timeouts {
            connect: cx.duration(&r.connect_timeout, up.timeouts.connect),
            read,
            write: cx.duration(&r.write_timeout, up.timeouts.write),
            idle: cx.duration(&r.idle_timeout, read),
        };
        let response_headers = r.headers.as_ref().map(|h| cx.headers(h)).unwrap_or_default();
        let key = (host.clone(), path.clone());
        if let Some(first) = seen.get(&key) {
            cx.err::<()>(
                path_at,
                format!(
                    "this route has the same host and path as route `{}`",
                    out[*first].name
                ),
            );
            continue;
        }
        if out.iter().any(|o| o.name == name) {
            let at = r.name.as_ref().map_or(path_at, |n| n.span().start);
            cx.err::<()>(at, format!("two routes are named `{name}`"));
            continue;
        }
        seen.insert(key, out.len());
        out.push(Route {
            name,
            host,
            path,
            upstream: upstream_name,
            rewrite,
            websocket: r.websocket.unwrap_or(true),
            compress: r.compress.unwrap_or(true),
            max_body: r
                .max_body
                .as_ref()
                .map_or(limits.max_body, |_| body_limit(cx.size(&r.max_body, 0))),
            timeouts,
            response_headers,
            policies: policies::route_policies(cx, &r.policies, &f.policies),
            maintenance: r.maintenance.unwrap_or(false),
        });
    }
    out
}
