//! `rate_limit = { rate, burst, key }` (nginx `limit_req` with `burst` and `nodelay`,
//! Caddy/Traefik RateLimit): a GCRA token bucket per key, from the `governor` crate, in
//! memory per instance. Over the limit: 429 with `Retry-After` (RFC 6585 §4).
//!
//! Memory stays bounded under many distinct clients. A key is a fixed size (an address, or
//! a keyed hash of the header's value: a client cannot make the table hold its 8 KiB
//! values). Past [`MAX_KEYS`] keys, the buckets that are full again (clients idle for a
//! refill period) are dropped, which loses nothing; the next sweep waits until the table
//! has doubled, so a flood of keys still inside their refill period costs one sweep per
//! doubling, never one per request. A table that would grow past [`HARD_MAX_KEYS`] is
//! started afresh: only a client with that many addresses (an IPv6 prefix) or header
//! values fills it, and each new key of its gets a full bucket anyway.

use super::{DenyReason, Refusal, RequestFacts};
use arc_swap::ArcSwap;
use gateway_config::{RateKey, RateLimit};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Keys kept before idle ones are swept (a key and its bucket take about 32 bytes in the
/// table; `hundred_thousand_clients_stay_bounded` prints what 100,000 cost).
pub const MAX_KEYS: usize = 100_000;

/// Keys a table never holds more of (bar the requests in flight during a sweep).
pub const HARD_MAX_KEYS: usize = 4 * MAX_KEYS;

/// What a bucket is kept by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Client(Option<IpAddr>),
    /// A header's value, hashed with the limiter's own random key (`None`: requests without
    /// the header, one bucket for all of them).
    Header(Option<u64>),
}

type Buckets = RateLimiter<Key, DefaultKeyedStateStore<Key>, DefaultClock>;

pub struct Limiter {
    settings: RateLimit,
    quota: Quota,
    buckets: ArcSwap<Buckets>,
    clock: DefaultClock,
    /// Hashes header values into keys (random per limiter: collisions cannot be aimed at).
    hasher: RandomState,
    /// The table size above which the next request sweeps (`usize::MAX` while one does).
    sweep_at: AtomicUsize,
}

impl Limiter {
    pub fn new(cfg: &RateLimit) -> Self {
        // Validated: the rate is above zero; a period under a nanosecond is clamped.
        let period = Duration::from_secs_f64(1.0 / cfg.per_second.max(1e-9)).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            // nginx's `burst = 20` lets 21 requests through at once (the one allowed by the
            // rate and 20 more).
            .allow_burst(NonZeroU32::new(cfg.burst.saturating_add(1)).unwrap_or(NonZeroU32::MIN));
        let clock = DefaultClock::default();
        Limiter {
            settings: cfg.clone(),
            quota,
            buckets: ArcSwap::from_pointee(Self::table(quota, &clock)),
            clock,
            hasher: RandomState::new(),
            sweep_at: AtomicUsize::new(MAX_KEYS),
        }
    }

    fn table(quota: Quota, clock: &DefaultClock) -> Buckets {
        RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock.clone())
    }

    /// The settings it was built from (a reload keeps the buckets when they are unchanged).
    pub fn settings(&self) -> &RateLimit {
        &self.settings
    }

    /// The key of a request.
    pub fn key(&self, facts: &RequestFacts<'_>) -> Key {
        match &self.settings.key {
            RateKey::Client => Key::Client(facts.client),
            RateKey::Header(name) => Key::Header(
                facts
                    .req
                    .headers
                    .get(name.as_str())
                    .map(|v| self.hasher.hash_one(v.as_bytes())),
            ),
        }
    }

    /// Passes, or refuses with 429 and `Retry-After` (whole seconds, at least 1).
    pub fn check(&self, facts: &RequestFacts<'_>) -> Result<(), Refusal> {
        self.check_key(&self.key(facts))
    }

    pub fn check_key(&self, key: &Key) -> Result<(), Refusal> {
        let buckets = self.buckets.load();
        let at = self.sweep_at.load(Ordering::Relaxed);
        if buckets.len() > at
            && self
                .sweep_at
                .compare_exchange(at, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep(&buckets);
        }
        match buckets.check_key(key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut r = Refusal::new(429, DenyReason::Rate);
                r.headers
                    .push((http::header::RETRY_AFTER, http::HeaderValue::from(secs.max(1))));
                Err(r)
            }
        }
    }

    /// Drops the buckets that are full again; schedules the next sweep once the table has
    /// doubled, or starts afresh when doubling would pass [`HARD_MAX_KEYS`].
    fn sweep(&self, buckets: &Buckets) {
        buckets.retain_recent();
        let left = buckets.len();
        if left.saturating_mul(2) > HARD_MAX_KEYS {
            self.buckets.store(Arc::new(Self::table(self.quota, &self.clock)));
            self.sweep_at.store(MAX_KEYS, Ordering::Release);
            return;
        }
        buckets.shrink_to_fit();
        self.sweep_at.store(MAX_KEYS.max(left * 2), Ordering::Release);
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.load().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused_with_retry_after() {
        let l = Limiter::new(&RateLimit {
            per_second: 1.0,
            burst: 2,
            key: RateKey::Client,
        });
        let k = Key::Client(Some("192.0.2.1".parse().unwrap()));
        for _ in 0..3 {
            if let Err(e) = l.check_key(&k) {
                panic!("l.check_key(&k): {e:?}");
            }
        }
        let r = l.check_key(&k).unwrap_err();
        assert_eq!(r.status, 429);
        assert_eq!(r.headers[0].1, "1");
        // Another client has its own bucket.
        assert!(l
            .check_key(&Key::Client(Some("192.0.2.2".parse().unwrap())))
            .is_ok());
    }

    /// Held by the tests that build large tables, so that one's memory does not show in
    /// the other's measurement.
    static LARGE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Resident memory of this process, KiB (`VmRSS`).
    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// The RSS (KiB) before and after `n` keys, `key(0..n)`, each passed by `l` once.
    fn rss_around(l: &Limiter, n: u32, key: impl Fn(u32) -> Key) -> (u64, u64) {
        let before = rss_kib();
        for i in 0..n {
            if let Err(e) = l.check_key(&key(i)) {
                panic!("key {i}: {e:?}");
            }
        }
        (before, rss_kib())
    }

    fn login() -> Limiter {
        Limiter::new(&RateLimit {
            per_second: 10.0,
            burst: 20,
            key: RateKey::Client,
        })
    }

    /// Issue 20: 100,000 distinct clients (IPv6 addresses, the cheap ones to have many of)
    /// through one limiter: the table holds at most MAX_KEYS of them and its memory is
    /// printed for the record (`cargo test -p gateway-proxy hundred_thousand -- --nocapture`).
    #[test]
    fn hundred_thousand_clients_stay_bounded() {
        const N: u32 = 100_000;
        let _alone = LARGE.lock().unwrap_or_else(|p| p.into_inner());
        let l = login();
        let (before, after) = rss_around(&l, N, |i| {
            let ip = std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(i));
            Key::Client(Some(IpAddr::V6(ip)))
        });
        let grown = after.saturating_sub(before);
        println!(
            "rate_limit: {N} distinct client keys: {} buckets held (MAX_KEYS {MAX_KEYS}), RSS {before} KiB -> {after} KiB (+{grown} KiB, {} bytes per key; size_of::<Key>() = {})",
            l.len(),
            grown * 1024 / u64::from(N),
            std::mem::size_of::<Key>(),
        );
        assert!(l.len() <= MAX_KEYS + 1, "{} buckets", l.len());
        assert!(grown < 64 * 1024, "{grown} KiB for {N} keys");

        // Header keys are hashed: 100,000 distinct 200-byte values cost what addresses do.
        let by_header = Limiter::new(&RateLimit {
            per_second: 10.0,
            burst: 20,
            key: RateKey::Header("x-api-key".into()),
        });
        let (before, after) = rss_around(&by_header, N, |i| {
            let value = format!("{i:0>200}");
            Key::Header(Some(by_header.hasher.hash_one(value.as_bytes())))
        });
        let grown = after.saturating_sub(before);
        println!(
            "rate_limit: {N} distinct 200-byte header values: {} buckets, RSS +{grown} KiB ({} bytes per key)",
            by_header.len(),
            grown * 1024 / u64::from(N),
        );
        assert!(grown < 64 * 1024, "{grown} KiB for {N} header keys");
    }

    /// More distinct clients than MAX_KEYS, all inside their refill period (nothing to sweep):
    /// the table never passes HARD_MAX_KEYS and the requests do not each pay for a sweep.
    #[test]
    fn a_flood_of_active_keys_is_capped_and_sweeps_rarely() {
        const N: u32 = 500_000;
        let _alone = LARGE.lock().unwrap_or_else(|p| p.into_inner());
        let l = Limiter::new(&RateLimit {
            per_second: 1.0 / 60.0,
            burst: 5,
            key: RateKey::Client,
        });
        let started = std::time::Instant::now();
        let mut most = 0;
        for i in 0..N {
            let ip = std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(i));
            if let Err(e) = l.check_key(&Key::Client(Some(IpAddr::V6(ip)))) {
                panic!("l.check_key(&Key::Client(Some(IpAddr::V6(ip)))): {e:?}");
            }
            if i % 1000 == 0 {
                most = most.max(l.len());
            }
        }
        println!(
            "rate_limit: {N} active keys in {:?}: at most {most} held (HARD_MAX_KEYS {HARD_MAX_KEYS}), {} at the end",
            started.elapsed(),
            l.len()
        );
        assert!(most <= HARD_MAX_KEYS + 1 && l.len() <= HARD_MAX_KEYS + 1);
        // A client still in the table keeps its bucket: the last one is limited.
        let last = Key::Client(Some(IpAddr::V6(std::net::Ipv6Addr::from(
            (0x2001_0db8_u128 << 96) | u128::from(N - 1),
        ))));
        for _ in 0..5 {
            if let Err(e) = l.check_key(&last) {
                panic!("l.check_key(&last): {e:?}");
            }
        }
        assert_eq!(l.check_key(&last).unwrap_err().status, 429);
    }
}
