//! The on-disk format of `proxy.toml`: serde structs that mirror the file one to one.
//!
//! Nothing here is interpreted: every string keeps its span so that the conversion in
//! `validate.rs` can point at the exact line and column of a bad value.

use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;

/// A string as written in the file, with its byte span.
pub type S = Spanned<String>;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub tls: Tls,
    pub acme: Option<Acme>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub forwarding: Forwarding,
    #[serde(default)]
    pub logging: Logging,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<Upstream>>,
    #[serde(default)]
    pub routes: Vec<Spanned<Route>>,
    /// `[policies.NAME]`: edge policies routes refer to by name.
    #[serde(default)]
    pub policies: BTreeMap<String, Spanned<Policy>>,
    #[serde(default)]
    pub errors: Errors,
}

/// `[policies.NAME]`: what a route does before (and around) proxying.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub basic_auth: Option<Spanned<BasicAuth>>,
    pub forward_auth: Option<Spanned<ForwardAuth>>,
    /// Evaluated with `deny` in the order the two keys appear in the file (nginx order).
    pub allow: Option<Spanned<Vec<S>>>,
    pub deny: Option<Spanned<Vec<S>>>,
    pub rate_limit: Option<Spanned<RateLimit>>,
    pub request_headers: Option<Spanned<HeaderRules>>,
    pub response_headers: Option<Spanned<HeaderRules>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub realm: Option<S>,
    pub htpasswd_file: Option<S>,
    pub users: Option<Vec<S>>,
    pub forward_authorization: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuth {
    pub url: S,
    pub copy_headers: Option<Vec<S>>,
    pub timeout: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub rate: S,
    pub burst: Option<Spanned<i64>>,
    pub key: Option<S>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HeaderRules {
    pub set: Option<BTreeMap<String, S>>,
    pub remove: Option<Vec<S>>,
}

/// `[errors]`: the pages of the responses the gateway makes itself.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Errors {
    pub pages: Option<S>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub http: Option<Addrs>,
    pub https: Option<Addrs>,
    pub metrics: Option<S>,
    pub public_https_port: Option<Spanned<i64>>,
    /// A policy whose `allow`/`deny` guard the metrics listener.
    pub metrics_policy: Option<S>,
    /// PROXY protocol v1/v2 expected on both public listeners.
    pub proxy_protocol: Option<Spanned<bool>>,
    pub proxy_protocol_timeout: Option<S>,
}

/// A listen address, or a list of them (`["0.0.0.0:443", "[::]:443"]`).
pub type Addrs = Spanned<AddrsRaw>;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum AddrsRaw {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub threads: Option<Spanned<i64>>,
    pub grace_period: Option<S>,
    pub acme_webroot: Option<S>,
    pub watch_config: Option<bool>,
    pub work_stealing: Option<bool>,
    pub reuseport: Option<bool>,
    pub dns_refresh: Option<S>,
    pub resolver: Option<Vec<S>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub default_certificate: Option<S>,
    pub session_cache: Option<Spanned<i64>>,
    pub session_tickets: Option<bool>,
    #[serde(default)]
    pub certificates: Vec<Spanned<CertFiles>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    pub name: S,
    #[serde(default)]
    pub hosts: Vec<S>,
    pub cert: S,
    pub key: S,
    pub if_missing: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    pub directory: Option<S>,
    #[serde(default)]
    pub fallback_directories: Vec<S>,
    pub email: Option<S>,
    pub storage: Option<S>,
    pub ca_root: Option<S>,
    pub https_proxy: Option<S>,
    pub eab_kid: Option<S>,
    pub eab_hmac_key: Option<S>,
    pub retry_min: Option<S>,
    pub retry_max: Option<S>,
    pub connect_timeout: Option<S>,
    pub request_timeout: Option<S>,
    pub order_timeout: Option<S>,
    pub lease_ttl: Option<S>,
    pub local_storage: Option<S>,
    pub poll_interval: Option<S>,
    #[serde(default)]
    pub certificates: Vec<Spanned<AcmeCert>>,
    #[serde(default)]
    pub dns_providers: BTreeMap<String, Spanned<DnsProvider>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeCert {
    pub name: S,
    pub names: Vec<S>,
    pub directory: Option<S>,
    pub challenge: Option<S>,
    pub dns_provider: Option<S>,
    pub profile: Option<S>,
}

/// `[acme.dns_providers.NAME]`: the keys of every kind; `validate` refuses those that do
/// not belong to the section's `kind`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsProvider {
    pub kind: Option<S>,
    pub zone: Option<S>,
    pub propagation_timeout: Option<S>,
    #[serde(default)]
    pub nameservers: Vec<S>,
    pub server: Option<S>,
    pub tsig_key_name: Option<S>,
    pub tsig_algorithm: Option<S>,
    pub tsig_secret: Option<S>,
    pub access_key_id: Option<S>,
    pub access_key_secret: Option<S>,
    pub api_token: Option<S>,
    pub endpoint: Option<S>,
    pub command: Option<S>,
    pub timeout: Option<S>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_body: Option<SizeValue>,
    pub max_header_bytes: Option<SizeValue>,
    pub max_header_count: Option<Spanned<i64>>,
    pub header_read_timeout: Option<S>,
    pub body_read_timeout: Option<S>,
    pub send_timeout: Option<S>,
    pub max_uri: Option<SizeValue>,
    pub keepalive_timeout: Option<S>,
}

/// A size may be written as a number of bytes or as a string such as `"500M"`.
pub type SizeValue = Spanned<SizeRaw>;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SizeRaw {
    Bytes(i64),
    Text(String),
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    pub enabled: Option<bool>,
    pub algorithms: Option<Vec<S>>,
    pub level: Option<Spanned<i64>>,
    pub min_length: Option<SizeValue>,
    pub types: Option<Vec<S>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Security {
    pub headers: Option<BTreeMap<String, S>>,
    pub hsts: Option<S>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Forwarding {
    pub trusted_proxies: Option<Vec<S>>,
    pub host_header: Option<S>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    pub access_log: Option<S>,
    pub access_log_file: Option<S>,
    pub level: Option<S>,
    pub format: Option<S>,
    /// `[logging.formats]`: name → nginx `log_format` text.
    pub formats: Option<BTreeMap<String, S>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// One name (every address it resolves to) or address; or `servers`.
    pub address: Option<S>,
    pub servers: Option<Spanned<Vec<Spanned<ServerEntry>>>>,
    pub balance: Option<S>,
    pub hash_key: Option<S>,
    pub max_fails: Option<Spanned<i64>>,
    pub fail_timeout: Option<S>,
    pub health_check: Option<Spanned<HealthCheck>>,
    pub next_upstream: Option<Spanned<Vec<S>>>,
    pub next_upstream_tries: Option<Spanned<i64>>,
    pub next_upstream_timeout: Option<S>,
    pub keepalive: Option<Spanned<i64>>,
    pub connect_timeout: Option<S>,
    pub read_timeout: Option<S>,
    pub write_timeout: Option<S>,
    pub idle_timeout: Option<S>,
    pub proxy_protocol: Option<S>,
}

/// One entry of `servers`: `"host:port"` or `{ address = "host:port", weight = 2, backup = true }`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a server as \"host:port\" or { address = \"host:port\", weight = N, backup = true } (weight and backup optional, no other keys)"
)]
pub enum ServerEntry {
    Address(String),
    Table(ServerTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTable {
    pub address: String,
    pub weight: Option<i64>,
    pub backup: Option<bool>,
}

/// `health_check = { path, interval, timeout, fails, passes, expect, host }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: Option<S>,
    pub interval: Option<S>,
    pub timeout: Option<S>,
    pub fails: Option<Spanned<i64>>,
    pub passes: Option<Spanned<i64>>,
    pub expect: Option<S>,
    pub host: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: Option<S>,
    pub host: Option<S>,
    pub prefix: Option<S>,
    pub exact: Option<S>,
    pub upstream: S,
    pub strip_prefix: Option<bool>,
    pub rewrite: Option<S>,
    pub websocket: Option<bool>,
    pub compress: Option<bool>,
    pub max_body: Option<SizeValue>,
    pub connect_timeout: Option<S>,
    pub read_timeout: Option<S>,
    pub write_timeout: Option<S>,
    pub idle_timeout: Option<S>,
    pub headers: Option<BTreeMap<String, S>>,
    pub policies: Option<Vec<S>>,
    pub maintenance: Option<bool>,
}
