//! `gateway doctor [--config FILE] [--public-ip IP] [--json]`: a pre-flight and health report
//! to run before pointing DNS at the server, and again when something is wrong. Each finding
//! is `OK|WARN|FAIL <check>: <finding> (<what to do>)`; exit 1 on any FAIL.
//!
//! Checks, in order: the configuration (what `gateway check` says), the listeners (can be
//! bound, or are held by the gateway running with this run directory), DNS for every ACME
//! name (resolves; includes `--public-ip`; no AAAA while listening on IPv4 only, since Let's
//! Encrypt validates over IPv6 first; CAA allows the CA), the CA (its directory answers in
//! time, the clock is within a minute of its `Date`), each upstream server (resolves,
//! accepts a connection, the time of a `HEAD /`; what app it is and whether its route's
//! prefix suits it: `doctor/apps.rs`), and the certificates (names, issuer, days left,
//! placeholder or not).

mod apps;
mod dns;

use gateway_config::Config;
use serde::Serialize;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub level: Level,
    /// `config`, `listen.https`, `dns example.com`, `ca`, `clock`, `upstream api`, `app /n8n/`,
    /// `certificate main`.
    pub check: String,
    pub finding: String,
    /// What to do; empty for an OK.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        write!(f, "{level} {}: {}", self.check, self.finding)?;
        if !self.fix.is_empty() {
            write!(f, " ({})", self.fix)?;
        }
        Ok(())
    }
}

/// The findings so far.
#[derive(Default)]
pub(crate) struct Report(Vec<Finding>);

impl Report {
    pub(crate) fn add(
        &mut self,
        level: Level,
        check: impl Into<String>,
        finding: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.0.push(Finding {
            level,
            check: check.into(),
            finding: finding.into(),
            fix: fix.into(),
        });
    }
    pub(crate) fn ok(&mut self, check: impl Into<String>, finding: impl Into<String>) {
        self.add(Level::Ok, check, finding, "");
    }
}

/// Options of `gateway doctor`.
pub struct Options<'a> {
    pub config: &'a Path,
    pub run_dir: &'a Path,
    /// The address clients reach this host at (the load balancer's or the VM's public IP).
    pub public_ip: Option<IpAddr>,
    pub json: bool,
}

/// Runs every check and prints the report. Exit 1 on any FAIL.
pub fn run(o: &Options<'_>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the checks: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(checks(o));
    if o.json {
        println!("{}", serde_json::to_string_pretty(&report.0).unwrap_or_default());
    } else {
        for f in &report.0 {
            println!("{f}");
        }
    }
    if report.0.iter().any(|f| f.level == Level::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn checks(o: &Options<'_>) -> Report {
    let mut r = Report::default();
    let cfg = match gateway_config::load(o.config) {
        Ok(c) => {
            r.ok(
                "config",
                format!(
                    "{} is valid ({} routes, {} upstreams)",
                    o.config.display(),
                    c.routes.len(),
                    c.upstreams.len()
                ),
            );
            c
        }
        Err(errors) => {
            for e in &errors.0 {
                r.add(
                    Level::Fail,
                    "config",
                    e.to_string(),
                    "fix the file; `gateway check` shows the same",
                );
            }
            return r;
        }
    };
    listeners(&mut r, &cfg, o.run_dir);
    dns::names(&mut r, &cfg, o.public_ip).await;
    acme_path(&mut r, &cfg, o.public_ip).await;
    ca(&mut r, &cfg).await;
    upstreams(&mut r, &cfg).await;
    certificates(&mut r, &cfg);
    r
}

/// Each listen address can be bound, or is held by the gateway running here.
fn listeners(r: &mut Report, cfg: &Config, run_dir: &Path) {
    let running = crate::control::status(run_dir, Duration::from_secs(2)).ok();
    let problems = crate::preflight::check_listeners(cfg);
    let all: Vec<(&str, SocketAddr)> = cfg
        .listen
        .https
        .iter()
        .map(|a| ("listen.https", *a))
        .chain(cfg.listen.http.iter().map(|a| ("listen.http", *a)))
        .chain(cfg.listen.metrics.map(|a| ("listen.metrics", a)))
        .collect();
    for (key, addr) in all {
        let problem = problems.iter().find(|p| p.contains(&format!("{key} = {addr}:")));
        match (problem, &running) {
            (None, _) => r.ok(key, format!("{addr} can be bound")),
            (Some(_), Some(s)) => r.ok(
                key,
                format!("{addr} is held by the running gateway (pid {})", s.pid),
            ),
            (Some(p), None) => r.add(
                Level::Fail,
                key,
                p.clone(),
                "stop what holds the port, or change the address",
            ),
        }
    }
}

/// With an http-01 certificate: port 80 answers the ACME path itself (the gateway's 404 with
/// its `X-Request-Id`, not a redirect or another server's page), through `--public-ip` when
/// given (what the CA reaches), else the local HTTP listener.
async fn acme_path(r: &mut Report, cfg: &Config, public_ip: Option<IpAddr>) {
    let Some(acme) = &cfg.acme else { return };
    let Some(cert) = acme
        .certificates
        .iter()
        .find(|c| c.challenge == gateway_config::Challenge::Http01)
    else {
        return;
    };
    let check = "acme http-01";
    let addr = match (public_ip, cfg.listen.http.first()) {
        (Some(ip), _) => SocketAddr::new(ip, 80),
        (None, Some(a)) if a.ip().is_unspecified() => {
            let lo: IpAddr = if a.is_ipv6() {
                std::net::Ipv6Addr::LOCALHOST.into()
            } else {
                std::net::Ipv4Addr::LOCALHOST.into()
            };
            SocketAddr::new(lo, a.port())
        }
        (None, Some(a)) => *a,
        (None, None) => {
            r.add(
                Level::Fail,
                check,
                format!(
                    "certificate `{}` uses http-01 and the HTTP listener is off",
                    cert.name
                ),
                "turn `[listen] http` on, or use tls-alpn-01 or dns-01",
            );
            return;
        }
    };
    let host = cert.names.first().cloned().unwrap_or_else(|| "localhost".into());
    let token: u64 = rand_token();
    let path = format!("/.well-known/acme-challenge/gateway-doctor-{token:016x}");
    match probe(addr, &host, &path).await {
        Ok((404, true)) => r.ok(check, format!("http://{addr}{path} is answered by the gateway (404 for an unknown token)")),
        Ok((status, true)) if (300..400).contains(&status) => r.add(Level::Fail, check, format!("http://{addr} redirects the ACME path ({status})"), "the challenge path must be answered, not redirected: check what listens on port 80"),
        Ok((status, ours)) => r.add(
            if ours { Level::Warn } else { Level::Fail },
            check,
            format!("http://{addr}{path} answered {status}{}", if ours { "" } else { " without the gateway's X-Request-Id: another server answers port 80" }),
            "port 80 must reach this gateway (firewall, security group, load balancer, port mapping)",
        ),
        Err(e) => r.add(Level::Fail, check, format!("http://{addr}: {e}"), "port 80 must reach this gateway for http-01 (firewall, security group, port mapping), or use tls-alpn-01 or dns-01"),
    }
}

fn rand_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// `GET path` with `Host: host`: the status, and whether the gateway answered (its
/// `X-Request-Id` on its own responses).
async fn probe(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, bool), String> {
    let text = exchange(addr, &format!("GET {path}"), host, "").await?;
    let status = status_of(&text).ok_or_else(|| "no HTTP answer".to_owned())?;
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_ascii_lowercase();
    Ok((status, head.contains("\r\nx-request-id:")))
}

/// One HTTP/1.1 request (`request` is `METHOD path`, `extra` more header lines ending in
/// CRLF) with `Connection: close`, and the first 64 KiB of the answer as text. Each step has
/// 5 s; errors name the step.
pub(crate) async fn exchange(
    addr: SocketAddr,
    request: &str,
    host: &str,
    extra: &str,
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let step = Duration::from_secs(5);
    let mut s = tokio::time::timeout(step, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "no connection within 5 s".to_owned())?
        .map_err(|e| format!("connection refused or failed: {e}"))?;
    let req = format!("{request} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while buf.len() < 64 * 1024 {
        match tokio::time::timeout(step, s.read(&mut chunk)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) if buf.is_empty() => return Err(e.to_string()),
            Err(_) if buf.is_empty() => return Err(format!("no answer to {request} within 5 s")),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The status code of an answer's status line.
pub(crate) fn status_of(answer: &str) -> Option<u16> {
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// The CA's directory answers within 10 s; the clock is within a minute of its `Date`.
async fn ca(r: &mut Report, cfg: &Config) {
    let Some(acme) = &cfg.acme else {
        return;
    };
    if acme.certificates.is_empty() {
        return;
    }
    let client = match ca_client(acme.ca_root.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            r.add(Level::Fail, "ca", e, "check `ca_root`");
            return;
        }
    };
    let start = Instant::now();
    match client.get(&acme.directory).send().await {
        Ok(rsp) if rsp.status().is_success() => {
            let took = start.elapsed();
            r.ok(
                "ca",
                format!("{} answered in {} ms", acme.directory, took.as_millis()),
            );
            if let Some(date) = rsp.headers().get("date").and_then(|v| v.to_str().ok()) {
                clock(r, date);
            }
        }
        Ok(rsp) => r.add(
            Level::Fail,
            "ca",
            format!("{} answered {}", acme.directory, rsp.status()),
            "check `[acme] directory`",
        ),
        Err(e) => r.add(
            Level::Fail,
            "ca",
            format!(
                "{} did not answer: {}",
                acme.directory,
                gateway_tls::error_chain(&e)
            ),
            "check the route to the CA (firewall, DNS, `[acme] https_proxy`)",
        ),
    }
}

fn ca_client(root: Option<&Path>) -> Result<reqwest::Client, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let tls = match root {
        Some(path) => {
            use rustls::pki_types::{pem::PemObject, CertificateDer};
            let mut roots = rustls::RootCertStore::empty();
            let certs =
                CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
                roots.add(c).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .with_platform_verifier()
            .map_err(|e| e.to_string())?
            .with_no_client_auth(),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

/// The local clock against the CA's `Date` (RFC 9110 section 6.6.1, IMF-fixdate).
fn clock(r: &mut Report, date: &str) {
    let Ok(theirs) = chrono::DateTime::parse_from_rfc2822(date) else {
        return;
    };
    let ours = chrono::DateTime::<chrono::Utc>::from(SystemTime::now());
    let skew = (ours.timestamp() - theirs.timestamp()).abs();
    if skew > 60 {
        r.add(
            Level::Fail,
            "clock",
            format!("this host's clock is {skew} s off the CA's"),
            "run an NTP client (chrony, systemd-timesyncd); certificates and ACME requests depend on the time",
        );
    } else {
        r.ok("clock", format!("within {skew} s of the CA's"));
    }
}

/// Each server of each upstream resolves, accepts a connection and answers `HEAD /`; the app
/// behind each route is identified and its prefix checked (`apps.rs`).
async fn upstreams(r: &mut Report, cfg: &Config) {
    for u in &cfg.upstreams {
        for s in &u.servers {
            let check = format!("upstream {}", u.name);
            let authority = format!("{}:{}", s.host, s.port);
            let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(&authority).await {
                Ok(a) => a.collect(),
                Err(e) => {
                    r.add(
                        Level::Fail,
                        check,
                        format!("{authority} does not resolve: {e}"),
                        "check the name (in docker compose: the service name, and that it runs)",
                    );
                    continue;
                }
            };
            let Some(addr) = addrs.first().copied() else {
                r.add(
                    Level::Fail,
                    check,
                    format!("{authority} resolves to nothing"),
                    "check the name",
                );
                continue;
            };
            match head(addr, &s.host).await {
                Ok((status, took)) => r.ok(
                    check,
                    format!(
                        "{authority} ({addr}) answered HEAD / with {status} in {} ms",
                        took.as_millis()
                    ),
                ),
                Err(e) => r.add(
                    Level::Fail,
                    check,
                    format!("{authority} ({addr}): {e}"),
                    "start the service, or fix the address and port",
                ),
            }
        }
    }
    apps::check(r, cfg).await;
}

/// `HEAD /` over HTTP/1.1: the status and the time to the answer.
async fn head(addr: SocketAddr, host: &str) -> Result<(u16, Duration), String> {
    let start = Instant::now();
    let text = exchange(addr, "HEAD /", host, "").await?;
    let status = status_of(&text)
        .ok_or_else(|| format!("not an HTTP answer: {:?}", text.lines().next().unwrap_or("")))?;
    Ok((status, start.elapsed()))
}

/// Every certificate the gateway would serve: files as loaded, ACME from its storage.
fn certificates(r: &mut Report, cfg: &Config) {
    let now = SystemTime::now();
    let days = |t: SystemTime| t.duration_since(now).map_or(0, |d| d.as_secs() / 86_400);
    for c in &cfg.tls.certificates {
        let check = format!("certificate {}", c.name);
        match gateway_tls::pem::load_files(&c.cert, &c.key) {
            Ok(l) => {
                let left = days(l.not_after);
                let level = if left < 7 { Level::Fail } else if left < 21 { Level::Warn } else { Level::Ok };
                let fix = if level == Level::Ok { "" } else { "renew it (certbot renew), or let the gateway's ACME client manage it" };
                r.add(level, check, format!("{} from {}, {left} days left", l.names.join(", "), l.issuer), fix);
            }
            Err(e) => r.add(
                if c.if_missing == gateway_config::IfMissing::SelfSigned { Level::Warn } else { Level::Fail },
                check,
                gateway_tls::error_chain(&e),
                "install the files (a self-signed certificate is served meanwhile only with if_missing = \"self-signed\")",
            ),
        }
    }
    if let Some(acme) = &cfg.acme {
        for rep in gateway_tls::acme::report(acme) {
            let check = format!("certificate {}", rep.name);
            match (&rep.issuer, rep.not_after) {
                (Some(issuer), Some(end)) => {
                    let left = days(end);
                    let level = if left < 7 {
                        Level::Fail
                    } else if left < 14 {
                        Level::Warn
                    } else {
                        Level::Ok
                    };
                    let fix = if level == Level::Ok {
                        ""
                    } else {
                        "see `gateway certs`: the last error says why it is not renewed"
                    };
                    r.add(
                        level,
                        check,
                        format!(
                            "{} from {issuer}, {left} days left ({})",
                            rep.names.join(", "),
                            rep.challenge
                        ),
                        fix,
                    );
                }
                _ => r.add(
                    Level::Warn,
                    check,
                    format!(
                        "not issued yet: a self-signed placeholder is served for {} ({})",
                        rep.names.join(", "),
                        rep.challenge
                    ),
                    rep.status
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "it is ordered when the gateway starts".into()),
                ),
            }
        }
    }
}
