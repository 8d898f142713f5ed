//! The validated configuration: plain types, no serde, every value already checked.
//!
//! Everything downstream (routing, TLS, the proxy) reads only these types, so the file
//! format can change without touching them.

use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A fully validated `proxy.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this configuration was read from (used in messages only).
    pub source: PathBuf,
    pub listen: Listen,
    pub server: Server,
    pub tls: Tls,
    pub acme: Option<Acme>,
    pub limits: Limits,
    pub compression: Compression,
    /// Response headers added to every response, errors and redirects included.
    pub security_headers: Vec<(String, String)>,
    pub forwarding: Forwarding,
    pub logging: Logging,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    /// `[policies.NAME]`, in name order.
    pub policies: Vec<Policy>,
    /// `[errors] pages`: a directory of custom pages (`502.html`, `404.json`...), re-read on
    /// reload; `None`: the built-in pages.
    pub error_pages: Option<PathBuf>,
}

impl Config {
    /// Looks up an upstream by name.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// Looks up a policy by name.
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name)
    }

    /// The settings that differ between `self` (running) and `new` and that a reload cannot
    /// apply, by their names in `proxy.toml`: they are fixed when the process starts
    /// (sockets, runtimes, Pingora's server settings, the TLS session cache) and take effect
    /// after `gateway upgrade` or a restart. This is the one list of restart-only settings.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let (o, n) = (self, new);
        let keepalive_sum = |c: &Config| c.upstreams.iter().map(|u| u.keepalive).sum::<usize>();
        let fields: [(&'static str, bool); 13] = [
            ("listen.http", o.listen.http != n.listen.http),
            ("listen.https", o.listen.https != n.listen.https),
            ("listen.metrics", o.listen.metrics != n.listen.metrics),
            (
                "listen.proxy_protocol",
                o.listen.proxy_protocol != n.listen.proxy_protocol,
            ),
            ("server.threads", o.server.threads != n.server.threads),
            (
                "server.work_stealing",
                o.server.work_stealing != n.server.work_stealing,
            ),
            ("server.reuseport", o.server.reuseport != n.server.reuseport),
            (
                "server.grace_period",
                o.server.grace_period != n.server.grace_period,
            ),
            ("tls.session_cache", o.tls.session_cache != n.tls.session_cache),
            (
                "tls.session_tickets",
                o.tls.session_tickets != n.tls.session_tickets,
            ),
            (
                "limits.keepalive_timeout (for HTTP/2 connections; HTTP/1.1 takes the new value now)",
                o.limits.keepalive_timeout != n.limits.keepalive_timeout,
            ),
            (
                "upstreams.*.keepalive (the size of the connection pool; the idle timeout applies now)",
                keepalive_sum(o) != keepalive_sum(n),
            ),
            ("logging.format", o.logging.format != n.logging.format),
        ];
        fields
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(name, _)| name)
            .collect()
    }
}

/// `a, b` for a list of listen addresses, `off` for none (logs, `gateway check`).
pub fn addr_list(addrs: &[SocketAddr]) -> String {
    if addrs.is_empty() {
        return "off".into();
    }
    addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// Plain HTTP: redirects to HTTPS and answers ACME HTTP-01 challenges; empty: `off`.
    pub http: Vec<SocketAddr>,
    /// At least one address. `[::]:443` alone is dual-stack on Linux (IPv4 clients arrive as
    /// IPv4-mapped addresses); listed beside an IPv4 wildcard it is IPv6 only.
    pub https: Vec<SocketAddr>,
    /// Prometheus `/metrics` and `/healthz`; never public.
    pub metrics: Option<SocketAddr>,
    /// The HTTPS port clients see (behind Docker port mapping it may differ from the bind port).
    pub public_https_port: u16,
    /// The policy whose `allow`/`deny` rules guard the metrics listener (403 otherwise).
    pub metrics_policy: Option<String>,
    /// Both public listeners expect a PROXY protocol v1 or v2 header first (a layer-4 load
    /// balancer in front), accepted only from `forwarding.trusted_proxies`; its source
    /// address becomes the client address (HAProxy's `accept-proxy`, nginx's
    /// `listen ... proxy_protocol`).
    pub proxy_protocol: bool,
    /// The deadline for the whole PROXY header (nginx's `proxy_protocol_timeout`); default 5 s.
    pub proxy_protocol_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub threads: usize,
    /// Time given to in-flight requests after SIGTERM.
    pub grace_period: Duration,
    /// Directory served under `/.well-known/acme-challenge/` (certbot's webroot mode).
    pub acme_webroot: Option<PathBuf>,
    /// Reload automatically when `proxy.toml` changes on disk.
    pub watch_config: bool,
    /// One work-stealing runtime (true) or one runtime per thread (false, the default).
    pub work_stealing: bool,
    /// One HTTPS listening socket (SO_REUSEPORT) and accept loop per worker thread (default).
    pub reuseport: bool,
    /// How often upstream host names are resolved again.
    pub dns_refresh: Duration,
    /// Name servers for upstream host names (nginx `resolver`), port 53 unless given. Empty:
    /// the system's, from `/etc/resolv.conf`, with `/etc/hosts` first (Docker's embedded DNS
    /// at 127.0.0.11 in a compose network).
    pub resolver: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub certificates: Vec<CertFiles>,
    /// Certificate served to clients without SNI or with an unknown name.
    pub default_certificate: Option<String>,
    /// Sessions kept for resumption by session ID, shared by every thread (nginx
    /// `ssl_session_cache shared:SSL:10m` holds about 40,000). Applied at start.
    pub session_cache: usize,
    /// Stateless session tickets (RFC 5077 / RFC 8446 §4.6.1) with keys rotated every 6 hours,
    /// shared by every thread (nginx `ssl_session_tickets`). Applied at start.
    pub session_tickets: bool,
}

/// What to do when a configured certificate file does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMissing {
    /// Refuse the configuration.
    Error,
    /// Serve a generated self-signed certificate until the files appear.
    SelfSigned,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub name: String,
    /// SNI names served with this certificate; empty means "read them from the certificate".
    pub hosts: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub if_missing: IfMissing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    pub directory: String,
    pub fallback_directories: Vec<String>,
    pub email: Option<String>,
    /// The directory the certificates are kept in: `storage`, or with an `s3://` storage
    /// this instance's own copy (`local_storage`).
    pub storage: PathBuf,
    /// `s3://bucket/prefix` when `storage` names object storage (OSS, S3, MinIO): the
    /// shared state (certificates, leases, HTTP-01 answers); `None` for a directory.
    pub object_storage: Option<String>,
    pub ca_root: Option<PathBuf>,
    pub https_proxy: Option<String>,
    pub eab: Option<(String, String)>,
    pub certificates: Vec<AcmeCert>,
    /// First wait after a failed attempt; doubles per failure up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Longest wait for the TCP connection to the CA (or to `https_proxy`).
    pub connect_timeout: Duration,
    /// Longest time one request to the CA may take, from connecting to the last byte of
    /// the response (TLS handshake and proxy CONNECT included).
    pub request_timeout: Duration,
    /// Longest time one whole order may take (account, order, validation, download); a
    /// stalled order counts as a failed attempt.
    pub order_timeout: Duration,
    /// How long a certificate's lease (the right to order it, one instance at a time across
    /// every gateway sharing the storage) lasts without renewal; the holder renews it every
    /// third of that. An instance that dies loses it this long after its last renewal.
    pub lease_ttl: Duration,
    /// How often an instance looks in the storage for a certificate another one stored
    /// (with ±20 % jitter), and how often a waiting instance checks the lease.
    pub poll_interval: Duration,
    /// `[acme.dns_providers.NAME]`, in file order.
    pub dns_providers: Vec<DnsProvider>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeCert {
    pub name: String,
    pub names: Vec<String>,
    /// This certificate's ACME directory, instead of the section's `directory`
    /// (`fallback_directories` still follow it).
    pub directory: Option<String>,
    /// How the CA validates the names (`challenge`, default `http-01`).
    pub challenge: Challenge,
    /// The `[acme.dns_providers.NAME]` publishing the TXT records (`dns_provider`); set
    /// exactly when `challenge` is `dns-01`.
    pub dns_provider: Option<String>,
    /// The ACME profile to order (`profile`, draft-ietf-acme-profiles: `tlsserver`,
    /// `shortlived`, ...); `None`: the CA's default.
    pub profile: Option<String>,
}

pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_body: u64,
    pub max_header_bytes: usize,
    pub max_header_count: usize,
    pub header_read_timeout: Duration,
    /// Longest pause allowed between two reads of a request body (nginx `client_body_timeout`):
    /// past it the client gets 408 and the connection is closed.
    pub body_read_timeout: Duration,
    /// Longest pause allowed between two successful writes of a response to the client
    /// (nginx `send_timeout`): a client that stops reading is closed after it.
    pub send_timeout: Duration,
    /// Longest request-target in bytes (nginx `large_client_header_buffers` size, 8 KiB):
    /// longer ones get 414 (RFC 9112 §3).
    pub max_uri: usize,
    pub keepalive_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Gzip,
    Brotli,
    Zstd,
}

impl Algorithm {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Gzip => "gzip",
            Algorithm::Brotli => "br",
            Algorithm::Zstd => "zstd",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    pub enabled: bool,
    pub algorithms: Vec<Algorithm>,
    pub level: u32,
    pub min_length: u64,
    /// MIME types (without parameters, lower case) that are compressed.
    pub types: Vec<String>,
}

/// The reference `gzip_types`, plus `text/html`, which nginx always compresses, and
/// `application/x-ndjson` (streamed token answers of Open WebUI / Ollama).
pub const DEFAULT_COMPRESSIBLE_TYPES: &[&str] = &[
    "text/html",
    "text/plain",
    "text/css",
    "text/xml",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/xml+rss",
    "text/javascript",
    "application/x-font-ttf",
    "font/opentype",
    "image/svg+xml",
    "application/x-ndjson",
];

/// Which `Host` header the upstream receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostHeader {
    /// As the client sent it, port included.
    Client,
    /// nginx's `$host`: the name without its port, lower-cased.
    NginxHost,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Forwarding {
    pub trusted_proxies: Vec<IpNet>,
    pub host_header: HostHeader,
}

mod access_format;
pub use access_format::{AccessFormat, FormatError, LogPart, LogVar};
mod policy;
pub use policy::*;
mod upstream;
pub use upstream::*;
mod acme_dns;
pub use acme_dns::*;

/// `[logging] access_log`: what each request writes to the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    /// One JSON object per line (fields in `docs/configuration.md`).
    Json,
    /// nginx's `combined` followed by ` route=$route upstream=$upstream duration=$request_time`.
    Combined,
    /// A format of `[logging.formats]` (nginx's `log_format`), compiled when the file is read.
    Custom(AccessFormat),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    pub access_log: AccessLog,
    /// `access_log_file`: access lines go to this file (appended, reopened on SIGUSR1 as
    /// nginx's `-s reopen` does for logrotate) instead of stdout. `None`: stdout.
    pub access_log_file: Option<PathBuf>,
    /// A `tracing` filter such as `info` or `info,gateway=debug` (checked when the file is
    /// read: every bare word is a level).
    pub level: String,
    /// How log lines (stderr) are written; the access log has its own `access_log`.
    pub format: LogFormat,
}

/// The shape of log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `tracing`'s human-readable lines; colours only when stderr is a terminal.
    Text,
    /// One JSON object per line (Loki, Alibaba Cloud SLS, journald's JSON readers).
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    /// Idle time allowed on an upgraded (WebSocket) or streaming connection, and on pooled
    /// upstream connections.
    pub idle: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: matches any name ending with it.
    Suffix(String),
}

impl std::fmt::Display for HostMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// nginx `location /prefix/`.
    Prefix(String),
    /// nginx `location = /path`.
    Exact(String),
}

impl PathMatch {
    pub fn path(&self) -> &str {
        match self {
            PathMatch::Prefix(p) | PathMatch::Exact(p) => p,
        }
    }
}

impl std::fmt::Display for PathMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathMatch::Prefix(p) => write!(f, "{p}"),
            PathMatch::Exact(p) => write!(f, "= {p}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Label used in logs and metrics.
    pub name: String,
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    pub upstream: String,
    /// Replacement for the matched part of the path (nginx `proxy_pass http://up/new/;`).
    pub rewrite: Option<String>,
    pub websocket: bool,
    pub compress: bool,
    pub max_body: u64,
    pub timeouts: Timeouts,
    pub response_headers: Vec<(String, String)>,
    /// Names of the policies applied, in order (each exists in `Config::policies`).
    pub policies: Vec<String>,
    /// 503 with `Retry-After` and the maintenance page (switchable at run time by
    /// `gateway maintenance on|off ROUTE`).
    pub maintenance: bool,
}

impl AsRef<Route> for Route {
    fn as_ref(&self) -> &Route {
        self
    }
}
