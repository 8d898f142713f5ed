//! One certificate's lease, kept for as long as its loop runs (see [`crate::lease`] for a
//! directory, [`crate::remote`] for object storage): the instance that holds it orders and
//! renews the certificate; the others watch the storage for what it stores and try to take
//! the lease every `poll_interval`, so when the holder dies one of them takes over once the
//! lease lapses (`lease_ttl` after its last renewal). The holder renews every third of
//! `lease_ttl`, and releases the lease when the loop stops (a reload that removes the
//! certificate, a clean shutdown).

use super::Observer;
use crate::lease::{self, Acquired, Lease, Record};
use crate::remote::{Remote, RemoteAcquired, RemoteLease};
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
    task: tokio::task::JoinHandle<()>,
}

/// `d` ±20 %.
pub(super) fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.8..1.2))
}

/// Takes or renews the lease: the record and the lease when held, or the holder's record.
async fn acquire(backend: &Backend, name: &str, ttl: Duration) -> Result<(Record, Option<Held>), String> {
    match backend {
        Backend::Dir(dir) => match lease::acquire(dir, name, ttl) {
            Ok(Acquired::Held(l)) => Ok((l.record.clone(), Some(Held::Dir(l)))),
            Ok(Acquired::Taken(r)) => Ok((r, None)),
            Err(e) => Err(crate::error_chain(&e)),
        },
        Backend::Remote(remote) => match remote.acquire(name, ttl).await {
            Ok(RemoteAcquired::Held(l)) => Ok((l.record.clone(), Some(Held::Remote(remote.clone(), l)))),
            Ok(RemoteAcquired::Taken(r)) => Ok((r, None)),
            Err(e) => Err(crate::error_chain(&e)),
        },
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
        let task = tokio::spawn(async move {
            let mut was_held = false;
            let mut first = true;
            let mut failing = false;
            let mut probed = !matches!(backend, Backend::Remote(_));
            loop {
                let found = match (&backend, probed) {
                    (Backend::Remote(remote), false) => match remote.check_conditional_writes().await {
                        Ok(()) => {
                            probed = true;
                            acquire(&backend, &name, ttl).await
                        }
                        Err(e) => Err(crate::error_chain(&e)),
                    },
                    _ => acquire(&backend, &name, ttl).await,
                };
                let (state, wait) = match found {
                    Ok((record, Some(l))) => {
                        *held.lock().unwrap_or_else(|p| p.into_inner()) = Some(l);
                        if !was_held {
                            tracing::info!(certificate = %name, owner = %record.owner, ttl = %humantime::format_duration(ttl), "took the certificate's lease: this instance orders and renews it");
                        }
                        let state = LeaseState {
                            held: true,
                            holder: Some(record),
                            error: None,
                        };
                        (state, ttl / 3)
                    }
                    Ok((record, None)) => {
                        *held.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        if was_held {
                            tracing::warn!(certificate = %name, holder = %record.owner, "lost the certificate's lease (it lapsed and another instance took it)");
                        }
                        let state = LeaseState {
                            held: false,
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
            task,
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
        match held {
            Held::Dir(l) => match lease::release(&l) {
                Ok(()) => tracing::info!(certificate = %name, "released the certificate's lease"),
                Err(e) => {
                    tracing::warn!(certificate = %name, error = %crate::error_chain(&e), "cannot release the certificate's lease; it lapses on its own")
                }
            },
            Held::Remote(remote, mut l) => {
                // Released by a request of its own; at shutdown the runtime may not run it,
                // and the lease lapses on its own.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        match remote.renew(&mut l, None).await {
                            Ok(_) => tracing::info!(certificate = %name, "released the certificate's lease"),
                            Err(e) => {
                                tracing::warn!(certificate = %name, error = %crate::error_chain(&e), "cannot release the certificate's lease; it lapses on its own")
                            }
                        }
                    });
                }
            }
        }
    }
}
