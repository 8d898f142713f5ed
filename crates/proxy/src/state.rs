//! The runtime snapshot: everything a request needs, built once per config load and
//! swapped atomically on reload. A request keeps the snapshot it started with.

use crate::compress::CompressionPolicy;
use crate::dns::Dns;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use gateway_config::{Config, Route, Upstream};
use gateway_routing::RouteTable;
use gateway_tls::CertStore;
use http::{HeaderName, HeaderValue};
use std::sync::Arc;

pub type Headers = Vec<(HeaderName, HeaderValue)>;

/// An immutable view of one configuration.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub table: RouteTable,
    /// Upstream of each route, by route index.
    pub route_upstream: Vec<Upstream>,
    /// Extra response headers of each route, by route index.
    pub route_headers: Vec<Headers>,
    /// Added to every response, errors included.
    pub security_headers: Headers,
    pub compression: CompressionPolicy,
}

fn to_headers(list: &[(String, String)]) -> Headers {
    list.iter()
        .filter_map(|(n, v)| {
            Some((
                HeaderName::from_bytes(n.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        })
        .collect()
}

impl Snapshot {
    pub fn new(config: Config) -> Self {
        let table = RouteTable::new(&config.routes);
        let route_upstream = config
            .routes
            .iter()
            .map(|r: &Route| {
                config
                    .upstream(&r.upstream)
                    .cloned()
                    .expect("validated: the upstream exists")
            })
            .collect();
        let route_headers = config
            .routes
            .iter()
            .map(|r| to_headers(&r.response_headers))
            .collect();
        Snapshot {
            table,
            route_upstream,
            route_headers,
            security_headers: to_headers(&config.security_headers),
            compression: CompressionPolicy::new(&config.compression),
            config: Arc::new(config),
        }
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
    /// Client connections being served on every listener (HTTPS, `:80`, metrics): the
    /// graceful shutdown ends once this is 0 (`Shared::drained`).
    pub live_connections: std::sync::atomic::AtomicUsize,
}

impl Shared {
    pub fn new(config: Config, certs: Arc<CertStore>, metrics: Arc<Metrics>) -> Arc<Self> {
        let dns = Dns::new(config.server.dns_refresh, &config.server.resolver);
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::new(config)),
            certs,
            dns,
            metrics,
            challenges: Arc::default(),
            live_connections: Default::default(),
        });
        shared.update_dns();
        shared
    }

    /// Whether no client connection is left on any listener (after a shutdown signal, the
    /// accept loops have stopped: the process may exit before its grace period ends).
    pub fn drained(&self) -> bool {
        self.live_connections.load(std::sync::atomic::Ordering::Acquire) == 0
    }

    /// Swaps in a new configuration; requests in flight keep the old one.
    pub fn apply(&self, config: Config) {
        self.snapshot.store(Arc::new(Snapshot::new(config)));
        self.update_dns();
    }

    fn update_dns(&self) {
        let snap = self.snapshot.load();
        let names = snap
            .config
            .upstreams
            .iter()
            .map(|u| (u.host.clone(), u.port))
            .collect();
        self.dns.set_wanted(
            names,
            snap.config.server.dns_refresh,
            &snap.config.server.resolver,
        );
    }
}
