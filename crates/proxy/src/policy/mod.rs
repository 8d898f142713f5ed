//! Edge policies at run time (`[policies.NAME]`, a route's `policies = [...]`): one module
//! per filter, compiled once per configuration into each route's [`RoutePolicies`].
//!
//! Order: a route's policies in the order it lists them; within a policy, the cheap checks
//! first: `allow`/`deny` (403), `rate_limit` (429), `basic_auth` (401), `forward_auth`
//! (its answer, or 503). The first refusal is the answer; header rules apply to requests
//! that pass. A route without policies compiles to nothing and costs one `is_empty` check.

pub mod access;
pub mod basic_auth;
pub mod forward_auth;
pub mod header_rules;
pub mod maintenance;
pub mod rate_limit;

use crate::state::Shared;
use bytes::Bytes;
use gateway_config::{Config, Route};
use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;
use std::net::IpAddr;
use std::sync::Arc;

/// Why a request was refused: the `reason` of `gateway_requests_denied_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    Auth,
    ForwardAuth,
    Ip,
    Rate,
    Maintenance,
}

impl DenyReason {
    pub const ALL: [DenyReason; 5] = [
        DenyReason::Auth,
        DenyReason::ForwardAuth,
        DenyReason::Ip,
        DenyReason::Rate,
        DenyReason::Maintenance,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DenyReason::Auth => "auth",
            DenyReason::ForwardAuth => "forward_auth",
            DenyReason::Ip => "ip",
            DenyReason::Rate => "rate",
            DenyReason::Maintenance => "maintenance",
        }
    }
}

/// The answer to a refused request.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: u16,
    pub reason: DenyReason,
    /// Extra response headers (`WWW-Authenticate`, `Retry-After`, a forward-auth answer's
    /// `Location` and `Set-Cookie`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A body to send as it is (a forward-auth service's own answer); `None`: the error page.
    pub body: Option<Bytes>,
}

impl Refusal {
    pub fn new(status: u16, reason: DenyReason) -> Self {
        Refusal {
            status,
            reason,
            headers: Vec::new(),
            body: None,
        }
    }
}

/// What the filters established for a request that passed, for the later phases.
#[derive(Debug, Default)]
pub struct Granted {
    /// The user `basic_auth` verified (the access log's `$remote_user`).
    pub user: Option<String>,
    /// Headers removed from the proxied request: every `copy_headers` name of a forward
    /// auth, so a client cannot send its own `Remote-User`.
    pub remove_headers: Vec<HeaderName>,
    /// Headers of a forward-auth answer to set on the proxied request (`copy_headers`).
    pub copy_headers: Vec<(HeaderName, HeaderValue)>,
}

/// The facts of a request the filters decide on.
pub struct RequestFacts<'a> {
    pub req: &'a RequestHeader,
    /// The client address as established through `forwarding.trusted_proxies`.
    pub client: Option<IpAddr>,
    /// `https`, or `http` on the `:80` listener.
    pub scheme: &'static str,
}

/// One check of a policy.
pub enum RequestFilter {
    Access(access::AccessList),
    RateLimit(Arc<rate_limit::Limiter>),
    BasicAuth(Arc<basic_auth::BasicAuthFilter>),
    ForwardAuth(Arc<forward_auth::ForwardAuthFilter>),
}

/// A route's policies, compiled.
#[derive(Default)]
pub struct RoutePolicies {
    /// In order; the first refusal wins.
    pub filters: Vec<RequestFilter>,
    /// Applied to the upstream request, in order (after `copy_headers`).
    pub request_headers: Vec<header_rules::Rules>,
    /// Applied to the response, in order (after the route's own `headers`).
    pub response_headers: Vec<header_rules::Rules>,
    /// `Authorization` is removed before proxying (a `basic_auth` without
    /// `forward_authorization`).
    pub strip_authorization: bool,
    /// The names of the policies, for `gateway route`.
    pub names: Vec<String>,
}

impl RoutePolicies {
    /// Compiles the policies `route` lists (validated to exist; one that does not is skipped).
    pub fn compile(route: &Route, config: &Config, state: &PolicyState) -> Self {
        let mut out = RoutePolicies::default();
        for name in &route.policies {
            let Some(p) = config.policy(name) else { continue };
            out.names.push(p.name.clone());
            if !p.access.is_empty() {
                out.filters
                    .push(RequestFilter::Access(access::AccessList::new(&p.access)));
            }
            if let Some(r) = &p.rate_limit {
                out.filters
                    .push(RequestFilter::RateLimit(state.limiter(&p.name, r)));
            }
            if let Some(b) = &p.basic_auth {
                out.filters.push(RequestFilter::BasicAuth(Arc::new(
                    basic_auth::BasicAuthFilter::new(b, state),
                )));
                out.strip_authorization |= !b.forward_authorization;
            }
            if let Some(f) = &p.forward_auth {
                out.filters.push(RequestFilter::ForwardAuth(Arc::new(
                    forward_auth::ForwardAuthFilter::new(f),
                )));
            }
            if !p.request_headers.is_empty() {
                out.request_headers
                    .push(header_rules::Rules::new(&p.request_headers));
            }
            if !p.response_headers.is_empty() {
                out.response_headers
                    .push(header_rules::Rules::new(&p.response_headers));
            }
        }
        out
    }

    /// Nothing to do for this route (most routes).
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
            && self.request_headers.is_empty()
            && self.response_headers.is_empty()
            && !self.strip_authorization
    }

    /// Runs the request filters in order: what they granted, or the first refusal.
    pub async fn check(&self, facts: &RequestFacts<'_>, shared: &Shared) -> Result<Granted, Refusal> {
        let mut granted = Granted::default();
        for f in &self.filters {
            match f {
                RequestFilter::Access(list) => {
                    if !list.allows(facts.client) {
                        return Err(Refusal::new(403, DenyReason::Ip));
                    }
                }
                RequestFilter::RateLimit(limiter) => limiter.check(facts)?,
                RequestFilter::BasicAuth(b) => granted.user = Some(b.check(facts.req).await?),
                RequestFilter::ForwardAuth(f) => {
                    let copied = f.check(facts, shared).await?;
                    granted
                        .remove_headers
                        .extend(f.copy_header_names().iter().cloned());
                    granted.copy_headers.extend(copied);
                }
            }
        }
        Ok(granted)
    }
}

/// What outlives a reload: rate-limit buckets (kept while a policy's limit is unchanged),
/// the verified-credential cache, the maintenance switches set at run time.
#[derive(Default)]
pub struct PolicyState {
    limiters: std::sync::Mutex<std::collections::HashMap<String, Arc<rate_limit::Limiter>>>,
    pub credentials: basic_auth::CredentialCache,
    pub maintenance: maintenance::Switches,
}

impl PolicyState {
    /// The limiter of policy `name`: the running one if its settings are unchanged.
    fn limiter(&self, name: &str, cfg: &gateway_config::RateLimit) -> Arc<rate_limit::Limiter> {
        let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = map.get(name).filter(|l| l.settings() == cfg) {
            return l.clone();
        }
        let l = Arc::new(rate_limit::Limiter::new(cfg));
        map.insert(name.to_owned(), l.clone());
        l
    }
}

/// The upstream request's headers after the policies: `Authorization` removed (basic auth
/// without `forward_authorization`), the client's copies of forward-auth headers removed
/// and the auth answer's set, then each policy's `request_headers` rules in order.
pub fn apply_request(
    p: &RoutePolicies,
    upstream: &mut RequestHeader,
    granted: &mut Granted,
    vars: &header_rules::OwnedVars,
) {
    if p.strip_authorization {
        upstream.remove_header(&http::header::AUTHORIZATION);
    }
    if !granted.remove_headers.is_empty() {
        // The client's copies, under any spelling a backend may read as the same name:
        // `Remote_User` is `HTTP_REMOTE_USER` to CGI, WSGI and PHP, like `Remote-User`.
        let same = |a: &str, b: &str| {
            a.len() == b.len()
                && a.bytes().zip(b.bytes()).all(|(x, y)| {
                    let norm = |c: u8| if c == b'_' { b'-' } else { c.to_ascii_lowercase() };
                    norm(x) == norm(y)
                })
        };
        let spoofed: Vec<HeaderName> = upstream
            .headers
            .keys()
            .filter(|k| {
                granted
                    .remove_headers
                    .iter()
                    .any(|n| same(k.as_str(), n.as_str()))
            })
            .cloned()
            .collect();
        for n in spoofed {
            upstream.remove_header(&n);
        }
    }
    for (n, v) in granted.copy_headers.drain(..) {
        let _ = upstream.append_header(n, v);
    }
    for rules in &p.request_headers {
        let (remove, set) = rules.resolve(vars);
        for n in remove {
            upstream.remove_header(n);
        }
        for (n, v) in set {
            let _ = upstream.insert_header(n, v);
        }
    }
}

/// Each policy's `response_headers` rules, in order.
pub fn apply_response(
    p: &RoutePolicies,
    resp: &mut pingora_http::ResponseHeader,
    vars: &header_rules::OwnedVars,
) {
    for rules in &p.response_headers {
        let (remove, set) = rules.resolve(vars);
        for n in remove {
            resp.remove_header(n);
        }
        for (n, v) in set {
            let _ = resp.insert_header(n, v);
        }
    }
}
