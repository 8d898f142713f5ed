//! Asynchronous, refreshed resolution of upstream host names.
//!
//! Compose service names resolve through Docker's embedded DNS and change when a container
//! is recreated. The request path only reads a cache (an `ArcSwap`ped map: no lock, no
//! query); the background [`DnsRefresher`] resolves every configured name again every
//! `dns_refresh` (nginx `resolver ... valid=`), and a name whose connection failed again at
//! once, at most once per [`REQUERY_INTERVAL`] per name: an upstream that is down does not
//! turn every failed request into a query. A name not cached yet (first request, or every
//! lookup so far failed) is resolved on the request path, asynchronously, under the same
//! interval. A failed lookup keeps the last addresses.
//!
//! Lookups go through hickory's asynchronous resolver, configured like the C library from
//! `/etc/resolv.conf` (name servers, `search`, `ndots`, `timeout`, `attempts`) with
//! `/etc/hosts` first, or from `[server] resolver` (nginx's `resolver`: those servers only).
//! hickory's own cache is off (TTLs capped at 0): Docker answers with a 600 s TTL, and the
//! refresh period decides instead.
//!
//! One lookup per name at a time (single flight): callers queue behind the one in flight
//! and take its outcome, so a burst of requests for a new name sends one query. Lookups run
//! as tasks on the refresher's runtime, so hickory's connection tasks live on one runtime
//! whichever worker thread asked.

use crate::error::Error;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Longest one lookup may take, every server and attempt included (glibc waits
/// `timeout:5` seconds per try, resolv.conf(5)). Then it fails and the last answer stays.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest time between two lookups of one name asked for by traffic (a failed
/// connection, a request for a name that does not resolve), and the shortest refresh period.
pub const REQUERY_INTERVAL: Duration = Duration::from_secs(1);

type Key = (String, u16);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where lookups go.
struct Backend {
    /// `[server] resolver` as configured (empty: the system's).
    servers: Vec<SocketAddr>,
    how: How,
}

enum How {
    Hickory(Box<TokioResolver>),
    /// `/etc/resolv.conf` could not be read: the C library's `getaddrinfo`, on tokio's
    /// blocking pool (never on a worker thread).
    System,
}

impl Backend {
    fn new(servers: &[SocketAddr]) -> Self {
        let mut builder = if servers.is_empty() {
            match TokioResolver::builder_tokio() {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read /etc/resolv.conf: upstream names are resolved with getaddrinfo");
                    return Backend {
                        servers: Vec::new(),
                        how: How::System,
                    };
                }
            }
        } else {
            let mut config = ResolverConfig::new();
            for &addr in servers {
                // UDP, and TCP for truncated answers (RFC 1035 section 4.2, RFC 7766).
                config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
            }
            let mut b = TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
            // Only the configured servers, as with nginx's `resolver`.
            b.options_mut().use_hosts_file = ResolveHosts::Never;
            b
        };
        let o = builder.options_mut();
        // The cache here is the cache: hickory's would keep Docker's 600 s answers past a refresh.
        o.positive_max_ttl = Some(Duration::ZERO);
        o.negative_max_ttl = Some(Duration::ZERO);
        tracing::debug!(servers = %servers.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(","), "upstream name resolver (empty: /etc/resolv.conf)");
        Backend {
            servers: servers.to_vec(),
            how: How::Hickory(Box::new(builder.build())),
        }
    }

    /// One lookup of `host` (A, then AAAA if there is no A record), bounded by [`LOOKUP_TIMEOUT`].
    async fn lookup(&self, host: &str, port: u16) -> Result<Arc<[SocketAddr]>, Error> {
        let timed_out = || Error::DnsTimeout {
            host: host.to_owned(),
            after: LOOKUP_TIMEOUT,
        };
        let failed = |source: std::sync::Arc<dyn std::error::Error + Send + Sync>| Error::DnsLookup {
            host: host.to_owned(),
            source,
        };
        let found: Vec<SocketAddr> = match &self.how {
            How::Hickory(r) => match tokio::time::timeout(LOOKUP_TIMEOUT, r.lookup_ip(host)).await {
                Err(_) => return Err(timed_out()),
                Ok(Err(e)) => return Err(failed(std::sync::Arc::new(e))),
                Ok(Ok(ips)) => ips.iter().map(|ip| SocketAddr::new(ip, port)).collect(),
            },
            How::System => {
                match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, port))).await {
                    Err(_) => return Err(timed_out()),
                    Ok(Err(e)) => return Err(failed(std::sync::Arc::new(e))),
                    Ok(Ok(addrs)) => addrs.collect(),
                }
            }
        };
        if found.is_empty() {
            Err(Error::DnsNoAddress {
                host: host.to_owned(),
            })
        } else {
            Ok(found.into())
        }
    }
}

/// Lookup bookkeeping of one name.
#[derive(Default)]
struct Flight {
    /// Held while a lookup of the name runs: other callers queue here (single flight).
    running: tokio::sync::Mutex<()>,
    /// When the last lookup ended, and its error if it failed.
    last: Mutex<Option<(Instant, Option<Error>)>>,
}

impl Flight {
    fn ended(&self) -> Option<Instant> {
        lock(&self.last).as_ref().map(|(t, _)| *t)
    }
}

/// Cache of resolved upstream addresses, and the lookups that fill it.
pub struct Dns {
    cache: ArcSwap<HashMap<Key, Arc<[SocketAddr]>>>,
    flights: Mutex<HashMap<Key, Arc<Flight>>>,
    /// Names the refresher keeps up to date.
    wanted: Mutex<Vec<Key>>,
    /// Names whose connection failed, resolved again as soon as their interval allows.
    stale: Mutex<HashSet<Key>>,
    refresh: Mutex<Duration>,
    /// Set on (re)configuration: the refresher resolves every name at once.
    reconfigured: AtomicBool,
    wake: Notify,
    backend: ArcSwap<Backend>,
    /// The refresher's runtime, where lookups run (set when it starts).
    runtime: OnceLock<tokio::runtime::Handle>,
    rr: AtomicUsize,
    /// Advanced whenever a cached answer changes (upstream groups rebuild then).
    generation: AtomicU64,
    /// Names whose last lookup failed, so a lasting failure is logged once.
    failing: Mutex<HashSet<Key>>,
}

impl Dns {
    /// `refresh`: `[server] dns_refresh`; `servers`: `[server] resolver` (empty: the system's).
    pub fn new(refresh: Duration, servers: &[SocketAddr]) -> Arc<Self> {
        Arc::new(Dns {
            cache: ArcSwap::from_pointee(HashMap::new()),
            flights: Mutex::default(),
            wanted: Mutex::default(),
            stale: Mutex::default(),
            refresh: Mutex::new(refresh),
            reconfigured: AtomicBool::new(true),
            wake: Notify::new(),
            backend: ArcSwap::from_pointee(Backend::new(servers)),
            runtime: OnceLock::new(),
            rr: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            failing: Mutex::default(),
        })
    }

    /// Sets the names to keep resolved, the period and the name servers (on start and on
    /// every reload); they are all resolved again at once.
    pub fn set_wanted(&self, names: Vec<(String, u16)>, refresh: Duration, servers: &[SocketAddr]) {
        *lock(&self.wanted) = names;
        *lock(&self.refresh) = refresh;
        if self.backend.load().servers != servers {
            self.backend.store(Arc::new(Backend::new(servers)));
        }
        self.reconfigured.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// A connection to `host:port` failed (a recreated container has a new address): the
    /// refresher resolves the name again, at most once per [`REQUERY_INTERVAL`]. Never waits.
    pub fn invalidate(&self, host: &str, port: u16) {
        if host.parse::<IpAddr>().is_ok() {
            return;
        }
        if lock(&self.stale).insert((host.to_owned(), port)) {
            self.wake.notify_one();
        }
    }

    /// An address for `host:port`: an IP literal as is, a cached name round-robin (never
    /// waiting for a refresh), or a lookup for a name not cached yet.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, Error> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let key = (host.to_owned(), port);
        let addrs = match self.cached(&key) {
            Some(addrs) => addrs,
            None => self.lookup_shared(&key, REQUERY_INTERVAL).await?,
        };
        let i = self.rr.fetch_add(1, Ordering::Relaxed) % addrs.len().max(1);
        addrs.get(i).copied().ok_or_else(|| Error::DnsNoAddress {
            host: host.to_owned(),
        })
    }

    /// Every address of `host:port`: an IP literal as is, a name from the cache, else looked
    /// up (asynchronously, under the same single-flight and interval rules as [`Dns::resolve`]).
    pub async fn resolve_all(&self, host: &str, port: u16) -> Result<Arc<[SocketAddr]>, Error> {
        if let Some(addrs) = self.cached_all(host, port) {
            return Ok(addrs);
        }
        self.lookup_shared(&(host.to_owned(), port), REQUERY_INTERVAL)
            .await
    }

    /// Every address of `host:port` known now, without a lookup (`None`: not resolved yet).
    pub fn cached_all(&self, host: &str, port: u16) -> Option<Arc<[SocketAddr]>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some(vec![SocketAddr::new(ip, port)].into());
        }
        self.cached(&(host.to_owned(), port))
    }

    /// Advanced whenever a cached answer changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn cached(&self, key: &Key) -> Option<Arc<[SocketAddr]>> {
        self.cache.load().get(key).filter(|a| !a.is_empty()).cloned()
    }

    fn flight(&self, key: &Key) -> Arc<Flight> {
        lock(&self.flights).entry(key.clone()).or_default().clone()
    }

    /// Resolves `key`, unless a lookup of it ended while this caller waited for the one in
    /// flight, or less than `min_interval` ago: then that lookup's outcome is the answer
    /// (the cached addresses, else its error). At most one lookup per name runs at a time.
    async fn lookup_shared(&self, key: &Key, min_interval: Duration) -> Result<Arc<[SocketAddr]>, Error> {
        let flight = self.flight(key);
        let asked = Instant::now();
        let _running = flight.running.lock().await;
        let last = lock(&flight.last).clone();
        if let Some((ended, failure)) = last {
            if ended >= asked || ended.elapsed() < min_interval {
                match (self.cached(key), failure) {
                    (Some(addrs), _) => return Ok(addrs),
                    (None, Some(e)) => return Err(e),
                    (None, None) => {}
                }
            }
        }
        let result = self.query(key).await;
        *lock(&flight.last) = Some((Instant::now(), result.as_ref().err().cloned()));
        self.record(key, &result);
        result
    }

    /// Runs one lookup as a task on the refresher's runtime (inline before it started).
    async fn query(&self, key: &Key) -> Result<Arc<[SocketAddr]>, Error> {
        let backend = self.backend.load_full();
        let (host, port) = key.clone();
        let task = async move { backend.lookup(&host, port).await };
        match self.runtime.get() {
            Some(rt) => rt
                .spawn(task)
                .await
                .unwrap_or_else(|_| Err(Error::DnsCancelled { host: key.0.clone() })),
            None => task.await,
        }
    }

    /// Stores an answer (logged when it changed); a failure is logged once until the name
    /// resolves again, and the last known addresses stay: a DNS hiccup must not take an
    /// upstream down.
    fn record(&self, key: &Key, result: &Result<Arc<[SocketAddr]>, Error>) {
        match result {
            Ok(addrs) => {
                lock(&self.failing).remove(key);
                let changed = self.cache.load().get(key).is_none_or(|old| old[..] != addrs[..]);
                if changed {
                    tracing::info!(upstream.host = %key.0, port = key.1, addrs = %addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","), "upstream name resolved");
                    self.cache.rcu(|old| {
                        let mut m = HashMap::clone(old);
                        m.insert(key.clone(), addrs.clone());
                        m
                    });
                    self.generation.fetch_add(1, Ordering::AcqRel);
                }
            }
            Err(e) => {
                if lock(&self.failing).insert(key.clone()) {
                    tracing::warn!(upstream.host = %key.0, port = key.1, error = %e, "cannot resolve upstream (retrying; logged once until it resolves)");
                }
            }
        }
    }

    /// A lookup in the background (the refresher's).
    fn spawn_lookup(self: &Arc<Self>, key: Key, min_interval: Duration) {
        let dns = self.clone();
        tokio::spawn(async move {
            let _ = dns.lookup_shared(&key, min_interval).await;
        });
    }

    /// The stale names whose last lookup ended at least [`REQUERY_INTERVAL`] before `now`
    /// (or never ran), taken out of the set; and when the first of the others is due.
    fn take_due_stale(&self, now: Instant) -> (Vec<Key>, Option<Instant>) {
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        lock(&self.stale).retain(|key| {
            let ended = lock(&self.flights).get(key).and_then(|f| f.ended());
            match ended.map(|t| t + REQUERY_INTERVAL) {
                Some(at) if at > now => {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    true
                }
                _ => {
                    due.push(key.clone());
                    false
                }
            }
        });
        (due, next)
    }
}

/// The background service that keeps [`Dns`] fresh.
pub struct DnsRefresher(pub Arc<Dns>);

#[async_trait]
impl BackgroundService for DnsRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let dns = &self.0;
        let _ = dns.runtime.set(tokio::runtime::Handle::current());
        let mut next_round = Instant::now();
        loop {
            if dns.reconfigured.swap(false, Ordering::AcqRel) {
                next_round = Instant::now();
            }
            let now = Instant::now();
            if now >= next_round {
                let names = lock(&dns.wanted).clone();
                for key in names {
                    if key.0.parse::<IpAddr>().is_err() {
                        // Lookups run side by side: one slow name holds up no other.
                        dns.spawn_lookup(key, Duration::ZERO);
                    }
                }
                let period = *lock(&dns.refresh);
                next_round = now + period.max(REQUERY_INTERVAL);
            }
            let (due, later) = dns.take_due_stale(now);
            for key in due {
                dns.spawn_lookup(key, REQUERY_INTERVAL);
            }
            let wake_at = later.map_or(next_round, |t| t.min(next_round));
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = dns.wake.notified() => {}
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake_at)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    #[test]
    fn ip_literals_need_no_lookup() {
        let dns = Dns::new(Duration::from_secs(30), &["127.0.0.1:9".parse().unwrap()]);
        let rt = runtime();
        let a = rt.block_on(dns.resolve("10.1.2.3", 8080)).unwrap();
        assert_eq!(a, "10.1.2.3:8080".parse().unwrap());
        let a = rt.block_on(dns.resolve("::1", 80)).unwrap();
        assert_eq!(a, "[::1]:80".parse().unwrap());
        // Nothing to resolve again for an address.
        dns.invalidate("10.1.2.3", 8080);
        assert!(lock(&dns.stale).is_empty());
    }

    #[test]
    fn a_lookup_outcome_is_shared_within_the_interval() {
        // The name server does not exist: a lookup that reached it would fail otherwise
        // (and slowly), so an answer equal to the recorded one shows no query was made.
        let dns = Dns::new(Duration::from_secs(30), &["127.0.0.1:9".parse().unwrap()]);
        let rt = runtime();
        let key = ("up.test".to_owned(), 80);
        let failure = Error::DnsNoAddress {
            host: "up.test".into(),
        };
        let ended = Instant::now();
        *lock(&dns.flight(&key).last) = Some((ended, Some(failure.clone())));
        let again = rt.block_on(dns.lookup_shared(&key, REQUERY_INTERVAL));
        assert_eq!(again.err().map(|e| e.to_string()), Some(failure.to_string()));
        assert_eq!(dns.flight(&key).ended(), Some(ended), "no second lookup");
        // With an older answer cached, that answer.
        let addrs: Arc<[SocketAddr]> = vec!["10.0.0.7:80".parse().unwrap()].into();
        dns.record(&key, &Ok(addrs.clone()));
        let again = rt.block_on(dns.lookup_shared(&key, REQUERY_INTERVAL));
        assert_eq!(again.ok(), Some(addrs));
        assert_eq!(
            rt.block_on(dns.resolve("up.test", 80)).ok(),
            Some("10.0.0.7:80".parse().unwrap())
        );

        // A name whose connection failed becomes due once its interval has passed.
        dns.invalidate("up.test", 80);
        dns.invalidate("up.test", 80);
        let (due, next) = dns.take_due_stale(ended);
        assert!(due.is_empty());
        assert_eq!(next, Some(ended + REQUERY_INTERVAL));
        let (due, next) = dns.take_due_stale(ended + REQUERY_INTERVAL);
        assert_eq!(due, vec![key]);
        assert_eq!(next, None);
        // A name never looked up is due at once.
        dns.invalidate("other.test", 80);
        let (due, _) = dns.take_due_stale(ended);
        assert_eq!(due, vec![("other.test".to_owned(), 80)]);
    }
}
