//! Edge policies (`[policies.NAME]`), validated: what a route checks or changes before and
//! around proxying. The runtime side is in the proxy crate (`policy/`), the decisions in
//! the `gateway-policy` crate.

use ipnet::IpNet;
use std::path::PathBuf;
use std::time::Duration;

/// One `[policies.NAME]` table; a route lists the policies it uses, applied in that order.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub basic_auth: Option<BasicAuth>,
    pub forward_auth: Option<ForwardAuth>,
    /// `allow` / `deny` rules in file order; the first that matches the client decides
    /// (nginx `allow`/`deny`); none matching lets the request through.
    pub access: Vec<AccessRule>,
    pub rate_limit: Option<RateLimit>,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
}

/// `basic_auth = { realm, users | htpasswd_file, forward_authorization }` (nginx
/// `auth_basic` + `auth_basic_user_file`, Caddy `basic_auth`, Traefik BasicAuth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// Sent in `WWW-Authenticate: Basic realm="..."` (RFC 7617).
    pub realm: String,
    /// `user` → password hash, in the formats `htpasswd` writes: bcrypt (`$2y$`, `$2a$`,
    /// `$2b$`) or argon2id (`$argon2id$`); the inline `users` and the file's lines together.
    pub users: Vec<(String, String)>,
    /// Re-read on reload and when it changes (the reloader watches it).
    pub htpasswd_file: Option<PathBuf>,
    /// Send the client's `Authorization` on to the upstream (default: removed).
    pub forward_authorization: bool,
}

/// `forward_auth = { url, copy_headers, timeout }` (nginx `auth_request`, Caddy
/// `forward_auth`, Traefik ForwardAuth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuth {
    /// `http://host:port/path`: asked with the client's `Cookie`, `Authorization` and
    /// `X-Forwarded-Method/-Proto/-Host/-Uri` before each request.
    pub url: String,
    /// Host and port of `url` (resolved like an upstream's address).
    pub host: String,
    pub port: u16,
    /// The path and query of `url`.
    pub path: String,
    /// Headers of a 2xx answer set on the proxied request (the client's own removed).
    pub copy_headers: Vec<String>,
    /// For the whole auth exchange; over it the client gets 503, never a pass.
    pub timeout: Duration,
}

/// One `allow` or `deny` entry: a network (an address is a /32 or /128) or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessRule {
    Allow(Option<IpNet>),
    Deny(Option<IpNet>),
}

impl AccessRule {
    /// The network, `None` for `all`.
    pub fn net(&self) -> Option<IpNet> {
        match self {
            AccessRule::Allow(n) | AccessRule::Deny(n) => *n,
        }
    }
}

/// `rate_limit = { rate = "10/s", burst = 20, key = "client" }` (nginx `limit_req`, in
/// memory per instance, a token bucket / GCRA).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Requests per second (`10/s`, `600/m`, `3600/h`).
    pub per_second: f64,
    /// Requests allowed at once above the rate (nginx `burst`, with `nodelay`).
    pub burst: u32,
    pub key: RateKey,
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The client address, as established through `forwarding.trusted_proxies`.
    Client,
    /// A request header's value (`header:X-Api-Key`), lower-case name; requests without it
    /// share one bucket.
    Header(String),
}

/// `request_headers` / `response_headers = { set = {...}, remove = [...] }` (nginx
/// `proxy_set_header` / `add_header`, Caddy `header`, Traefik Headers).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderRules {
    /// Applied after `remove`; values may use the variables of [`HeaderVar`].
    pub set: Vec<(String, Vec<TemplatePart>)>,
    /// Lower-case names.
    pub remove: Vec<String>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// A piece of a header value template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Text(String),
    Var(HeaderVar),
}

/// Variables of header rules, with nginx's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderVar {
    /// `$remote_addr`: the client address (through trusted proxies).
    RemoteAddr,
    /// `$scheme`: `https` (or `http` on the `:80` listener).
    Scheme,
    /// `$host`: the request's host name, without port.
    Host,
    /// `$prefix`: the route's matched prefix (`/nodered/`), empty for an exact route.
    Prefix,
    /// `$request_id`: the request's id (also in the access log and error pages).
    RequestId,
}

impl HeaderVar {
    pub const ALL: [(&'static str, HeaderVar); 5] = [
        ("remote_addr", HeaderVar::RemoteAddr),
        ("scheme", HeaderVar::Scheme),
        ("host", HeaderVar::Host),
        ("prefix", HeaderVar::Prefix),
        ("request_id", HeaderVar::RequestId),
    ];
}
