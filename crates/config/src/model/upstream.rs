//! `[upstreams.NAME]`: a group of servers, how requests are spread over them, and when a
//! server is taken out (nginx's `upstream` block, `server ... weight= backup max_fails=
//! fail_timeout=`, `proxy_next_upstream*`; NGINX Plus's `health_check`).

use super::Timeouts;
use std::ops::RangeInclusive;
use std::time::Duration;

/// Attempts per request at most (`next_upstream_tries`); Pingora's retry loop is sized to it.
pub const MAX_TRIES: u32 = 16;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upstream {
    pub name: String,
    /// At least one; `address = "..."` is one server. A name stands for every address it
    /// resolves to (re-resolved every `dns_refresh`), each a server of the group.
    pub servers: Vec<UpstreamServer>,
    pub balance: Balance,
    /// Failures within `fail_timeout` that take a server out for `fail_timeout` (nginx
    /// `max_fails`, default 1; 0: never). Ignored when the group has one server, as nginx does.
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub health_check: Option<HealthCheck>,
    /// What counts as a failed attempt, sent on to the next server (nginx `proxy_next_upstream`).
    pub next_upstream: NextUpstream,
    /// Attempts per request at most, the first included (nginx `proxy_next_upstream_tries`;
    /// `None`: as many as the group has servers).
    pub next_upstream_tries: Option<u32>,
    /// Time after which no further server is tried (nginx `proxy_next_upstream_timeout`;
    /// zero: no limit).
    pub next_upstream_timeout: Duration,
    /// Idle connections kept per upstream.
    pub keepalive: usize,
    pub timeouts: Timeouts,
    /// A PROXY protocol header sent first on every connection to the servers, carrying the
    /// client's address and port (HAProxy's `send-proxy` / `send-proxy-v2`); `None`: none.
    pub proxy_protocol: Option<SendProxy>,
}

/// The PROXY protocol version sent to an upstream (haproxy.org `proxy-protocol.txt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendProxy {
    /// The text header, `PROXY TCP4 ...\r\n` (section 2.1).
    V1,
    /// The binary header (section 2.2).
    V2,
}

impl Upstream {
    /// `host:port` of the first server (what `Host` falls back to for a request without one).
    pub fn authority(&self) -> String {
        self.servers
            .first()
            .map(UpstreamServer::authority)
            .unwrap_or_default()
    }
}

/// One configured server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamServer {
    /// A host name (resolved at run time, never at parse time) or an IP literal.
    pub host: String,
    pub port: u16,
    /// Relative share of requests (1-1000, nginx `weight=`, default 1).
    pub weight: u32,
    /// Used only when no primary server is available (nginx `backup`).
    pub backup: bool,
}

impl UpstreamServer {
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `balance`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Balance {
    /// Weighted round robin (the default; nginx's default).
    RoundRobin,
    /// Fewest requests in flight, relative to weight (nginx `least_conn`).
    LeastConn,
    /// The less loaded of two random choices (nginx `random two least_conn`).
    Random,
    /// Consistent (Ketama) hashing of a request key (nginx `hash ... consistent`): adding or
    /// removing one server moves only its share of the keys.
    Hash(HashKey),
}

/// `hash_key`: what a request is hashed by. A header or cookie the request lacks falls back
/// to the client address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashKey {
    /// The client address (after `forwarding.trusted_proxies`), nginx `ip_hash`-like.
    Client,
    /// A request header, by its lower-case name.
    Header(String),
    /// A cookie, by name.
    Cookie(String),
    /// The request target, path and query (nginx `hash $request_uri`).
    Uri,
}

/// `health_check`: probes sent to every server of the group in the background.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// Origin-form target of the probe (`GET`), default `/`.
    pub path: String,
    pub interval: Duration,
    /// Longest a probe may take, connect included.
    pub timeout: Duration,
    /// Failed probes in a row that take a server out.
    pub fails: u32,
    /// Good probes in a row that bring it back.
    pub passes: u32,
    /// Statuses that count as good, e.g. `200-399`.
    pub expect: Vec<RangeInclusive<u16>>,
    /// `Host` of the probe; `None`: the server's configured `host:port`.
    pub host: Option<String>,
}

impl HealthCheck {
    pub fn expects(&self, status: u16) -> bool {
        self.expect.iter().any(|r| r.contains(&status))
    }
}

/// `next_upstream`: which failures of an attempt count against the server (passive health)
/// and send the request on to another server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NextUpstream {
    /// `error`: a refused or failed connect, a reset before any response byte.
    pub error: bool,
    /// `timeout`: a connect that timed out, or no response head within `read_timeout`.
    pub timeout: bool,
    /// `http_502`, `http_503`, `http_504`: such a response from the server.
    pub statuses: Vec<u16>,
}

impl Default for NextUpstream {
    /// nginx's default: `error timeout`.
    fn default() -> Self {
        NextUpstream {
            error: true,
            timeout: true,
            statuses: Vec::new(),
        }
    }
}
