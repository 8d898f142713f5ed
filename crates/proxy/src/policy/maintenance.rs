//! The maintenance switch: `maintenance = true` on a route, or `gateway maintenance on|off
//! ROUTE` at run time (through the control socket; kept across reloads until switched off).
//! A route in maintenance answers 503 with `Retry-After` and the maintenance page, WebSocket
//! upgrades included; other routes keep serving.

use std::collections::BTreeSet;
use std::sync::RwLock;

/// `Retry-After` of a maintenance 503, seconds.
pub const RETRY_AFTER_SECS: u64 = 120;

/// The answer of a route in maintenance: 503 with `Retry-After`.
pub fn refusal() -> super::Refusal {
    let mut r = super::Refusal::new(503, super::DenyReason::Maintenance);
    r.headers.push((
        http::header::RETRY_AFTER,
        http::HeaderValue::from(RETRY_AFTER_SECS),
    ));
    r
}

/// Routes switched into maintenance at run time, by name.
#[derive(Default)]
pub struct Switches {
    on: RwLock<BTreeSet<String>>,
}

impl Switches {
    /// Whether route `name` (with the file's `maintenance` value `file`) is in maintenance.
    pub fn active(&self, name: &str, file: bool) -> bool {
        file || self.on.read().is_ok_and(|s| !s.is_empty() && s.contains(name))
    }

    /// Switches route `name` on or off; returns whether that changed anything.
    pub fn set(&self, name: &str, on: bool) -> bool {
        let mut s = self.on.write().unwrap_or_else(|p| p.into_inner());
        if on {
            s.insert(name.to_owned())
        } else {
            s.remove(name)
        }
    }

    /// The routes switched on at run time.
    pub fn list(&self) -> Vec<String> {
        self.on
            .read()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}
