//! The runtime snapshot: everything a request needs, built once per config load and
//! swapped atomically on reload. A request keeps the snapshot it started with.

use crate::compress::CompressionPolicy;
use crate::dns::Dns;
use crate::metrics::Metrics;
use crate::policy::{PolicyState, RoutePolicies};
use crate::upstream::{Group, Upstreams};
use arc_swap::ArcSwap;
use gateway_config::{Config, HostMatch, PathMatch, Route, Upstream};
use gateway_routing::{Routable, RouteTable};
use gateway_tls::CertStore;
use http::{HeaderName, HeaderValue};
use pingora_http::CaseHeaderName;
use std::sync::Arc;

pub type Headers = Vec<(HeaderName, HeaderValue)>;

/// Header fields with their names as configured: Pingora writes a name in the case it was
/// inserted with, and a `(HeaderName, CaseHeaderName)` pair is neither parsed nor copied on
/// insert (vendor/pingora-http/PATCHED.md).
pub type CasedHeaders = Vec<((HeaderName, CaseHeaderName), HeaderValue)>;

/// One route as a request meets it: its settings, its upstream, its header blocks ready as
/// `HeaderValue`s and its policies' filters, all resolved once per configuration load.
pub struct CompiledRoute {
    /// The route as validated (name, limits, timeouts, websocket, compress...).
    pub config: Route,
    pub upstream: Upstream,
    /// Its upstream's servers at run time (shared by every route of that upstream).
    pub group: Arc<Group>,
    /// The route's `headers`, added to every response of the route.
    pub response_headers: Headers,
    /// Its `policies`, compiled (empty for most routes: nothing is done then).
    pub policies: RoutePolicies,
}

impl Routable for CompiledRoute {
    fn host(&self) -> Option<&HostMatch> {
        self.config.host.as_ref()
    }
    fn path(&self) -> &PathMatch {
        &self.config.path
    }
    fn rewrite(&self) -> Option<&str> {
        self.config.rewrite.as_deref()
    }
}

impl AsRef<Route> for CompiledRoute {
    fn as_ref(&self) -> &Route {
        &self.config
    }
}

/// An immutable view of one configuration.
pub struct Snapshot {
    pub config: Arc<Config>,
    /// The routes, compiled: `decide` returns the one a request gets.
    pub table: RouteTable<CompiledRoute>,
    /// Added to every response, errors included; proxied responses write the names as
    /// configured (`response_filter`), the gateway's own answers by name.
    pub security_headers: CasedHeaders,
    pub compression: CompressionPolicy,
    /// `[listen] metrics_policy`'s allow/deny rules, for the metrics listener.
    pub metrics_access: Option<crate::policy::access::AccessList>,
    /// `[errors] pages`, read at each load (error_page.rs); empty: the built-in pages.
    pub error_pages: crate::error_page::ErrorPages,
    /// One group per `[upstreams.NAME]`, in name order.
    pub groups: Vec<Arc<Group>>,
}

/// `list`'s valid fields, parsed once, with their names as written (invalid ones are left
/// out: `gateway check` refuses them first).
pub fn cased_headers(list: &[(String, String)]) -> CasedHeaders {
    list.iter()
        .filter_map(|(n, v)| {
            Some((
                (
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    CaseHeaderName::new(n.clone()),
                ),
                HeaderValue::from_str(v).ok()?,
            ))
        })
        .collect()
}

/// [`cased_headers`] without the case.
fn to_headers(list: &[(String, String)]) -> Headers {
    cased_headers(list)
        .into_iter()
        .map(|((n, _), v)| (n, v))
        .collect()
}

impl Snapshot {
    /// Compiles `config`; `state` keeps what outlives a reload (rate-limit buckets, the
    /// credential cache, maintenance switches), `upstreams` the groups (their health).
    pub fn new(config: Config, state: &PolicyState, upstreams: &Upstreams, metrics: &Arc<Metrics>) -> Self {
        let groups: Vec<Arc<Group>> = config
            .upstreams
            .iter()
            .map(|u| upstreams.group(u, metrics))
            .collect();
        let routes = config
            .routes
            .iter()
            .filter_map(|r: &Route| {
                // Validated: the upstream exists; a route without one is left out, never a panic.
                let upstream = config.upstream(&r.upstream)?.clone();
                let group = groups.iter().find(|g| g.name() == upstream.name)?.clone();
                Some(CompiledRoute {
                    upstream,
                    group,
                    response_headers: to_headers(&r.response_headers),
                    policies: RoutePolicies::compile(r, &config, state),
                    config: r.clone(),
                })
            })
            .collect();
        let metrics_access = config
            .listen
            .metrics_policy
            .as_deref()
            .and_then(|name| config.policy(name))
            .map(|p| crate::policy::access::AccessList::new(&p.access));
        Snapshot {
            table: RouteTable::from_routes(routes),
            security_headers: cased_headers(&config.security_headers),
            compression: CompressionPolicy::new(&config.compression),
            metrics_access,
            error_pages: crate::error_page::ErrorPages::load(config.error_pages.as_deref()),
            groups,
            config: Arc::new(config),
        }
    }

    /// The compiled route at `index` (the index `decide` returned).
    pub fn route(&self, index: usize) -> Option<&CompiledRoute> {
        self.table.routes().get(index)
    }
}

/// What the proxy shares across requests and with the binary (reload, ACME, metrics).
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub certs: Arc<CertStore>,
    pub dns: Arc<Dns>,
    pub metrics: Arc<Metrics>,
    /// ACME HTTP-01 tokens: token → key authorization.
    pub challenges: Arc<crate::challenge::Challenges>,
    /// Policy state that outlives reloads.
    pub policy: Arc<PolicyState>,
    /// Upstream groups (health state outlives a reload that leaves the group unchanged).
    pub upstreams: Arc<Upstreams>,
}

impl Shared {
    pub fn new(config: Config, certs: Arc<CertStore>, metrics: Arc<Metrics>) -> Arc<Self> {
        let dns = Dns::new(config.server.dns_refresh, &config.server.resolver);
        let policy = Arc::new(PolicyState::default());
        let upstreams = Arc::new(Upstreams::default());
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::new(config, &policy, &upstreams, &metrics)),
            policy,
            upstreams,
            certs,
            dns,
            metrics,
            challenges: Arc::default(),
        });
        shared.follow_snapshot();
        shared
    }

    /// Whether no client connection is left on any listener, TLS handshakes included (after
    /// a shutdown signal the accept loops have stopped: the process may exit before its
    /// grace period ends). Counted by the vendored pingora-core from accept to close.
    pub fn drained(&self) -> bool {
        pingora_core::services::listening::open_connections() == 0
    }

    /// Swaps in a new configuration; requests in flight keep the old one.
    pub fn apply(&self, config: Config) {
        self.snapshot.store(Arc::new(Snapshot::new(
            config,
            &self.policy,
            &self.upstreams,
            &self.metrics,
        )));
        self.follow_snapshot();
    }

    /// What follows each new snapshot: its upstream groups for the background service, and
    /// the names to keep resolved.
    fn follow_snapshot(&self) {
        let snap = self.snapshot.load();
        self.upstreams.set_current(snap.groups.clone());
        // Upstreams and forward-auth services are resolved alike.
        let names = snap
            .config
            .upstreams
            .iter()
            .flat_map(|u| u.servers.iter().map(|s| (s.host.clone(), s.port)))
            .chain(
                snap.config
                    .policies
                    .iter()
                    .filter_map(|p| p.forward_auth.as_ref())
                    .map(|f| (f.host.clone(), f.port)),
            )
            .collect();
        self.dns.set_wanted(
            names,
            snap.config.server.dns_refresh,
            &snap.config.server.resolver,
        );
    }
}

/// The client's TCP address, an IPv4-mapped IPv6 address (`::ffff:192.0.2.7`, what a
/// dual-stack `[::]` listener reports for an IPv4 client) given back as IPv4, so the access
/// log, `X-Forwarded-For`, allow-lists and rate limits see the address the client has.
/// `peer` is the session's `client_addr()`.
pub fn client_addr(
    peer: Option<&pingora_core::protocols::l4::socket::SocketAddr>,
) -> Option<std::net::SocketAddr> {
    let a = peer?.as_inet()?;
    Some(std::net::SocketAddr::new(a.ip().to_canonical(), a.port()))
}
