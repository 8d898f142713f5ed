//! Upstream groups: the servers of an `[upstreams.NAME]`, which one a request goes to, and
//! when one is taken out (nginx's `upstream` block with `max_fails`/`fail_timeout`,
//! `backup`, `least_conn`, `hash ... consistent`; NGINX Plus's `health_check`).
//!
//! Built on `pingora-load-balancing`: each group has one `LoadBalancer` for its primary
//! servers and one for its backups, fed by a discovery that lists the group's current
//! members (configured IP literals, and every address the configured names resolve to, from
//! [`Dns`]'s cache), selection by its weighted round robin and Ketama ring (or by
//! [`select`]'s least-conn and two-choices), active probes by its health registry
//! ([`health`]). What it does not have lives here: passive health (failures counted per
//! server, [`ServerState::failed`]), backups, the in-flight counts, and the state shown by
//! `gateway upstreams`.
//!
//! A group outlives reloads while its `[upstreams.NAME]` is unchanged ([`Upstreams::group`]),
//! so a reload keeps health state; the background service ([`UpstreamService`]) rebuilds a
//! group's members when a DNS answer changes, runs its probes every `interval`, and reports
//! each server's state changes (log line at info, `gateway_upstream_server_up`).

pub mod attempts;
mod health;
mod select;

use crate::dns::Dns;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use gateway_config::{Balance, Upstream};
use pingora_core::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::selection::{BackendIter, BackendSelection, Consistent, RoundRobin};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use prometheus::{IntCounter, IntGauge};
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

/// How often the background service looks at every group (DNS changes, due probes, state
/// changes to report).
pub const TICK: Duration = Duration::from_millis(200);

/// Steps a selection may take through its order before the linear fallback.
const MAX_STEPS: usize = 256;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds on a monotonic clock, never 0 (0 means "not down").
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// What one probe found.
#[derive(Debug, Clone, Default)]
pub struct ProbeRecord {
    pub last: Option<SystemTime>,
    /// The last probe's error (`None`: it passed).
    pub error: Option<String>,
    pub probes: u64,
    pub failures: u64,
}

#[derive(Default)]
struct Passive {
    /// Failures in the current `fail_timeout` window, and when it started.
    fails: u32,
    window_start: u64,
    /// Every failure counted since the server joined.
    total: u64,
}

/// One server of a group (one address), kept while it is a member.
pub struct ServerState {
    pub addr: SocketAddr,
    /// The address as a metric label.
    pub label: String,
    /// The configured entry it comes from (`api-1:3001`), and its host and port.
    pub entry: String,
    pub host: String,
    pub port: u16,
    /// Resolved from a name (else an IP literal in the list).
    pub from_dns: bool,
    pub backup: bool,
    pub weight: u32,
    in_flight: AtomicUsize,
    /// Out after `max_fails` failures until then (`now_ms`); 0: not out.
    down_until: AtomicU64,
    passive: Mutex<Passive>,
    probe: Mutex<ProbeRecord>,
    requests: IntCounter,
    up_gauge: IntGauge,
    /// The availability last reported (log line and gauge).
    reported: AtomicBool,
}

impl ServerState {
    /// Requests in flight on this server (its attempts not finished).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn passive_down(&self, now: u64) -> bool {
        self.down_until.load(Ordering::Relaxed) > now
    }

    /// Taken out by passive health now: until when, from now.
    pub fn out_for(&self) -> Option<Duration> {
        let (until, now) = (self.down_until.load(Ordering::Relaxed), now_ms());
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Failures counted (passive health) since the server joined.
    pub fn failures(&self) -> u64 {
        lock(&self.passive).total
    }

    pub fn probe(&self) -> ProbeRecord {
        lock(&self.probe).clone()
    }

    fn record_probe(&self, error: Option<String>) {
        let mut p = lock(&self.probe);
        p.last = Some(SystemTime::now());
        p.probes += 1;
        if error.is_some() {
            p.failures += 1;
        }
        p.error = error;
    }

    /// No longer out after failed attempts (its health check passes again).
    fn back_in(&self) {
        self.down_until.store(0, Ordering::Relaxed);
        lock(&self.passive).fails = 0;
    }

    /// One failed attempt (nginx: `max_fails` within `fail_timeout` take the server out for
    /// `fail_timeout`; `max_fails = 0`: never).
    fn failed(&self, max_fails: u32, fail_timeout: Duration) {
        let now = now_ms();
        let window = fail_timeout.as_millis() as u64;
        let mut p = lock(&self.passive);
        p.total += 1;
        if now.saturating_sub(p.window_start) > window {
            p.window_start = now;
            p.fails = 0;
        }
        p.fails += 1;
        if max_fails > 0 && p.fails >= max_fails {
            p.fails = 0;
            self.down_until.store(now + window, Ordering::Relaxed);
        }
    }
}

/// One attempt on a server: counted in flight until dropped (the attempt failed and another
/// server is tried, or the request ended).
pub struct Attempt(pub Arc<ServerState>);

impl Attempt {
    fn new(s: Arc<ServerState>) -> Self {
        s.in_flight.fetch_add(1, Ordering::Relaxed);
        s.requests.inc();
        Attempt(s)
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A `LoadBalancer` of any selection, as the group uses it.
#[async_trait]
trait Balancer: Send + Sync {
    fn pick(&self, key: &[u8], accept: &dyn Fn(&Backend, bool) -> bool) -> Option<Backend>;
    fn view(&self) -> &Backends;
    async fn rebuild(&self);
}

#[async_trait]
impl<S> Balancer for LoadBalancer<S>
where
    S: BackendSelection + Send + Sync + 'static,
    S::Iter: BackendIter,
    S::Config: Send + Sync,
{
    fn pick(&self, key: &[u8], accept: &dyn Fn(&Backend, bool) -> bool) -> Option<Backend> {
        self.select_with(key, MAX_STEPS, |b, healthy| accept(b, healthy))
    }
    fn view(&self) -> &Backends {
        self.backends()
    }
    async fn rebuild(&self) {
        // The discovery below cannot fail.
        let _ = self.update().await;
    }
}

/// The discovery of one pool: the members the group set last.
struct Members(Arc<ArcSwap<BTreeSet<Backend>>>);

#[async_trait]
impl ServiceDiscovery for Members {
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok((BTreeSet::clone(&self.0.load()), HashMap::new()))
    }
}

/// The primary or the backup servers.
struct Pool {
    lb: Box<dyn Balancer>,
    members: Arc<ArcSwap<BTreeSet<Backend>>>,
}

impl Pool {
    fn new(up: &Upstream) -> Self {
        let members = Arc::new(ArcSwap::from_pointee(BTreeSet::new()));
        let mut view = Backends::new(Box::new(Members(members.clone())));
        if let Some(probe) = up.health_check.as_ref().and_then(|hc| health::Probe::new(up, hc)) {
            view.set_health_check(Box::new(probe));
        }
        let lb: Box<dyn Balancer> = match up.balance {
            Balance::RoundRobin => Box::new(LoadBalancer::<RoundRobin>::from_backends(view)),
            Balance::Hash(_) => Box::new(LoadBalancer::<Consistent>::from_backends(view)),
            Balance::LeastConn => Box::new(LoadBalancer::<select::LeastConn>::from_backends(view)),
            Balance::Random => Box::new(LoadBalancer::<select::TwoChoices>::from_backends(view)),
        };
        Pool { lb, members }
    }

    fn ready(&self, s: &ServerState) -> bool {
        self.lb.view().ready(&backend(s))
    }
}

/// The pool's view of a server (`ext` carries its state; identity is address and weight).
fn backend(s: &ServerState) -> Backend {
    Backend {
        addr: PeerAddr::Inet(s.addr),
        weight: s.weight as usize,
        ext: http::Extensions::new(),
    }
}

/// One `[upstreams.NAME]` at run time.
pub struct Group {
    pub config: Upstream,
    primary: Pool,
    /// Only when some server is `backup = true`.
    backup: Option<Pool>,
    /// Every server known so far, by address and role (kept while a member).
    states: Mutex<HashMap<(SocketAddr, bool), Arc<ServerState>>>,
    /// The current members, primaries first.
    members: ArcSwap<Vec<Arc<ServerState>>>,
    /// Rebuilds one at a time (a backend view's updates must not overlap).
    rebuilding: tokio::sync::Mutex<()>,
    /// The DNS generation the members were built from (`u64::MAX`: never built).
    dns_seen: AtomicU64,
    probing: Arc<AtomicBool>,
    next_probe: Mutex<Instant>,
    metrics: Arc<Metrics>,
}

impl Group {
    fn new(config: Upstream, metrics: Arc<Metrics>) -> Self {
        Group {
            primary: Pool::new(&config),
            backup: config
                .servers
                .iter()
                .any(|s| s.backup)
                .then(|| Pool::new(&config)),
            config,
            states: Mutex::default(),
            members: ArcSwap::from_pointee(Vec::new()),
            rebuilding: tokio::sync::Mutex::new(()),
            dns_seen: AtomicU64::new(u64::MAX),
            probing: Arc::new(AtomicBool::new(false)),
            next_probe: Mutex::new(Instant::now()),
            metrics,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The current members, primaries first.
    pub fn members(&self) -> Arc<Vec<Arc<ServerState>>> {
        self.members.load_full()
    }

    /// The primary pool, or the backup pool (if the group has backups).
    fn pool(&self, backup: bool) -> Option<&Pool> {
        if backup {
            self.backup.as_ref()
        } else {
            Some(&self.primary)
        }
    }

    /// The pools with their role: primaries first.
    fn pools(&self) -> impl Iterator<Item = (&Pool, bool)> {
        std::iter::once((&self.primary, false)).chain(self.backup.as_ref().map(|b| (b, true)))
    }

    /// Whether the group has a member now (its names resolved).
    pub fn has_members(&self) -> bool {
        !self.members.load().is_empty()
    }

    /// Whether `s` passes its active health checks (always, without `health_check`).
    pub fn probed_healthy(&self, s: &ServerState) -> bool {
        self.pool(s.backup).is_some_and(|p| p.ready(s))
    }

    /// Whether `s` takes requests now: healthy, and not out after `max_fails` (a group of one
    /// server ignores `max_fails`, as nginx does).
    pub fn available(&self, s: &ServerState, lone: bool) -> bool {
        self.probed_healthy(s) && (lone || !s.passive_down(now_ms()))
    }

    /// Rebuilds the members from the configured servers and what their names resolve to
    /// now (a name not resolved yet is resolved first when `lookup` is set).
    pub async fn refresh(&self, dns: &Dns, lookup: bool) {
        let _one = self.rebuilding.lock().await;
        let generation = dns.generation();
        let mut resolved = Vec::new();
        for s in &self.config.servers {
            let addrs = match dns.cached_all(&s.host, s.port) {
                Some(a) => Some(a),
                None if lookup => dns.resolve_all(&s.host, s.port).await.ok(),
                None => None,
            };
            resolved.push(addrs);
        }
        let mut members: Vec<Arc<ServerState>> = Vec::new();
        {
            let mut states = lock(&self.states);
            for (s, addrs) in self.config.servers.iter().zip(&resolved) {
                let from_dns = s.host.parse::<IpAddr>().is_err();
                for &addr in addrs.iter().flat_map(|a| a.iter()) {
                    // An address reached through two entries counts once, as the first.
                    if members.iter().any(|m| m.addr == addr) {
                        continue;
                    }
                    let state = states
                        .entry((addr, s.backup))
                        .or_insert_with(|| self.new_state(addr, s, from_dns))
                        .clone();
                    members.push(state);
                }
            }
            members.sort_by_key(|m| m.backup);
            let gone: Vec<_> = states
                .keys()
                .filter(|k| !members.iter().any(|m| (m.addr, m.backup) == **k))
                .copied()
                .collect();
            for k in gone {
                if let Some(s) = states.remove(&k) {
                    tracing::info!(upstream = %self.config.name, server = %s.label, entry = %s.entry, "upstream server left the group (no longer resolved)");
                    let labels = [self.config.name.as_str(), s.label.as_str()];
                    let _ = self.metrics.upstream_server_up.remove_label_values(&labels);
                    let _ = self.metrics.upstream_requests.remove_label_values(&labels);
                }
            }
        }
        let same = {
            let old = self.members.load();
            old.len() == members.len() && old.iter().zip(&members).all(|(a, b)| Arc::ptr_eq(a, b))
        };
        self.dns_seen.store(generation, Ordering::Release);
        if same {
            return;
        }
        for (pool, backup) in self.pools() {
            let set: BTreeSet<Backend> = members
                .iter()
                .filter(|m| m.backup == backup)
                .map(|m| {
                    let mut b = backend(m);
                    b.ext.insert(m.clone());
                    b
                })
                .collect();
            pool.members.store(Arc::new(set));
            pool.lb.rebuild().await;
        }
        self.members.store(Arc::new(members));
        self.report();
    }

    fn new_state(
        &self,
        addr: SocketAddr,
        s: &gateway_config::UpstreamServer,
        from_dns: bool,
    ) -> Arc<ServerState> {
        let label = addr.to_string();
        let labels = [self.config.name.as_str(), label.as_str()];
        let state = ServerState {
            addr,
            entry: s.authority(),
            host: s.host.clone(),
            port: s.port,
            from_dns,
            backup: s.backup,
            weight: s.weight,
            in_flight: AtomicUsize::new(0),
            down_until: AtomicU64::new(0),
            passive: Mutex::default(),
            probe: Mutex::default(),
            requests: self.metrics.upstream_requests.with_label_values(&labels),
            up_gauge: self.metrics.upstream_server_up.with_label_values(&labels),
            reported: AtomicBool::new(true),
            label,
        };
        state.up_gauge.set(1);
        Arc::new(state)
    }

    /// The server for the next attempt of a request: by the group's balancing (`key` for
    /// `hash`), among available servers not in `tried`; backups only when no primary is
    /// available. `None`: none is (the caller answers 502 at once).
    pub fn select(&self, key: &[u8], tried: &[SocketAddr]) -> Option<Attempt> {
        let members = self.members.load();
        if members.len() == 1 {
            let m = &members[0];
            return (!tried.contains(&m.addr) && self.available(m, true)).then(|| Attempt::new(m.clone()));
        }
        let now = now_ms();
        let state = |b: &Backend| b.ext.get::<Arc<ServerState>>().cloned();
        let accept = |b: &Backend, healthy: bool| {
            healthy
                && b.ext
                    .get::<Arc<ServerState>>()
                    .is_some_and(|s| !tried.contains(&s.addr) && !s.passive_down(now))
        };
        for (pool, backup) in self.pools() {
            if let Some(s) = pool.lb.pick(key, &accept).as_ref().and_then(state) {
                return Some(Attempt::new(s));
            }
            // The selection's order may end before it met every member (its fallback after
            // the first choice is pseudo-random): look at each once.
            let found = members.iter().find(|m| {
                m.backup == backup && !tried.contains(&m.addr) && !m.passive_down(now) && pool.ready(m)
            });
            if let Some(m) = found {
                return Some(Attempt::new(m.clone()));
            }
        }
        None
    }

    /// Whether another attempt could find a server (one not in `tried` is available).
    pub fn has_another(&self, tried: &[SocketAddr]) -> bool {
        let members = self.members.load();
        let lone = members.len() == 1;
        members
            .iter()
            .any(|m| !tried.contains(&m.addr) && self.available(m, lone))
    }

    /// An attempt on `s` failed in a way `next_upstream` counts.
    pub fn failed(&self, s: &ServerState) {
        s.failed(self.config.max_fails, self.config.fail_timeout);
        self.report_one(s, self.members.load().len() == 1);
    }

    /// Logs (once, at info) and exports each server's availability when it changed.
    fn report(&self) {
        let members = self.members.load();
        let lone = members.len() == 1;
        for m in members.iter() {
            self.report_one(m, lone);
        }
    }

    fn report_one(&self, m: &ServerState, lone: bool) {
        let up = self.available(m, lone);
        if m.reported.swap(up, Ordering::Relaxed) != up {
            m.up_gauge.set(up as i64);
            let why = if !self.probed_healthy(m) {
                lock(&m.probe)
                    .error
                    .clone()
                    .map_or("health check failed".to_owned(), |e| {
                        format!("health check failed: {e}")
                    })
            } else if m.passive_down(now_ms()) {
                format!(
                    "{} failed attempt(s) within {:?} (max_fails)",
                    self.config.max_fails, self.config.fail_timeout
                )
            } else {
                String::new()
            };
            if up {
                tracing::info!(upstream = %self.config.name, server = %m.label, entry = %m.entry, "upstream server is up");
            } else {
                tracing::info!(upstream = %self.config.name, server = %m.label, entry = %m.entry, reason = %why, "upstream server is down");
            }
        }
    }

    /// One look by the background service: members after a DNS change, due probes, state
    /// changes.
    async fn tick(self: &Arc<Self>, dns: &Arc<Dns>) {
        if self.dns_seen.load(Ordering::Acquire) != dns.generation() {
            self.refresh(dns, false).await;
        }
        if let Some(hc) = &self.config.health_check {
            let due = {
                let mut next = lock(&self.next_probe);
                let now = Instant::now();
                if now >= *next && !self.probing.load(Ordering::Acquire) {
                    *next = now + hc.interval;
                    true
                } else {
                    false
                }
            };
            if due {
                self.probing.store(true, Ordering::Release);
                let group = Arc::downgrade(self);
                tokio::spawn(async move {
                    if let Some(g) = group.upgrade() {
                        // Every server in parallel: one slow server delays no other's probe.
                        for (pool, _) in g.pools() {
                            pool.lb.view().run_health_check(true).await;
                        }
                        g.probing.store(false, Ordering::Release);
                        g.report();
                    }
                });
            }
        }
        self.report();
    }
}

/// The groups of the running configuration, kept across reloads while unchanged.
#[derive(Default)]
pub struct Upstreams {
    groups: Mutex<HashMap<String, Weak<Group>>>,
    current: ArcSwap<Vec<Arc<Group>>>,
}

impl Upstreams {
    /// The group for `config`: the running one if its `[upstreams.NAME]` is unchanged (its
    /// health state kept), else a new one.
    pub fn group(&self, config: &Upstream, metrics: &Arc<Metrics>) -> Arc<Group> {
        let mut groups = lock(&self.groups);
        if let Some(g) = groups.get(&config.name).and_then(Weak::upgrade) {
            if g.config == *config {
                return g;
            }
        }
        let g = Arc::new(Group::new(config.clone(), metrics.clone()));
        groups.insert(config.name.clone(), Arc::downgrade(&g));
        g
    }

    /// Sets the groups of the configuration now running (the background service's list).
    pub fn set_current(&self, groups: Vec<Arc<Group>>) {
        lock(&self.groups).retain(|_, w| w.strong_count() > 0);
        self.current.store(Arc::new(groups));
    }

    pub fn current(&self) -> Arc<Vec<Arc<Group>>> {
        self.current.load_full()
    }
}

/// The background service: every [`TICK`], each group's DNS changes, probes and reports.
pub struct UpstreamService {
    pub upstreams: Arc<Upstreams>,
    pub dns: Arc<Dns>,
}

#[async_trait]
impl BackgroundService for UpstreamService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            for g in self.upstreams.current().iter() {
                g.tick(&self.dns).await;
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
