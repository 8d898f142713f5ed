//! One certificate's lease, kept for as long as its loop runs (see [`crate::lease`]): the
//! instance that holds it orders and renews the certificate; the others watch the storage
//! for what it stores and try to take the lease every `poll_interval`, so when the holder
//! dies one of them takes over once the lease lapses (`lease_ttl` after its last renewal).
//! The holder renews every third of `lease_ttl`, and releases the lease when the loop
//! stops (a reload that removes the certificate, a clean shutdown).

use super::Observer;
use crate::lease::{self, Acquired, Lease, Record};
use rand::Rng;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What the keeper last found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct LeaseState {
    pub(super) held: bool,
    /// The record in the storage (ours when `held`).
    pub(super) holder: Option<Record>,
    /// The storage could not be read or written (the whole chain of causes).
    pub(super) error: Option<String>,
}

pub(super) struct Keeper {
    pub(super) state: watch::Receiver<LeaseState>,
    name: String,
    observer: Arc<dyn Observer>,
    lease: Arc<Mutex<Option<Lease>>>,
    task: tokio::task::JoinHandle<()>,
}

/// `d` ±20 %.
pub(super) fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.8..1.2))
}

impl Keeper {
    pub(super) fn start(
        storage: PathBuf,
        name: String,
        ttl: Duration,
        poll: Duration,
        observer: Arc<dyn Observer>,
    ) -> Keeper {
        let (tx, rx) = watch::channel(LeaseState::default());
        let lease: Arc<Mutex<Option<Lease>>> = Arc::default();
        let held = lease.clone();
        let keeper_name = name.clone();
        let keeper_observer = observer.clone();
        let task = tokio::spawn(async move {
            let mut was_held = false;
            let mut first = true;
            let mut failing = false;
            loop {
                let (state, wait) = match lease::acquire(&storage, &name, ttl) {
                    Ok(Acquired::Held(l)) => {
                        let record = l.record.clone();
                        *held.lock().unwrap_or_else(|p| p.into_inner()) = Some(l);
                        if !was_held {
                            tracing::info!(certificate = %name, owner = %record.owner, ttl = %humantime::format_duration(ttl), "took the certificate's lease: this instance orders and renews it");
                        }
                        (
                            LeaseState {
                                held: true,
                                holder: Some(record),
                                error: None,
                            },
                            ttl / 3,
                        )
                    }
                    Ok(Acquired::Taken(record)) => {
                        *held.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        if was_held {
                            tracing::warn!(certificate = %name, holder = %record.owner, "lost the certificate's lease (it lapsed and another instance took it)");
                        }
                        (
                            LeaseState {
                                held: false,
                                holder: Some(record),
                                error: None,
                            },
                            jittered(poll),
                        )
                    }
                    Err(e) => {
                        *held.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        let why = crate::error_chain(&e);
                        observer.lease_error(&name);
                        if !failing {
                            tracing::error!(certificate = %name, error = %why, retry_every = %humantime::format_duration(poll), "cannot read or write the certificate's lease in the ACME storage: serving the certificate it has, retrying");
                        }
                        (
                            LeaseState {
                                held: false,
                                holder: None,
                                error: Some(why),
                            },
                            jittered(poll),
                        )
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
            task,
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(l) = self.lease.lock().unwrap_or_else(|p| p.into_inner()).take() {
            self.observer.lease(&self.name, false);
            match lease::release(&l) {
                Ok(()) => tracing::info!(certificate = %l.name, "released the certificate's lease"),
                Err(e) => {
                    tracing::warn!(certificate = %l.name, error = %crate::error_chain(&e), "cannot release the certificate's lease; it lapses on its own")
                }
            }
        }
    }
}
