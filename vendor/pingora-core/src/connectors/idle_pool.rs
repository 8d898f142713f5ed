// gateway patch (PATCHED.md, "Idle upstream connections without a watcher task each").
//
// Upstream keeps every idle connection in `pingora_pool::ConnectionPool` behind an
// `Arc<Mutex<Stream>>` and spawns one task per release that holds the lock and watches the
// socket; taking the connection back notifies that task through a oneshot, waits for it to run
// and drop the lock, then unwraps the `Arc`. On a keepalive pool that is two task switches,
// four allocations and a DashMap/LRU round trip per request. Here the idle connections sit in
// one small list per connector: taking one checks it as it is taken (closed by the server,
// unexpected data, idle timeout), and one sweeper task per connector, woken once a second
// while the list is not empty, closes the ones that died or expired meanwhile, like nginx's
// keepalive cache closes them on their read event.

use super::{test_reusable_stream, PoolCallback};
use crate::protocols::Stream;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the sweeper looks at the idle connections while there are any.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Idle {
    /// `Peer::reuse_hash()` of the server the connection goes to.
    key: u64,
    stream: Stream,
    since: Instant,
    timeout: Option<Duration>,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        self.timeout
            .is_some_and(|t| now.saturating_duration_since(self.since) >= t)
    }
}

/// Idle connections of one connector, oldest first; at most `capacity` (the least recently
/// released goes first when full).
pub(crate) struct IdlePool {
    idle: Mutex<Vec<Idle>>,
    capacity: usize,
    sweeping: AtomicBool,
}

impl IdlePool {
    pub(crate) fn new(capacity: usize) -> Self {
        IdlePool {
            idle: Mutex::new(Vec::new()),
            capacity,
            sweeping: AtomicBool::new(false),
        }
    }

    /// The most recently released connection to `key` that is still usable (the warmest, as
    /// nginx's keepalive cache picks); the dead and expired ones met on the way are closed.
    pub(crate) fn take(&self, key: u64, unexpected_data: &AtomicU64) -> Option<Stream> {
        let now = Instant::now();
        let mut closed = Vec::new();
        let mut idle = self.idle.lock();
        let found = loop {
            let Some(i) = idle.iter().rposition(|c| c.key == key) else {
                break None;
            };
            let mut c = idle.remove(i);
            if !c.expired(now) && test_reusable_stream(&mut c.stream, unexpected_data) {
                break Some(c.stream);
            }
            closed.push(c);
        };
        drop(idle);
        drop(closed);
        found
    }

    /// Keeps `stream` for reuse until `timeout` (`None`: until the server closes it or it is
    /// evicted). Starts the sweeper if it is not running.
    pub(crate) fn put(
        self: &Arc<Self>,
        key: u64,
        stream: Stream,
        timeout: Option<Duration>,
        unexpected_data: &Arc<AtomicU64>,
        callback: &Option<PoolCallback>,
    ) {
        // No room, or no time to idle (`keepalive_timeout` 0): closed now, as upstream's
        // watcher closed it on its first poll.
        if self.capacity == 0 || timeout == Some(Duration::ZERO) {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock();
        let evicted = (idle.len() >= self.capacity).then(|| idle.remove(0));
        idle.push(Idle {
            key,
            stream,
            since: now,
            timeout,
        });
        drop(idle);
        if let (Some(c), Some(cb)) = (&evicted, callback) {
            cb(now.saturating_duration_since(c.since));
        }
        drop(evicted);
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            Self::start_sweeper(Arc::downgrade(self), unexpected_data.clone());
        }
    }

    /// Closes the connections that expired or that the server closed (or wrote to); returns
    /// how many are left. (`keepalive_pool_callback` is called for evictions only, as
    /// upstream's watcher calls it.)
    fn sweep(&self, unexpected_data: &AtomicU64) -> usize {
        let now = Instant::now();
        let mut idle = self.idle.lock();
        let (mut keep, mut gone) = (Vec::with_capacity(idle.len()), Vec::new());
        for mut c in idle.drain(..) {
            if !c.expired(now) && test_reusable_stream(&mut c.stream, unexpected_data) {
                keep.push(c);
            } else {
                gone.push(c);
            }
        }
        *idle = keep;
        let left = idle.len();
        drop(idle);
        drop(gone);
        left
    }

    /// One task per connector, on the thread that released the connection (as upstream's
    /// watchers are spawned), ending when the pool is gone or empty.
    fn start_sweeper(pool: Weak<Self>, unexpected_data: Arc<AtomicU64>) {
        pingora_runtime::current_handle().spawn(async move {
            loop {
                pingora_timeout::fast_timeout::fast_sleep(SWEEP_EVERY).await;
                let Some(pool) = pool.upgrade() else { return };
                if pool.sweep(&unexpected_data) > 0 {
                    continue;
                }
                pool.sweeping.store(false, Ordering::Release);
                // A connection released between the sweep and the store saw `sweeping` still
                // set and started nothing: go on for it.
                if pool.idle.lock().is_empty() || pool.sweeping.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
        });
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.idle.lock().len()
    }
}
// gateway patch end
