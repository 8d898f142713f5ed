//! What a certificate's loop could not store, kept loud: a storage that cannot be written
//! (a read-only mount, a directory owned by another user, a file in its place) means the
//! certificate is served from memory only and every restart registers a new account and
//! orders again (Let's Encrypt allows 5 duplicate certificates a week). Each checkpoint of
//! the loop writes `status.json`, tries again what could not be stored (the account, the
//! certificate) once [`STORAGE_RETRY`] has passed, and reports the outcome everywhere an
//! admin looks: the store's last error (`gateway certs`, from the running process), the
//! status file when it can be written, the log (when the problem changes) and the observer
//! (metrics).

use super::{AcmeManager, Job, Report};
use crate::error_chain;
use crate::storage::{self, Status};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// How long after a failed write it is tried again, and how often a loop that waits for its
/// renewal checks that its storage is still writable.
pub(super) const STORAGE_RETRY: Duration = Duration::from_secs(60);

/// A certificate issued and served that could not be stored.
pub(super) struct Pending {
    pub(super) chain: String,
    pub(super) key: String,
    pub(super) not_after: SystemTime,
    pub(super) why: String,
    pub(super) retry_at: SystemTime,
}

/// Account credentials created here that could not be stored (by file).
pub(super) struct UnsavedAccount {
    pub(super) json: Vec<u8>,
    pub(super) contact: (PathBuf, Vec<u8>),
    pub(super) why: String,
    pub(super) retry_at: SystemTime,
    /// Not yet counted as a failed write by a checkpoint.
    pub(super) fresh: bool,
}

/// What the manager knows of one certificate beyond the store: the status `gateway certs`
/// shows, and the stored pairs refused at load.
#[derive(Debug, Clone, Default)]
pub(super) struct Live {
    pub(super) status: Status,
    pub(super) refused: Vec<String>,
    /// The keeper's view of the lease, while the loop runs.
    pub(super) lease: Option<tokio::sync::watch::Receiver<super::keeper::LeaseState>>,
}

/// One loop's storage state between checkpoints.
#[derive(Default)]
pub(super) struct Health {
    pub(super) pending: Option<Pending>,
    /// Why the certificate's lease could not be taken at the last attempt.
    pub(super) lock: Option<String>,
    /// Failed writes not yet reported to the observer.
    pub(super) fresh: u64,
    /// The problem last reported (logged when it changes).
    reported: Option<String>,
    /// The status last written to `status.json` (not written again while unchanged).
    written: Option<Status>,
    /// The last order failure; `None` after a success.
    pub(super) order_error: Option<String>,
}

/// The order's error and the storage's, as one last error.
fn combine(order: Option<&str>, storage: Option<&str>) -> Option<String> {
    match (order, storage) {
        (Some(o), Some(s)) => Some(format!("{o}; {s}")),
        (o, s) => o.or(s).map(str::to_owned),
    }
}

fn problem_of(parts: &[String]) -> Option<String> {
    (!parts.is_empty()).then(|| format!("ACME storage is not writable: {}", parts.join("; ")))
}

impl AcmeManager {
    pub(super) fn lock_live(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The loop's view at its start: the stored status without its last error (what goes
    /// wrong now is reported anew).
    pub(super) fn seed_live(&self, name: &str, stored: Option<Status>) {
        let mut live = self.lock_live();
        let entry = live.entry(name.to_owned()).or_default();
        entry.status = Status {
            last_error: None,
            ..stored.unwrap_or_default()
        };
    }

    /// dns-01: the TXT records of `name`'s order were visible everywhere after `took`.
    pub(super) fn note_propagation(&self, name: &str, took: Option<std::time::Duration>) {
        if let Some(took) = took {
            // Whole seconds: `2026-12-07T12:00:00Z after 3.2s`.
            let now = SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(SystemTime::now(), |d| {
                    std::time::UNIX_EPOCH + Duration::from_secs(d.as_secs())
                });
            let text = format!("{} after {:.1}s", storage::rfc3339(now), took.as_secs_f64());
            self.lock_live()
                .entry(name.to_owned())
                .or_default()
                .status
                .last_propagation = Some(text);
        }
    }

    /// Credentials of a new account that could not be written to `path`.
    pub(super) fn account_unsaved(
        &self,
        path: PathBuf,
        json: Vec<u8>,
        contact: (PathBuf, Vec<u8>),
        why: String,
    ) {
        let mut map = self.unsaved_accounts.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(
            path,
            UnsavedAccount {
                json,
                contact,
                why,
                retry_at: SystemTime::now() + STORAGE_RETRY,
                fresh: true,
            },
        );
    }

    /// Writes the unsaved accounts of `job`'s storage that are due; one line per account
    /// still unsaved into `parts`; returns the failed writes not counted yet.
    fn retry_accounts(&self, job: &Job, now: SystemTime, parts: &mut Vec<String>) -> u64 {
        let mut fresh = 0;
        let mut map = self.unsaved_accounts.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|path, a| {
            if !path.starts_with(&job.acme.storage) {
                return true;
            }
            if a.fresh {
                a.fresh = false;
                fresh += 1;
            }
            if a.retry_at <= now {
                match storage::write_atomic(path, &a.json, 0o600) {
                    Ok(()) => {
                        let _ = storage::write_atomic(&a.contact.0, &a.contact.1, 0o600);
                        tracing::info!(file = %path.display(), "the ACME account is stored now");
                        return false;
                    }
                    Err(e) => {
                        fresh += 1;
                        a.why = error_chain(&e);
                        a.retry_at = now + STORAGE_RETRY;
                    }
                }
            }
            parts.push(format!(
                "the ACME account could not be stored in {}: {} (a restart registers a new one and orders again)",
                path.display(),
                a.why
            ));
            true
        });
        fresh
    }

    /// Stores the pending certificate when due (under the storage lock, unless another
    /// process stored a certificate at least as new meanwhile); returns the failed writes.
    fn retry_pending(&self, job: &Job, h: &mut Health, now: SystemTime) -> u64 {
        let (dir, name) = (&job.acme.storage, &job.cert.name);
        let Some(p) = h.pending.as_mut() else {
            return 0;
        };
        if p.retry_at > now {
            return 0;
        }
        p.retry_at = now + STORAGE_RETRY;
        // `None`: another process stored one at least as new meanwhile; nothing to store.
        let outcome = match storage::try_lock(dir, name) {
            Ok(None) => return 0,
            Ok(Some(_lock)) => {
                let newer =
                    storage::load(dir, name).is_some_and(|s| !s.self_signed && s.not_after >= p.not_after);
                (!newer).then(|| storage::save(dir, name, p.chain.as_bytes(), p.key.as_bytes()))
            }
            Err(e) => Some(Err(e)),
        };
        match outcome {
            None => {
                h.pending = None;
                0
            }
            Some(Ok(())) => {
                tracing::info!(certificate = %name, "the certificate served from memory is stored now");
                h.pending = None;
                0
            }
            Some(Err(e)) => {
                p.why = error_chain(&e);
                1
            }
        }
    }

    /// Records the loop's state (see the module comment): `next`, when given, is the next
    /// renewal or retry; `issued_by`, when given, the directory that issued the certificate.
    pub(super) fn checkpoint(
        &self,
        job: &Job,
        h: &mut Health,
        directory: &str,
        issued_by: Option<&str>,
        next: Option<SystemTime>,
    ) {
        let c = &job.cert;
        let dir = &job.acme.storage;
        let now = SystemTime::now();
        let mut fresh = std::mem::take(&mut h.fresh);
        let mut parts = Vec::new();
        fresh += self.retry_accounts(job, now, &mut parts);
        fresh += self.retry_pending(job, h, now);
        if let Some(p) = &h.pending {
            parts.push(format!(
                "the new certificate is served but could not be stored in {}: {} (a restart orders it again)",
                dir.display(),
                p.why
            ));
        }
        if let Some(why) = &h.lock {
            parts.push(format!("cannot take the certificate's lease: {why}"));
        }
        let mut st = self
            .lock_live()
            .get(&c.name)
            .map(|l| l.status.clone())
            .unwrap_or_default();
        if let Some(n) = next {
            st.next_renewal = Some(storage::rfc3339(n));
        }
        st.directory = Some(directory.to_owned());
        if let Some(by) = issued_by {
            st.issued_by = Some(by.to_owned());
        }
        st.names = c.names.clone();
        st.last_error = combine(h.order_error.as_deref(), problem_of(&parts).as_deref());
        if h.written.as_ref() != Some(&st) {
            match storage::write_status(dir, &c.name, &st) {
                Ok(()) => h.written = Some(st.clone()),
                Err(e) => {
                    fresh += 1;
                    h.written = None;
                    let file = storage::cert_dir(dir, &c.name).join("status.json");
                    parts.push(format!("cannot write {}: {}", file.display(), error_chain(&e)));
                }
            }
        } else if let Err(e) = storage::check_writable(dir, &c.name) {
            fresh += 1;
            h.written = None;
            parts.push(format!("{}: {}", dir.display(), error_chain(&e)));
        }
        let problem = problem_of(&parts);
        st.last_error = combine(h.order_error.as_deref(), problem.as_deref());
        self.store.set_error(&c.name, st.last_error.clone());
        self.lock_live().entry(c.name.clone()).or_default().status = st;
        self.observer.storage(&c.name, fresh, problem.as_deref());
        if problem != h.reported {
            match &problem {
                Some(p) => {
                    tracing::error!(certificate = %c.name, error = %p, "the ACME state cannot be stored: the certificate is served from memory only, and a restart registers a new account and orders again (CAs limit duplicate certificates: 5 a week at Let's Encrypt); make the storage writable for the gateway's user")
                }
                None => tracing::info!(certificate = %c.name, "the ACME storage is writable again"),
            }
            h.reported = problem;
        }
    }

    /// What `gateway certs` shows, from this process's memory (the certificate served, the
    /// loop's status and errors), so it is right even when `status.json` cannot be written.
    pub fn live_report(&self) -> Vec<Report> {
        let Some(cfg) = self.lock_state().cfg.clone() else {
            return Vec::new();
        };
        let snap = self.store.snapshot();
        let live = self.lock_live();
        cfg.certificates
            .iter()
            .map(|c| {
                let entry = snap.entries.iter().find(|e| e.name == c.name);
                let served = entry.and_then(|e| e.cert.as_ref()).filter(|l| !l.self_signed);
                let known = live.get(&c.name);
                let mut status = known
                    .map(|l| l.status.clone())
                    .or_else(|| storage::read_status(&cfg.storage, &c.name))
                    .unwrap_or_default();
                if status.last_error.is_none() {
                    status.last_error = entry.and_then(|e| e.last_error.as_ref()).map(|e| e.to_string());
                }
                Report {
                    name: c.name.clone(),
                    names: c.names.clone(),
                    directory: c.directory.clone().unwrap_or_else(|| cfg.directory.clone()),
                    issuer: served.map(|l| l.issuer.clone()),
                    not_after: served.map(|l| l.not_after),
                    status,
                    path: storage::cert_dir(&cfg.storage, &c.name),
                    refused: known.map(|l| l.refused.clone()).unwrap_or_default(),
                    challenge: super::challenge_text(&cfg, c),
                    lease: match known.and_then(|l| l.lease.as_ref()) {
                        Some(state) => super::keeper::describe(&state.borrow()),
                        None => super::lease_text(&cfg, &c.name),
                    },
                    profile: c.profile.clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{combine, problem_of};

    #[test]
    fn the_last_error_names_the_order_and_the_storage() {
        assert_eq!(combine(None, None), None);
        assert_eq!(combine(Some("timed out"), None).as_deref(), Some("timed out"));
        let storage = problem_of(&["cannot write /s/main/status.json: Not a directory (os error 20)".into()]);
        assert_eq!(
            storage.as_deref(),
            Some("ACME storage is not writable: cannot write /s/main/status.json: Not a directory (os error 20)")
        );
        assert_eq!(
            combine(Some("timed out"), storage.as_deref()).as_deref(),
            Some("timed out; ACME storage is not writable: cannot write /s/main/status.json: Not a directory (os error 20)")
        );
        assert_eq!(problem_of(&[]), None);
    }
}
