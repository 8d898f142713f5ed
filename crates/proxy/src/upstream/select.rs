//! The two balancing methods `pingora-load-balancing` lacks, as its `BackendSelection`s so
//! that its `LoadBalancer` (backend views, health, `select_with`) serves them like its own
//! round robin and Ketama: fewest requests in flight (nginx `least_conn`) and the better of
//! two random choices (nginx `random two least_conn`). Both read the in-flight count each
//! server's [`ServerState`] keeps, carried in the backend's `ext`.

use super::ServerState;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The backends of one build with their states (a backend without one counts as idle).
pub(crate) struct Members {
    backends: Box<[Backend]>,
    states: Box<[Option<Arc<ServerState>>]>,
}

impl Members {
    fn new(set: &BTreeSet<Backend>) -> Self {
        let backends: Box<[Backend]> = set.iter().cloned().collect();
        let states = backends
            .iter()
            .map(|b| b.ext.get::<Arc<ServerState>>().cloned())
            .collect();
        Members { backends, states }
    }

    /// `a` is less loaded than `b`: in-flight requests relative to weight (nginx compares
    /// `conns * weight` crosswise the same way).
    fn lighter(&self, a: usize, b: usize) -> bool {
        let load = |i: usize| self.states[i].as_ref().map_or(0, |s| s.in_flight()) as u128;
        let weight = |i: usize| self.backends[i].weight.max(1) as u128;
        load(a) * weight(b) < load(b) * weight(a)
    }
}

/// Backends in a precomputed order, first choice first.
pub(crate) struct Ordered<T> {
    selection: Arc<T>,
    order: Vec<usize>,
    at: usize,
}

pub(crate) trait HasMembers {
    fn members(&self) -> &Members;
}

impl<T: HasMembers> BackendIter for Ordered<T> {
    fn next(&mut self) -> Option<&Backend> {
        let i = *self.order.get(self.at)?;
        self.at += 1;
        self.selection.members().backends.get(i)
    }
}

/// `balance = "least_conn"`: the server with the fewest requests in flight for its weight;
/// ties go round robin, so equally idle servers alternate.
pub(crate) struct LeastConn {
    members: Members,
    turn: AtomicUsize,
}

impl HasMembers for LeastConn {
    fn members(&self) -> &Members {
        &self.members
    }
}

impl BackendSelection for LeastConn {
    type Iter = Ordered<LeastConn>;
    type Config = ();

    fn build(backends: &BTreeSet<Backend>) -> Self {
        LeastConn {
            members: Members::new(backends),
            turn: AtomicUsize::new(0),
        }
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> Self::Iter {
        let n = self.members.backends.len();
        let start = if n == 0 {
            0
        } else {
            self.turn.fetch_add(1, Ordering::Relaxed) % n
        };
        // Rotated, then a stable sort by load: among equals the rotation decides.
        let mut order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
        order.sort_by(|&a, &b| {
            if self.members.lighter(a, b) {
                std::cmp::Ordering::Less
            } else if self.members.lighter(b, a) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        Ordered {
            selection: self.clone(),
            order,
            at: 0,
        }
    }
}

/// `balance = "random"`: two servers drawn at random by weight, the less loaded first (the
/// power of two choices: nearly least_conn's balance without every request comparing all).
pub(crate) struct TwoChoices {
    members: Members,
    /// Cumulative weights, for a weighted draw.
    cumulative: Box<[u64]>,
}

impl HasMembers for TwoChoices {
    fn members(&self) -> &Members {
        &self.members
    }
}

impl TwoChoices {
    fn draw(&self) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            return 0;
        }
        let r = rand::random::<u64>() % total;
        self.cumulative.partition_point(|&c| c <= r)
    }
}

impl BackendSelection for TwoChoices {
    type Iter = Ordered<TwoChoices>;
    type Config = ();

    fn build(backends: &BTreeSet<Backend>) -> Self {
        let members = Members::new(backends);
        let mut sum = 0u64;
        let cumulative = members
            .backends
            .iter()
            .map(|b| {
                sum += b.weight.max(1) as u64;
                sum
            })
            .collect();
        TwoChoices { members, cumulative }
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> Self::Iter {
        let n = self.members.backends.len();
        let mut order = Vec::with_capacity(n);
        if n > 0 {
            let a = self.draw();
            let mut b = self.draw();
            if n > 1 && b == a {
                b = (a + 1 + (rand::random::<u64>() % (n as u64 - 1)) as usize) % n;
            }
            let (first, second) = if self.members.lighter(b, a) {
                (b, a)
            } else {
                (a, b)
            };
            order.push(first);
            if second != first {
                order.push(second);
            }
            // The rest, for when both are unavailable, from a random start.
            let start = (rand::random::<u64>() % n as u64) as usize;
            order.extend(
                (0..n)
                    .map(|i| (start + i) % n)
                    .filter(|i| *i != first && *i != second),
            );
        }
        Ordered {
            selection: self.clone(),
            order,
            at: 0,
        }
    }
}
