//! `rate_limit = { rate, burst, key }` (nginx `limit_req` with `burst` and `nodelay`,
//! Caddy/Traefik RateLimit): a GCRA token bucket per key, from the `governor` crate, in
//! memory per instance. Over the limit: 429 with `Retry-After` (RFC 6585 §4).
//!
//! Memory stays bounded under many distinct clients: past [`MAX_KEYS`] keys, the buckets
//! that are full again (clients idle for a refill period) are dropped, which loses nothing.

use super::{DenyReason, Refusal, RequestFacts};
use gateway_config::{RateKey, RateLimit};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

/// Keys kept before idle ones are swept (each about 100 bytes).
pub const MAX_KEYS: usize = 100_000;

/// What a bucket is kept by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Client(Option<IpAddr>),
    /// A header's value (`None`: requests without the header, one bucket for all of them).
    Header(Option<Box<[u8]>>),
}

pub struct Limiter {
    settings: RateLimit,
    buckets: RateLimiter<Key, DefaultKeyedStateStore<Key>, DefaultClock>,
    clock: DefaultClock,
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
            buckets: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock.clone()),
            clock,
        }
    }

    /// The settings it was built from (a reload keeps the buckets when they are unchanged).
    pub fn settings(&self) -> &RateLimit {
        &self.settings
    }

    /// The key of a request.
    pub fn key(&self, facts: &RequestFacts<'_>) -> Key {
        match &self.settings.key {
            RateKey::Client => Key::Client(facts.client),
            RateKey::Header(name) => {
                Key::Header(facts.req.headers.get(name.as_str()).map(|v| v.as_bytes().into()))
            }
        }
    }

    /// Passes, or refuses with 429 and `Retry-After` (whole seconds, at least 1).
    pub fn check(&self, facts: &RequestFacts<'_>) -> Result<(), Refusal> {
        self.check_key(&self.key(facts))
    }

    pub fn check_key(&self, key: &Key) -> Result<(), Refusal> {
        if self.buckets.len() > MAX_KEYS {
            self.buckets.retain_recent();
            self.buckets.shrink_to_fit();
        }
        match self.buckets.check_key(key) {
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

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
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
            assert!(l.check_key(&k).is_ok());
        }
        let r = l.check_key(&k).unwrap_err();
        assert_eq!(r.status, 429);
        assert_eq!(r.headers[0].1, "1");
        // Another client has its own bucket.
        assert!(l
            .check_key(&Key::Client(Some("192.0.2.2".parse().unwrap())))
            .is_ok());
    }
}
