//! The object storage side of a certificate's loop (`[acme] storage = "s3://..."`, see
//! [`crate::remote`]): a certificate issued here is written there as one unit; the
//! certificates other instances wrote there are copied into this instance's directory,
//! from which [`AcmeManager::adopt_stored`] serves them. A failure is logged when it starts
//! and when it ends, counted in the storage errors, and tried again at the next poll; the
//! certificate being served never changes because of it.

use super::{AcmeManager, Job};
use crate::remote::Remote;
use crate::storage;
use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

impl AcmeManager {
    /// The client of `url`, made once (or why it cannot be configured).
    pub(super) fn remote(&self, url: &str) -> Result<Arc<Remote>, String> {
        let mut map = self.remotes.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(url.to_owned())
            .or_insert_with(|| {
                Remote::from_url(url).map(Arc::new).map_err(|e| {
                    let why = crate::error_chain(&e);
                    tracing::error!(storage = %url, error = %why, "cannot configure the object storage client (AWS_* environment variables)");
                    why
                })
            })
            .clone()
    }

    /// The object storage of `job`, if it has one that can be configured.
    pub(super) fn remote_of(&self, job: &Job) -> Option<Arc<Remote>> {
        self.remote(job.acme.object_storage.as_deref()?).ok()
    }

    pub(super) fn lock_unpushed(&self) -> MutexGuard<'_, HashMap<String, (String, String)>> {
        self.unpushed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the certificate issued here to the object storage, if not done yet.
    pub(super) async fn push(&self, job: &Job) {
        let name = &job.cert.name;
        let Some(remote) = self.remote_of(job) else {
            self.lock_unpushed().remove(name);
            return;
        };
        let Some((chain, key)) = self.lock_unpushed().get(name).cloned() else {
            return;
        };
        match remote.push_unit(name, chain.as_bytes(), key.as_bytes()).await {
            Ok(version) => {
                tracing::info!(certificate = %name, storage = %remote.url(), version = %version, "certificate written to the object storage for the other instances");
                self.lock_unpushed().remove(name);
                self.pulled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.clone(), version);
            }
            Err(e) => {
                self.observer.lease_error(name);
                tracing::error!(certificate = %name, error = %crate::error_chain(&e), "cannot write the new certificate to the object storage: it is served here, and written at the next poll");
            }
        }
    }

    /// Copies a certificate another instance wrote to the object storage into this
    /// instance's directory (a newer unit than the one read last), then serves the stored
    /// certificate when it is newer than the served one ([`AcmeManager::adopt_stored`]).
    /// Without object storage, only the latter.
    pub(super) async fn refresh(&self, job: &Job, u: f64) -> bool {
        if let Some(remote) = self.remote_of(job) {
            self.push(job).await;
            let name = &job.cert.name;
            let known = self
                .pulled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .cloned();
            match remote.pull_unit(name, known.as_deref()).await {
                Ok(None) => {}
                Ok(Some(unit)) => match crate::pem::from_pem(&unit.chain, &unit.key) {
                    Ok(_) => {
                        if let Err(e) = storage::save(&job.acme.storage, name, &unit.chain, &unit.key) {
                            tracing::warn!(certificate = %name, error = %crate::error_chain(&e), "cannot copy the certificate from the object storage into the local directory");
                        } else {
                            self.pulled
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(name.clone(), unit.version);
                        }
                    }
                    Err(e) => {
                        tracing::error!(certificate = %name, version = %unit.version, error = %crate::error_chain(&e), "the object storage holds a pair that does not load; not served");
                        self.pulled
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(name.clone(), unit.version);
                    }
                },
                Err(e) => {
                    self.observer.lease_error(name);
                    tracing::debug!(certificate = %name, error = %crate::error_chain(&e), "cannot read the object storage");
                }
            }
        }
        self.adopt_stored(job, u)
    }
}
