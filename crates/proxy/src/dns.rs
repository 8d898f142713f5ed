//! Asynchronous, refreshed resolution of upstream host names.
//!
//! Compose service names resolve through Docker's DNS and change when a container is
//! recreated, so names are resolved in the background, again every `dns_refresh`, and again
//! at once after a connect failure. The request path only reads the cache; a name seen for
//! the first time is resolved asynchronously (never a blocking lookup on a worker thread).

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

type Key = (String, u16);

/// Cache of resolved upstream addresses.
#[derive(Default)]
pub struct Dns {
    cache: ArcSwap<HashMap<Key, Arc<[SocketAddr]>>>,
    /// Names the refresher keeps up to date.
    wanted: Mutex<Vec<Key>>,
    wake: Notify,
    refresh: Mutex<Duration>,
    rr: AtomicUsize,
    /// Names whose last lookup failed, so a lasting failure is logged once, not every refresh.
    failing: Mutex<std::collections::HashSet<Key>>,
}

impl Dns {
    pub fn new(refresh: Duration) -> Arc<Self> {
        let d = Dns::default();
        *d.refresh.lock().unwrap_or_else(|p| p.into_inner()) = refresh;
        Arc::new(d)
    }

    /// Sets the names to keep resolved (on start and on every config reload).
    pub fn set_wanted(&self, names: Vec<(String, u16)>, refresh: Duration) {
        *self.wanted.lock().unwrap_or_else(|p| p.into_inner()) = names;
        *self.refresh.lock().unwrap_or_else(|p| p.into_inner()) = refresh;
        self.wake.notify_one();
    }

    /// Asks for an immediate re-resolution (after a connect failure).
    pub fn invalidate(&self) {
        self.wake.notify_one();
    }

    /// An address for `host:port`: an IP literal as is, a cached name round-robin, or an
    /// asynchronous lookup for a name not seen before.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, String> {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        if let Some(addrs) = self.cache.load().get(&(host.to_owned(), port)) {
            if !addrs.is_empty() {
                let i = self.rr.fetch_add(1, Ordering::Relaxed) % addrs.len();
                return Ok(addrs[i]);
            }
        }
        let addrs = lookup(host, port).await?;
        let first = addrs[0];
        self.store((host.to_owned(), port), addrs);
        Ok(first)
    }

    fn store(&self, key: Key, addrs: Arc<[SocketAddr]>) {
        self.cache.rcu(|old| {
            let mut m = HashMap::clone(old);
            m.insert(key.clone(), addrs.clone());
            m
        });
    }

    async fn refresh_all(&self) {
        let wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (host, port) in wanted {
            if host.parse::<std::net::IpAddr>().is_ok() {
                continue;
            }
            match lookup(&host, port).await {
                Ok(addrs) => {
                    self.failing
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&(host.clone(), port));
                    let changed = self
                        .cache
                        .load()
                        .get(&(host.clone(), port))
                        .is_none_or(|old| old[..] != addrs[..]);
                    if changed {
                        tracing::info!(upstream.host = %host, port, addrs = ?addrs, "upstream name resolved");
                    }
                    self.store((host, port), addrs);
                }
                // Keep the last known addresses: a DNS hiccup must not take an upstream down.
                Err(e) => {
                    let first = self
                        .failing
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((host.clone(), port));
                    if first {
                        tracing::warn!(upstream.host = %host, port, error = %e, "cannot resolve upstream (retrying every refresh; logged once)");
                    }
                }
            }
        }
    }
}

async fn lookup(host: &str, port: u16) -> Result<Arc<[SocketAddr]>, String> {
    let fut = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(Duration::from_secs(5), fut).await {
        Err(_) => Err(format!("resolving {host} timed out")),
        Ok(Err(e)) => Err(format!("cannot resolve {host}: {e}")),
        Ok(Ok(it)) => {
            let v: Vec<SocketAddr> = it.collect();
            if v.is_empty() {
                Err(format!("{host} has no address"))
            } else {
                Ok(v.into())
            }
        }
    }
}

/// The background service that keeps [`Dns`] fresh.
pub struct DnsRefresher(pub Arc<Dns>);

#[async_trait]
impl BackgroundService for DnsRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            self.0.refresh_all().await;
            let period = *self.0.refresh.lock().unwrap_or_else(|p| p.into_inner());
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = self.0.wake.notified() => {}
                _ = tokio::time::sleep(period) => {}
            }
        }
    }
}
