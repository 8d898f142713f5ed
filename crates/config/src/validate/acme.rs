//! `[acme]`: directories, account, timeouts, `[[acme.certificates]]` (names, `challenge`,
//! `dns_provider`, `profile`) and `[acme.dns_providers.NAME]`.

use super::{cert_name, closest, valid_hostname, Ctx};
use crate::file::{self, S};
use crate::model::*;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// `http_listener`: `[listen] http` is not `off` (HTTP-01 needs it).
pub(super) fn acme(cx: &mut Ctx<'_>, a: &file::Acme, http_listener: bool) -> Acme {
    let url = |cx: &mut Ctx<'_>, s: &S| -> Option<String> {
        let t = cx.text(s)?;
        if t.starts_with("https://") || t.starts_with("http://") {
            Some(t)
        } else {
            cx.err(
                s.span().start,
                format!("`{t}` is not an ACME directory URL (https://...)"),
            )
        }
    };
    let directory = a
        .directory
        .as_ref()
        .and_then(|s| url(cx, s))
        .unwrap_or_else(|| LETS_ENCRYPT_PRODUCTION.into());
    let fallback_directories = a.fallback_directories.iter().filter_map(|s| url(cx, s)).collect();
    let email = a
        .email
        .as_ref()
        .and_then(|s| cx.text(s))
        .filter(|e| !e.is_empty());
    let eab = match (&a.eab_kid, &a.eab_hmac_key) {
        (Some(k), Some(h)) => Some((cx.text(k).unwrap_or_default(), cx.text(h).unwrap_or_default())),
        (Some(s), None) | (None, Some(s)) => cx.err(
            s.span().start,
            "External Account Binding needs both `eab_kid` and `eab_hmac_key`",
        ),
        (None, None) => None,
    };
    // A zero timeout would fail every request before it starts.
    let timeout = |cx: &mut Ctx<'_>, s: &Option<S>, default: Duration| -> Duration {
        let d = cx.duration(s, default);
        match s {
            Some(s) if d.is_zero() => cx
                .err(s.span().start, "a timeout must be longer than 0")
                .unwrap_or(default),
            _ => d,
        }
    };
    let connect_timeout = timeout(cx, &a.connect_timeout, Duration::from_secs(10));
    let request_timeout = timeout(cx, &a.request_timeout, Duration::from_secs(30));
    let order_timeout = timeout(cx, &a.order_timeout, Duration::from_secs(600));
    let lease_ttl = match &a.lease_ttl {
        Some(s) => {
            let d = cx.duration(&a.lease_ttl, Duration::from_secs(120));
            if d < Duration::from_secs(1) {
                cx.err(
                    s.span().start,
                    "lease_ttl must be at least 1s (the holder renews it every third of it)",
                )
                .unwrap_or(Duration::from_secs(120))
            } else {
                d
            }
        }
        None => Duration::from_secs(120),
    };
    let poll_interval = timeout(cx, &a.poll_interval, Duration::from_secs(30));
    let dns_providers: Vec<DnsProvider> = a
        .dns_providers
        .iter()
        .filter_map(|(name, p)| dns_provider(cx, name, p, order_timeout))
        .collect();
    let mut certificates: Vec<AcmeCert> = Vec::new();
    for c in &a.certificates {
        let Some(cert) = certificate(cx, c, &a.dns_providers, &dns_providers, &url) else {
            continue;
        };
        if cert.challenge == Challenge::Http01 && !http_listener {
            let at = c
                .get_ref()
                .challenge
                .as_ref()
                .map_or(c.get_ref().name.span().start, |s| s.span().start);
            let has_ip = cert.names.iter().any(|n| n.parse::<IpAddr>().is_ok());
            let other = if has_ip {
                "`challenge = \"tls-alpn-01\"`"
            } else {
                "`challenge = \"tls-alpn-01\"` or `\"dns-01\"`"
            };
            cx.err::<()>(at, format!("certificate `{}` is validated with http-01, which needs the HTTP listener, and `[listen] http` is `off`; use {other}, or turn the listener on", cert.name));
        }
        if certificates.iter().any(|x| x.name == cert.name) {
            cx.err::<()>(
                c.get_ref().name.span().start,
                format!("two ACME certificates are named `{}`", cert.name),
            );
        }
        certificates.push(cert);
    }
    let (storage, object_storage) = storage(cx, a);
    Acme {
        directory,
        fallback_directories,
        email,
        storage,
        object_storage,
        ca_root: a
            .ca_root
            .as_ref()
            .and_then(|s| cx.text(s).filter(|t| !t.is_empty()).map(|_| s))
            .and_then(|s| cx.path(s)),
        https_proxy: a
            .https_proxy
            .as_ref()
            .and_then(|s| cx.text(s))
            .filter(|t| !t.is_empty()),
        eab,
        certificates,
        retry_min: cx.duration(&a.retry_min, Duration::from_secs(60)),
        retry_max: cx.duration(&a.retry_max, Duration::from_secs(86400)),
        connect_timeout,
        request_timeout,
        order_timeout,
        lease_ttl,
        poll_interval,
        dns_providers,
    }
}

/// `storage` and `local_storage`: a directory, or `s3://bucket/prefix` with this instance's
/// copy in `local_storage` (default `$GATEWAY_STATE_DIR/certs`, else `certs` beside the
/// file).
fn storage(cx: &mut Ctx<'_>, a: &file::Acme) -> (PathBuf, Option<String>) {
    let default_dir = |cx: &mut Ctx<'_>| match (cx.env)("GATEWAY_STATE_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("certs"),
        None => cx.base.join("certs"),
    };
    let text = a.storage.as_ref().and_then(|s| cx.text(s).map(|t| (s, t)));
    let url = match &text {
        Some((s, t)) if t.contains("://") => {
            let rest = t.strip_prefix("s3://");
            let bucket = rest.map(|r| r.split('/').next().unwrap_or(""));
            match bucket {
                Some(b) if !b.is_empty() => Some(t.trim_end_matches('/').to_owned()),
                Some(_) => cx.err(s.span().start, format!("`{t}` names no bucket: write s3://BUCKET/PREFIX")),
                None => cx.err(
                    s.span().start,
                    format!("`{t}`: storage is a directory or an s3://bucket/prefix URL (OSS, S3, MinIO; endpoint and credentials from the AWS_* environment variables)"),
                ),
            }
        }
        _ => None,
    };
    let local = a.local_storage.as_ref().and_then(|s| cx.path(s).map(|p| (s, p)));
    if let (Some((s, _)), None) = (&local, &url) {
        cx.err::<()>(
            s.span().start,
            "local_storage is the instance's own copy of an s3:// storage; with a directory as storage, it has no use",
        );
    }
    match (url, local) {
        (Some(u), Some((_, dir))) => (dir, Some(u)),
        (Some(u), None) => (default_dir(cx), Some(u)),
        (None, _) => {
            let dir = a.storage.as_ref().and_then(|s| cx.path(s));
            (dir.unwrap_or_else(|| cx.base.join("certs")), None)
        }
    }
}

/// One `[[acme.certificates]]` entry. Names are DNS names (lower case), a wildcard
/// `*.example.com` (only its leftmost label, RFC 8555 section 7.1.3), or IP addresses
/// (RFC 8738). A wildcard needs `dns-01`; an IP address can never use it (RFC 8738
/// section 7).
fn certificate(
    cx: &mut Ctx<'_>,
    c: &serde_spanned::Spanned<file::AcmeCert>,
    providers: &std::collections::BTreeMap<String, serde_spanned::Spanned<file::DnsProvider>>,
    models: &[DnsProvider],
    url: &dyn Fn(&mut Ctx<'_>, &S) -> Option<String>,
) -> Option<AcmeCert> {
    let f = c.get_ref();
    let name = cx.text(&f.name)?;
    cert_name(cx, &f.name, &name);
    let challenge = match &f.challenge {
        None => Challenge::Http01,
        Some(s) => {
            match cx.text(s).as_deref() {
                Some("http-01") => Challenge::Http01,
                Some("tls-alpn-01") => Challenge::TlsAlpn01,
                Some("dns-01") => Challenge::Dns01,
                Some(other) => {
                    cx.err::<()>(
                    s.span().start,
                    format!("`{other}` is not an ACME challenge type; write `http-01`, `tls-alpn-01` or `dns-01`"),
                );
                    Challenge::Http01
                }
                None => Challenge::Http01,
            }
        }
    };
    let mut names = Vec::new();
    for n in &f.names {
        let Some(t) = cx.text(n) else { continue };
        let t = t.to_ascii_lowercase();
        let at = n.span().start;
        if let Ok(ip) = t.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            if challenge == Challenge::Dns01 {
                cx.err::<()>(at, format!("`{t}` is an IP address: dns-01 cannot validate it (RFC 8738 section 7); give it its own certificate with `challenge = \"http-01\"` or `\"tls-alpn-01\"`"));
            }
            names.push(ip.to_string());
        } else if t.ends_with('.') {
            cx.err::<()>(
                at,
                format!(
                    "`{t}`: write the name without its trailing dot (`{}`)",
                    t.trim_end_matches('.')
                ),
            );
        } else if !acme_name(t.strip_prefix("*.").unwrap_or(&t))
            || t.strip_prefix("*.").is_some_and(|b| !b.contains('.'))
        {
            cx.err::<()>(at, format!("`{t}` is not a name a CA issues for: labels of letters, digits and `-` (not at either end), a wildcard over at least two labels; an IDN is written in its `xn--` form"));
        } else if let Some(base) = t.strip_prefix("*.") {
            if !valid_hostname(base) || base.contains('*') {
                cx.err::<()>(
                    at,
                    format!(
                        "`{t}` is not a DNS name: a wildcard is `*.` followed by a name (`*.example.com`)"
                    ),
                );
            } else if challenge != Challenge::Dns01 {
                cx.err::<()>(at, format!("`{t}` is a wildcard: only dns-01 can validate it (RFC 8555 section 7.1.3); add `challenge = \"dns-01\"` and a `dns_provider` to this certificate"));
            }
            names.push(t);
        } else if valid_hostname(&t) {
            names.push(t);
        } else {
            cx.err::<()>(at, format!("`{t}` is not a DNS name"));
        }
    }
    if f.names.is_empty() {
        cx.err::<()>(c.span().start, format!("certificate `{name}` lists no names"));
    }
    let dns_provider = match (&f.dns_provider, challenge) {
        (Some(s), Challenge::Dns01) => {
            let p = cx.text(s)?;
            // The provider's zone must hold every name (`*.` aside).
            if let Some(zone) = models.iter().find(|m| m.name == p).and_then(|m| m.zone.as_deref()) {
                for n in &names {
                    let base = n.strip_prefix("*.").unwrap_or(n);
                    if base != zone && !base.ends_with(&format!(".{zone}")) {
                        cx.err::<()>(s.span().start, format!("`{n}` is not in the zone `{zone}` of `[acme.dns_providers.{p}]`: give this name a provider for its own zone"));
                    }
                }
            }
            if !providers.contains_key(&p) {
                let hint = match closest(&p, providers.keys().map(String::as_str)) {
                    Some(c) => format!(" (did you mean `{c}`?)"),
                    None if providers.is_empty() => " (define it as `[acme.dns_providers.NAME]`)".into(),
                    None => format!(
                        " (defined: {})",
                        providers.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                    ),
                };
                cx.err::<()>(s.span().start, format!("no `[acme.dns_providers.{p}]` is defined{hint}"));
            }
            Some(p)
        }
        (Some(s), other) => cx.err(
            s.span().start,
            format!("`dns_provider` is used by dns-01 only, and this certificate uses {}; add `challenge = \"dns-01\"` or remove `dns_provider`", other.as_str()),
        ),
        (None, Challenge::Dns01) => cx.err(
            f.challenge.as_ref().map_or(c.span().start, |s| s.span().start),
            format!("certificate `{name}` uses dns-01 and needs `dns_provider = \"NAME\"` naming an `[acme.dns_providers.NAME]`"),
        ),
        (None, _) => None,
    };
    let profile = match &f.profile {
        None => None,
        Some(s) => {
            let t = cx.text(s)?;
            if t.is_empty()
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                cx.err::<()>(
                    s.span().start,
                    format!("`{t}` is not an ACME profile name (such as `tlsserver` or `shortlived`)"),
                );
            }
            Some(t)
        }
    };
    let directory = f.directory.as_ref().and_then(|s| url(cx, s));
    Some(AcmeCert {
        name,
        names,
        directory,
        challenge,
        dns_provider,
        profile,
    })
}

/// The keys each `kind` accepts besides `kind`, `zone`, `propagation_timeout` and
/// `nameservers`.
const KIND_KEYS: &[(&str, &[&str])] = &[
    (
        "rfc2136",
        &["server", "tsig_key_name", "tsig_algorithm", "tsig_secret"],
    ),
    ("alidns", &["access_key_id", "access_key_secret", "endpoint"]),
    ("cloudflare", &["api_token", "endpoint"]),
    ("exec", &["command", "timeout"]),
];

/// One `[acme.dns_providers.NAME]`.
/// A DNS name in the form CAs issue for: LDH labels (RFC 5890 section 2.3.1: letters,
/// digits and `-`, not first or last, at most 63), at most 253 bytes. Single labels
/// (`localhost`) pass here and are held back at run time for public CAs (acme/names.rs).
fn acme_name(n: &str) -> bool {
    n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// One `[acme.dns_providers.NAME]`. Its timeouts must fit in the order's (`order_timeout`).
fn dns_provider(
    cx: &mut Ctx<'_>,
    name: &str,
    p: &serde_spanned::Spanned<file::DnsProvider>,
    order_timeout: Duration,
) -> Option<DnsProvider> {
    let at = p.span().start;
    let f = p.get_ref();
    let Some(kind_s) = &f.kind else {
        return cx.err(
            at,
            format!(
                "`[acme.dns_providers.{name}]` needs `kind` (`rfc2136`, `alidns`, `cloudflare` or `exec`)"
            ),
        );
    };
    let kind = cx.text(kind_s)?;
    let Some(&(_, allowed)) = KIND_KEYS.iter().find(|(k, _)| *k == kind) else {
        return cx.err(
            kind_s.span().start,
            format!("`{kind}` is not a DNS provider kind; write `rfc2136`, `alidns`, `cloudflare` or `exec`"),
        );
    };
    let given: [(&str, &Option<S>); 10] = [
        ("server", &f.server),
        ("tsig_key_name", &f.tsig_key_name),
        ("tsig_algorithm", &f.tsig_algorithm),
        ("tsig_secret", &f.tsig_secret),
        ("access_key_id", &f.access_key_id),
        ("access_key_secret", &f.access_key_secret),
        ("api_token", &f.api_token),
        ("endpoint", &f.endpoint),
        ("command", &f.command),
        ("timeout", &f.timeout),
    ];
    for (key, v) in given {
        if let Some(s) = v {
            if !allowed.contains(&key) {
                cx.err::<()>(
                    s.span().start,
                    format!(
                        "`{key}` is not a setting of the `{kind}` DNS provider (it takes {})",
                        allowed
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
    }
    let required = |cx: &mut Ctx<'_>, key: &str, v: &Option<S>| -> Option<String> {
        match v {
            Some(s) => match cx.text(s) {
                Some(t) if t.is_empty() => cx.err(
                    s.span().start,
                    format!("`{key}` is empty (is its environment variable set?)"),
                ),
                t => t,
            },
            None => cx.err(at, format!("the `{kind}` DNS provider needs `{key}`")),
        }
    };
    let endpoint = |cx: &mut Ctx<'_>, default: &str| -> String {
        match &f.endpoint {
            None => default.to_owned(),
            Some(s) => match cx.text(s) {
                Some(t) if t.starts_with("https://") || t.starts_with("http://") => {
                    t.trim_end_matches('/').to_owned()
                }
                Some(t) => cx
                    .err(s.span().start, format!("`{t}` is not a URL (https://...)"))
                    .unwrap_or_default(),
                None => String::new(),
            },
        }
    };
    let kind = match kind.as_str() {
        "rfc2136" => {
            let server = f.server.as_ref().and_then(|s| nameserver(cx, s));
            if f.server.is_none() {
                cx.err::<()>(
                    at,
                    "the `rfc2136` DNS provider needs `server` (the zone's primary, `IP:port`)",
                );
            }
            let tsig_key_name = required(cx, "tsig_key_name", &f.tsig_key_name);
            let secret = required(cx, "tsig_secret", &f.tsig_secret);
            if let (Some(s), Some(t)) = (&f.tsig_secret, &secret) {
                use base64::Engine;
                if base64::engine::general_purpose::STANDARD
                    .decode(t.trim())
                    .is_err()
                {
                    cx.err::<()>(s.span().start, "`tsig_secret` is not base64 (the `secret` of the server's `key` statement, as `tsig-keygen` prints it)");
                }
            }
            let algorithm = match &f.tsig_algorithm {
                None => Some(TsigAlgorithm::HmacSha256),
                Some(s) => match cx.text(s)?.to_ascii_lowercase().as_str() {
                    "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
                    "hmac-sha384" => Some(TsigAlgorithm::HmacSha384),
                    "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
                    other => cx.err(s.span().start, format!("`{other}` is not a TSIG algorithm the gateway signs with; write `hmac-sha256`, `hmac-sha384` or `hmac-sha512`")),
                },
            };
            DnsProviderKind::Rfc2136(Rfc2136 {
                server: server?,
                tsig_key_name: tsig_key_name?,
                tsig_algorithm: algorithm?,
                tsig_secret: Secret(secret?.trim().to_owned()),
            })
        }
        "alidns" => {
            let id = required(cx, "access_key_id", &f.access_key_id);
            let secret = required(cx, "access_key_secret", &f.access_key_secret);
            let endpoint = endpoint(cx, ALIDNS_ENDPOINT);
            DnsProviderKind::Alidns(Alidns {
                access_key_id: id?,
                access_key_secret: Secret(secret?),
                endpoint,
            })
        }
        "cloudflare" => {
            let token = required(cx, "api_token", &f.api_token);
            let endpoint = endpoint(cx, CLOUDFLARE_ENDPOINT);
            DnsProviderKind::Cloudflare(Cloudflare {
                api_token: Secret(token?),
                endpoint,
            })
        }
        _ => {
            let command = match &f.command {
                Some(s) => cx.path(s).and_then(|p| {
                    use std::os::unix::fs::PermissionsExt;
                    match std::fs::metadata(&p) {
                        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Some(p),
                        Ok(m) if m.is_dir() => cx.err(s.span().start, format!("`{}` is a directory, not the hook program", p.display())),
                        Ok(_) => cx.err(s.span().start, format!("`{}` is not executable: `chmod +x` it", p.display())),
                        Err(e) if p.to_string_lossy().contains(' ') => cx.err(s.span().start, format!("cannot use `{}` as the DNS hook: {e}; `command` is one program, run without a shell and without arguments (it is called `COMMAND present|cleanup FQDN VALUE`): put any arguments in a wrapper script", p.display())),
                        Err(e) => cx.err(s.span().start, format!("cannot use `{}` as the DNS hook: {e}", p.display())),
                    }
                }),
                None => cx.err(at, "the `exec` DNS provider needs `command` (the script run as `COMMAND present|cleanup FQDN VALUE`)"),
            };
            let timeout = cx.positive_duration(&f.timeout, Duration::from_secs(60), "`timeout`");
            if let Some(s) = &f.timeout {
                if timeout >= order_timeout {
                    cx.err::<()>(s.span().start, format!("`timeout` ({timeout:?}) must be shorter than `[acme] order_timeout` ({order_timeout:?}), which bounds the whole order"));
                }
            }
            DnsProviderKind::Exec(ExecHook {
                command: command?,
                timeout,
            })
        }
    };
    let zone = match &f.zone {
        None => None,
        Some(s) => {
            let t = cx.text(s)?.trim_end_matches('.').to_ascii_lowercase();
            if !valid_hostname(&t) {
                cx.err::<()>(s.span().start, format!("`{t}` is not a DNS zone name"));
            }
            Some(t)
        }
    };
    let propagation_timeout = cx.positive_duration(
        &f.propagation_timeout,
        Duration::from_secs(120),
        "`propagation_timeout`",
    );
    if propagation_timeout >= order_timeout {
        let at = f.propagation_timeout.as_ref().map_or(at, |s| s.span().start);
        cx.err::<()>(at, format!("`propagation_timeout` ({propagation_timeout:?}) must be shorter than `[acme] order_timeout` ({order_timeout:?}), which bounds the whole order"));
    }
    let nameservers = f.nameservers.iter().filter_map(|s| nameserver(cx, s)).collect();
    Some(DnsProvider {
        name: name.to_owned(),
        kind,
        zone,
        propagation_timeout,
        nameservers,
    })
}

/// `IP` or `IP:port` (`[v6]:port`) of a name server; port 53 when not given.
fn nameserver(cx: &mut Ctx<'_>, s: &S) -> Option<SocketAddr> {
    let t = cx.text(s)?;
    if let Ok(a) = t.parse::<SocketAddr>() {
        if a.port() == 0 {
            return cx.err(s.span().start, format!("`{t}`: port 0 is no server's port"));
        }
        return Some(a);
    }
    if let Ok(ip) = t.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    cx.err(s.span().start, format!("`{t}` is not a name server address; write an IP and optionally a port (`192.0.2.53`, `127.0.0.1:5353`, `[2001:db8::53]:53`)"))
}
