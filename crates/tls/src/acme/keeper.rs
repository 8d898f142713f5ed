//! One certificate's lease, kept for as long as its loop runs (see [`crate::lease`] for a
//! directory, [`crate::remote`] for object storage): the instance that holds it orders and
//! renews the certificate; the others watch the storage for what it stores and try to take
//! the lease every `poll_interval`, so when the holder dies one of them takes over once the
//! lease lapses (`lease_ttl` after its last renewal). The holder renews every third of
//! `lease_ttl`, and releases the lease when the loop stops (a reload that removes the
//! certificate, a clean shutdown: [`Keeper::release`]).
//!
//! "Held" is only believed while it is fresh: each storage call is bounded by a third of the
//! lease's lifetime, and [`LeaseState::holds`] is false once two thirds of it have passed
//! since the last successful renewal started, so a storage that hangs never leaves an
//! instance ordering on a lease another one has taken over.

use super::Observer;
use crate::lease::{self, Acquired, Lease, Record};
use crate::remote::{Remote, RemoteAcquired, RemoteLease};
use rand::Rng;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the keeper last found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct LeaseState {
    pub(super) held: bool,
    /// Until when `held` may be believed (two thirds of the lease after the renewal began).
    pub(super) valid_until: Option<Instant>,
    /// The record in the storage (ours when `held`).
    pub(super) holder: Option<Record>,
    /// The storage could not be read or written (the whole chain of causes).
    pub(super) error: Option<String>,
}

impl LeaseState {
    /// Held, and recently enough confirmed.
    pub(super) fn holds(&self) -> bool {
        self.held && self.valid_until.is_some_and(|t| Instant::now() < t)
    }
}

/// Where the lease lives.
#[derive(Clone)]
pub(super) enum Backend {
    Dir(PathBuf),
    Remote(Arc<Remote>),
    /// The object storage client cannot be configured (why).
    Broken(String),
}

enum Held {
    Dir(Lease),
    Remote(Arc<Remote>, RemoteLease),
}

pub(super) struct Keeper {
    pub(super) state: watch::Receiver<LeaseState>,
    name: String,
    observer: Arc<dyn Observer>,
    lease: Arc<Mutex<Option<Held>>>,
    /// Until when this instance leaves the lease to the others ([`Keeper::step_aside`]).
    pause: Arc<Mutex<Option<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

/// `d` ±20 %.
pub(super) fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.8..1.2))
}

/// Takes or renews the lease: the record and the lease when held, or the holder's record.
async fn acquire(
    backend: &Backend,
    name: &str,
    ttl: Duration,
    nonce: u64,
) -> Result<(Record, Option<Held>), String> {
    match backend {
        Backend::Dir(dir) => {
            // A hard-mounted NFS may block: not on a runtime thread.
            let (dir, name) = (dir.clone(), name.to_owned());
            let r = tokio::task::spawn_blocking(move || lease::acquire(&dir, &name, ttl, nonce))
                .await
                .map_err(|e| e.to_string())?;
            match r {
                Ok(Acquired::Held(l)) => Ok((l.record.clone(), Some(Held::Dir(l)))),
                Ok(Acquired::Taken(r)) => Ok((r, None)),
                Err(e) => Err(crate::error_chain(&e)),
            }
        }
        Backend::Remote(remote) => {
            remote.check_conditional_writes().await?;
            match remote.acquire(name, ttl, nonce).await {
                Ok(RemoteAcquired::Held(l)) => Ok((l.record.clone(), Some(Held::Remote(remote.clone(), l)))),
                Ok(RemoteAcquired::Taken(r)) => Ok((r, None)),
                Err(e) => Err(crate::error_chain(&e)),
            }
        }
        Backend::Broken(why) => Err(why.clone()),
    }
}

impl Keeper {
    pub(super) fn start(
        backend: Backend,
        name: String,
        ttl: Duration,
        poll: Duration,
        observer: Arc<dyn Observer>,
    ) -> Keeper {
        let (tx, rx) = watch::channel(LeaseState::default());
        let lease: Arc<Mutex<Option<Held>>> = Arc::default();
        let held = lease.clone();
        let keeper_name = name.clone();
        let keeper_observer = observer.clone();
        // This keeper's records: a reload's new loop gets a new one, and waits until this
        // one has released the lease.
        let nonce: u64 = rand::random::<u64>() | 1;
        let pause: Arc<Mutex<Option<Instant>>> = Arc::default();
        let paused = pause.clone();
        let task = tokio::spawn(async move {
            let mut was_held = false;
            let mut first = true;
            let mut failing = false;
            loop {
                let until = paused
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .filter(|t| Instant::now() < *t);
                if let Some(until) = until {
                    let mine = held.lock().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some(h) = mine {
                        release_held(&name, h).await;
                        observer.lease(&name, false);
                        was_held = false;
                        tx.send_modify(|s| {
                            s.held = false;
                            s.valid_until = None;
                        });
                    }
                    tokio::time::sleep(until.saturating_duration_since(Instant::now()).min(poll)).await;
                    continue;
                }
                let began = Instant::now();
                let found = match tokio::time::timeout(ttl / 3, acquire(&backend, &name, ttl, nonce)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!(
                        "the storage did not answer within {} (a third of lease_ttl)",
                        humantime::format_duration(ttl / 3)
                    )),
                };
                let (state, wait) = match found {
                    Ok((record, Some(l))) => {
                        *held.lock().unwrap_or_else(|p| p.into_inner()) = Some(l);
                        if !was_held {
                            tracing::info!(certificate = %name, owner = %record.owner, ttl = %humantime::format_duration(ttl), "took the certificate's lease: this instance orders and renews it");
                        }
                        let state = LeaseState {
                            held: true,
                            valid_until: Some(began + ttl * 2 / 3),
                            holder: Some(record),
                            error: None,
                        };
                        (state, (ttl / 3).saturating_sub(began.elapsed()))
                    }
                    Ok((record, None)) => {
                        *held.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        if was_held {
                            tracing::warn!(certificate = %name, holder = %record.owner, "lost the certificate's lease (it lapsed and another instance took it)");
                        }
                        let state = LeaseState {
                            held: false,
                            valid_until: None,
                            holder: Some(record),
                            error: None,
                        };
                        (state, jittered(poll))
                    }
                    Err(why) => {
                        *held.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        observer.lease_error(&name);
                        if !failing {
                            tracing::error!(certificate = %name, error = %why, retry_every = %humantime::format_duration(poll), "cannot read or write the certificate's lease in the ACME storage: serving the certificate it has, retrying");
                        }
                        let state = LeaseState {
                            held: false,
                            valid_until: None,
                            holder: None,
                            error: Some(why),
                        };
                        (state, jittered(poll))
                    }
                };
                if failing && state.error.is_none() {
                    tracing::info!(certificate = %name, "the certificate's lease in the ACME storage can be read and written again");
                }
                failing = state.error.is_some();
                if first || state.held != was_held {
                    observer.lease(&name, state.held);
                }
                first = false;
                was_held = state.held;
                tx.send_replace(state);
                tokio::time::sleep(wait).await;
            }
        });
        Keeper {
            state: rx,
            name: keeper_name,
            observer: keeper_observer,
            lease,
            pause,
            task,
        }
    }

    /// Gives the lease up and leaves it to the other instances for `period` (a holder whose
    /// orders keep failing: its CA account, its route to the CA or its storage may be what
    /// is broken, and another instance may succeed).
    pub(super) fn step_aside(&self, period: Duration) {
        // The task sees it at its next round (within `poll_interval` or a third of the
        // lease).
        *self.pause.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + period);
    }

    /// Whether this instance holds the lease now ([`LeaseState::holds`]).
    pub(super) fn holds(&self) -> bool {
        self.state.borrow().holds()
    }

    /// Stops renewing and gives the lease up, so another instance need not wait for it to
    /// lapse. Awaited by the loop as it stops; [`Drop`] does the same as best it can.
    pub(super) async fn release(&self) {
        self.task.abort();
        let Some(held) = self.lease.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        self.observer.lease(&self.name, false);
        release_held(&self.name, held).await;
    }
}

async fn release_held(name: &str, held: Held) {
    let outcome = match held {
        Held::Dir(l) => tokio::task::spawn_blocking(move || lease::release(&l).map(|()| true))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| crate::error_chain(&e))),
        Held::Remote(remote, mut l) => {
            tokio::time::timeout(Duration::from_secs(5), remote.renew(&mut l, None))
                .await
                .map_err(|_| "no answer within 5 s".to_owned())
                .and_then(|r| r.map_err(|e| crate::error_chain(&e)))
        }
    };
    match outcome {
        Ok(true) => tracing::info!(certificate = %name, "released the certificate's lease"),
        Ok(false) => {
            tracing::info!(certificate = %name, "the certificate's lease had already passed to another instance")
        }
        Err(e) => {
            tracing::warn!(certificate = %name, error = %e, "cannot release the certificate's lease; it lapses on its own")
        }
    }
}

/// How `gateway certs` words the lease as the keeper last found it.
pub(super) fn describe(state: &LeaseState) -> String {
    match &state.error {
        Some(e) => format!("unknown: {e}"),
        None if state.holder.is_none() => "not looked at yet".into(),
        None => lease::describe(state.holder.as_ref(), lease::now_ms()),
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.task.abort();
        let Some(held) = self.lease.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        self.observer.lease(&self.name, false);
        let name = self.name.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { release_held(&name, held).await });
        }
    }
}
