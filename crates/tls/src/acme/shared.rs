//! The object storage side of a certificate's loop (`[acme] storage = "s3://..."`, see
//! [`crate::remote`]): a certificate issued here is written there as one unit, by the lease
//! holder only; the certificates other instances wrote there are copied into this
//! instance's directory (never one older than the copy it has), from which
//! [`AcmeManager::adopt_stored`] serves them. The holder also writes its local certificate
//! when it is newer than the stored one (issued here while the bucket was unreachable, and
//! the process restarted since). A failure is logged when it starts and when it ends,
//! counted in the storage errors, and tried again at the next poll; the certificate being
//! served never changes because of it.

use super::{AcmeManager, Job};
use crate::remote::{Pulled, Remote};
use crate::storage;
use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};
use std::time::SystemTime;

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

    fn set_pulled(&self, name: &str, version: String) {
        self.pulled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), version);
    }

    /// Logs a failure of the object storage once when it starts, and once when it ends.
    fn note_remote(&self, name: &str, failure: Option<String>) {
        let mut failing = self.remote_failing.lock().unwrap_or_else(|p| p.into_inner());
        match failure {
            Some(why) => {
                self.observer.lease_error(name);
                if failing.insert(name.to_owned()) {
                    tracing::error!(certificate = %name, error = %why, "cannot read or write the certificate in the object storage: serving the one this instance has, retrying");
                }
            }
            None => {
                if failing.remove(name) {
                    tracing::info!(certificate = %name, "the certificate in the object storage can be read and written again");
                }
            }
        }
    }

    /// Writes the certificate issued here to the object storage, if not done yet and this
    /// instance holds the lease (`holds`): a former holder never overwrites the unit of the
    /// current one.
    pub(super) async fn push(&self, job: &Job, holds: bool) {
        let name = &job.cert.name;
        let Some(remote) = self.remote_of(job) else {
            self.lock_unpushed().remove(name);
            return;
        };
        if !holds {
            return;
        }
        let Some((chain, key)) = self.lock_unpushed().get(name).cloned() else {
            return;
        };
        match remote.push_unit(name, chain.as_bytes(), key.as_bytes()).await {
            Ok(version) => {
                tracing::info!(certificate = %name, storage = %remote.url(), version = %version, "certificate written to the object storage for the other instances");
                self.lock_unpushed().remove(name);
                self.set_pulled(name, version);
                self.note_remote(name, None);
            }
            Err(e) => self.note_remote(name, Some(crate::error_chain(&e))),
        }
    }

    /// The local copy of `name` as PEM texts, with its expiry, when it loads.
    fn local_unit(job: &Job) -> Option<(String, String, SystemTime)> {
        let dir = storage::cert_dir(&job.acme.storage, &job.cert.name);
        let chain = std::fs::read_to_string(dir.join("fullchain.pem")).ok()?;
        let key = std::fs::read_to_string(dir.join("privkey.pem")).ok()?;
        let loaded = crate::pem::from_pem(chain.as_bytes(), key.as_bytes()).ok()?;
        (!loaded.self_signed).then_some((chain, key, loaded.not_after))
    }

    /// Copies a newer certificate another instance wrote to the object storage into this
    /// instance's directory, then serves the stored certificate when it is newer than the
    /// served one ([`AcmeManager::adopt_stored`]). The holder (`holds`) writes its local
    /// copy when that one is the newer. Without object storage, only the adoption.
    pub(super) async fn refresh(&self, job: &Job, u: f64, holds: bool) -> bool {
        if let Some(remote) = self.remote_of(job) {
            self.push(job, holds).await;
            let name = &job.cert.name;
            let known = self
                .pulled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .cloned();
            // The local copy is read (and parsed) only when the storage has news.
            match remote.pull_unit(name, known.as_deref()).await {
                Ok(Pulled::Absent) if holds => {
                    // Nothing stored (yet, or any more: a bucket emptied or recreated): the
                    // holder's own certificate is the unit.
                    if let Some((chain, key, _)) = Self::local_unit(job) {
                        self.lock_unpushed().insert(name.clone(), (chain, key));
                        self.push(job, holds).await;
                    }
                    self.note_remote(name, None);
                }
                Ok(Pulled::Absent | Pulled::Same) => self.note_remote(name, None),
                Ok(Pulled::New(unit)) => {
                    self.note_remote(name, None);
                    match crate::pem::from_pem(&unit.chain, &unit.key) {
                        Ok(pulled) => {
                            let local = Self::local_unit(job);
                            let local_after = local.as_ref().map(|(_, _, na)| *na);
                            if local_after.is_some_and(|na| pulled.not_after <= na) {
                                if holds && local_after.is_some_and(|na| pulled.not_after < na) {
                                    tracing::info!(certificate = %name, "the object storage holds an older certificate than this instance: writing this one");
                                    if let Some((chain, key, _)) = local {
                                        self.lock_unpushed().insert(name.clone(), (chain, key));
                                    }
                                    self.push(job, holds).await;
                                } else {
                                    self.set_pulled(name, unit.version);
                                }
                            } else if let Err(e) =
                                storage::save(&job.acme.storage, name, &unit.chain, &unit.key)
                            {
                                tracing::warn!(certificate = %name, error = %crate::error_chain(&e), "cannot copy the certificate from the object storage into the local directory");
                            } else {
                                self.set_pulled(name, unit.version);
                            }
                        }
                        Err(e) => {
                            tracing::error!(certificate = %name, version = %unit.version, error = %crate::error_chain(&e), "the object storage holds a pair that does not load; not served");
                            self.set_pulled(name, unit.version);
                        }
                    }
                }
                Err(e) => self.note_remote(name, Some(crate::error_chain(&e))),
            }
        }
        self.adopt_stored(job, u)
    }
}
