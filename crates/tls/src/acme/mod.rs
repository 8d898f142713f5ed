//! Automatic certificates over ACME (RFC 8555) with HTTP-01, through `instant-acme`.
//!
//! One loop per configured certificate, started, restarted and stopped as `proxy.toml`
//! changes ([`AcmeManager::reconfigure`]): load what is stored, serve a self-signed
//! placeholder until a real certificate exists, issue or renew when a third of the lifetime
//! is left or inside the CA's renewal window (ARI, RFC 9773, fetched again every 6 h or at
//! the CA's `Retry-After`), back off exponentially on failure and move to the next directory
//! in the fallback list. Every request to the CA has a connect timeout and a deadline, and
//! every order a deadline, so a CA that stops answering is a failure like any other. One
//! instance orders a certificate at a time among every gateway sharing the storage: the
//! holder of its lease ([`crate::lease`], kept by `keeper`); the others serve what it stores
//! (looked for every `poll_interval`). Each issuance is stored as one unit (see
//! [`crate::storage`]), and HTTP-01 answers are written to the storage too, so any
//! instance's HTTP listener answers the CA. The certificate being served
//! never changes on a failure; new ones are swapped into the [`CertStore`] without a restart.

mod client;
mod dns;
mod errors;
mod keeper;
mod names;
mod order;
mod persist;
pub mod schedule;
mod shared;

pub use client::{RequestTimeout, Timeouts};
pub use names::{held_back, is_public_name, not_public};

use crate::pem::{self, Loaded};
use crate::storage::{self, Status};
use crate::store::CertStore;
use gateway_config::{Acme, AcmeCert};
use instant_acme::{Account, CertificateIdentifier};
use persist::{Health, Live, UnsavedAccount};
use rand::Rng;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Where HTTP-01 key authorizations are published (the HTTP listener answers from it).
pub trait ChallengeTokens: Send + Sync {
    fn publish(&self, token: &str, key_authorization: &str);
    fn withdraw(&self, token: &str);
    /// The object storage other instances publish their answers in (`s3://` storage), to
    /// look in for a token not published here.
    fn shared(&self, remote: Option<Arc<crate::remote::Remote>>) {
        let _ = remote;
    }
}

/// ACME events the binary turns into metrics.
pub trait Observer: Send + Sync {
    /// An order finished: `issued` when the CA issued the certificate, else it failed.
    fn order(&self, certificate: &str, issued: bool);
    /// A certificate (issued here, or stored by another process sharing the storage) is
    /// now served; `served` is the store right after it was installed.
    fn installed(&self, certificate: &str, served: &crate::store::Snapshot);
    /// After each checkpoint of the certificate's loop: `failed_writes` to the storage since
    /// the last call, and what is not stored now (`None`: everything is).
    fn storage(&self, certificate: &str, failed_writes: u64, problem: Option<&str>);
    /// This instance took (`true`) or no longer holds (`false`) the certificate's lease.
    fn lease(&self, certificate: &str, held: bool) {
        let _ = (certificate, held);
    }
    /// The lease could not be read or written (counted with the storage's failed writes).
    fn lease_error(&self, certificate: &str) {
        let _ = certificate;
    }
}

/// What one certificate's loop works with: the `[acme]` section as it was when the loop
/// started, and the certificate's entry.
#[derive(Clone, Debug)]
struct Job {
    acme: Arc<Acme>,
    cert: AcmeCert,
}

impl Job {
    /// The certificate's directory (its own, else the section's), then the fallbacks.
    fn directories(&self) -> Vec<String> {
        let first = self
            .cert
            .directory
            .clone()
            .unwrap_or_else(|| self.acme.directory.clone());
        std::iter::once(first)
            .chain(self.acme.fallback_directories.iter().cloned())
            .collect()
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.acme.connect_timeout,
            request: self.acme.request_timeout,
        }
    }
}

/// The section without its certificate list: what every loop shares.
fn same_settings(a: &Acme, b: &Acme) -> bool {
    let strip = |x: &Acme| Acme {
        certificates: Vec::new(),
        ..x.clone()
    };
    strip(a) == strip(b)
}

fn jobs_of(cfg: Option<&Arc<Acme>>) -> Vec<Job> {
    cfg.map(|a| {
        a.certificates
            .iter()
            .map(|c| Job {
                acme: a.clone(),
                cert: c.clone(),
            })
            .collect()
    })
    .unwrap_or_default()
}

fn covers_all(cert: &Loaded, names: &[String]) -> bool {
    names.iter().all(|n| cert.covers(n))
}

/// A certificate known to the manager; `stop` is `None` when its names are held back (no
/// loop runs).
struct Slot {
    job: Job,
    stop: Option<watch::Sender<bool>>,
    /// The loop's task, awaited at shutdown (it releases the certificate's lease).
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Slot {
    fn stop_loop(self) -> Option<tokio::task::JoinHandle<()>> {
        if let Some(tx) = self.stop {
            let _ = tx.send(true);
        }
        self.task
    }
}

#[derive(Default)]
struct State {
    cfg: Option<Arc<Acme>>,
    slots: HashMap<String, Slot>,
    /// Where loops run; set while [`AcmeManager::run`] runs.
    runtime: Option<tokio::runtime::Handle>,
}

/// The ACME client for every certificate of the `[acme]` section.
pub struct AcmeManager {
    store: Arc<CertStore>,
    tokens: Arc<dyn ChallengeTokens>,
    observer: Arc<dyn Observer>,
    /// Accounts by directory and client settings, each behind its own lock: a CA that hangs
    /// while an account is created holds up only the loops that use that CA.
    accounts: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Account>>>>>,
    retry_after: Arc<client::RetryAfter>,
    state: Mutex<State>,
    /// Per certificate: the status its loop last recorded and the pairs refused at load
    /// ([`AcmeManager::live_report`]).
    live: Mutex<HashMap<String, Live>>,
    /// Accounts created here whose credentials could not be stored, by file.
    unsaved_accounts: Mutex<HashMap<PathBuf, UnsavedAccount>>,
    /// Object storage clients by `s3://` URL (or why one cannot be configured).
    remotes: Mutex<HashMap<String, Result<Arc<crate::remote::Remote>, String>>>,
    /// Per certificate: the version of the object-storage unit last read or written here.
    pulled: Mutex<HashMap<String, String>>,
    /// Per certificate: a certificate issued here not yet written to the object storage.
    unpushed: Mutex<HashMap<String, (String, String)>>,
    /// Certificates whose object storage fails now (logged once per episode).
    remote_failing: Mutex<std::collections::HashSet<String>>,
}

/// Sleeps until `at` (wall clock); `false` when the loop is told to stop first.
async fn sleep_until(at: SystemTime, stop: &mut watch::Receiver<bool>) -> bool {
    let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::select! {
        _ = stop.changed() => false,
        _ = tokio::time::sleep(wait) => !*stop.borrow(),
    }
}

enum Locked {
    Held,
    /// The lease cannot be read or written (unwritable storage): order without it.
    Unavailable(String),
    Stopped,
    /// Another instance stored a certificate meanwhile, now served here.
    Adopted,
}

impl AcmeManager {
    /// A manager for `cfg` (`None`, or no certificates: nothing runs until a reload adds some).
    pub fn new(
        cfg: Option<Acme>,
        store: Arc<CertStore>,
        tokens: Arc<dyn ChallengeTokens>,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Self {
            store,
            tokens,
            observer,
            accounts: Mutex::new(HashMap::new()),
            retry_after: Arc::default(),
            state: Mutex::new(State {
                cfg: cfg.map(Arc::new),
                ..State::default()
            }),
            live: Mutex::default(),
            unsaved_accounts: Mutex::default(),
            remotes: Mutex::default(),
            pulled: Mutex::default(),
            unpushed: Mutex::default(),
            remote_failing: Mutex::default(),
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before serving: install stored certificates, or a self-signed placeholder for those
    /// not issued yet, so the first handshake already has something to present.
    pub fn prepare(&self) {
        let jobs = jobs_of(self.lock_state().cfg.as_ref());
        for job in &jobs {
            self.prepare_one(job);
        }
    }

    fn prepare_one(&self, job: &Job) {
        let c = &job.cert;
        let dir = &job.acme.storage;
        let stored = storage::load_unit(dir, &c.name);
        for why in &stored.refused {
            tracing::error!(certificate = %c.name, error = %why, "stored certificate refused");
        }
        self.lock_live().entry(c.name.clone()).or_default().refused = stored.refused.clone();
        let current = self.current(&c.name);
        let serving_real = current.as_ref().filter(|l| !l.self_signed);
        match (stored.loaded, stored.from) {
            (Some(loaded), Some(from)) if covers_all(&loaded, &c.names) => {
                if serving_real
                    .is_some_and(|cur| covers_all(cur, &c.names) && cur.not_after >= loaded.not_after)
                {
                    return;
                }
                if storage::is_current(dir, &c.name, &from) {
                    if let Err(e) = storage::link_current(dir, &c.name) {
                        tracing::warn!(certificate = %c.name, error = %crate::error_chain(&e), "cannot point fullchain.pem and privkey.pem at the current unit");
                    }
                } else if !stored.refused.is_empty() {
                    tracing::warn!(certificate = %c.name, from = %from.display(), "serving the previous good pair");
                }
                self.store.install(&c.name, &c.names, loaded);
            }
            (loaded, _) => {
                if serving_real.is_some() {
                    tracing::info!(certificate = %c.name, names = %c.names.join(","), "the served certificate lacks a configured name: it keeps serving until the new one is issued");
                    return;
                }
                if current.as_ref().is_some_and(|l| covers_all(l, &c.names)) {
                    return;
                }
                if loaded.is_some() {
                    tracing::info!(certificate = %c.name, "stored certificate does not cover every configured name; ordering a new one");
                }
                match pem::self_signed(&c.names) {
                    Ok(p) => {
                        tracing::warn!(certificate = %c.name, names = %c.names.join(","), "no certificate yet: serving a self-signed placeholder until the CA issues one");
                        self.store.install(&c.name, &c.names, p);
                    }
                    Err(e) => {
                        tracing::error!(certificate = %c.name, error = %crate::error_chain(&e), "cannot generate a placeholder")
                    }
                }
            }
        }
    }

    /// Runs every certificate's loop until `shutdown` turns true; loops added by
    /// [`reconfigure`](Self::reconfigure) run here too.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        {
            let mut st = self.lock_state();
            st.runtime = Some(tokio::runtime::Handle::current());
            for job in jobs_of(st.cfg.as_ref()) {
                if !st.slots.contains_key(&job.cert.name) {
                    self.start(&mut st, job);
                }
            }
        }
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        let tasks: Vec<_> = {
            let mut st = self.lock_state();
            st.runtime = None;
            st.slots
                .drain()
                .filter_map(|(_, slot)| slot.stop_loop())
                .collect()
        };
        // Each loop releases its lease as it stops; a storage that does not answer costs
        // at most this long (the lease then lapses on its own).
        let _ = tokio::time::timeout(Duration::from_secs(5), futures_util::future::join_all(tasks)).await;
    }

    /// Applies a reloaded `[acme]` section: a certificate added starts its loop, a removed
    /// one stops its loop (its files stay), one whose names, directory or section settings
    /// (directory, email, timeouts, proxy...) changed restarts with them (changed names
    /// order anew at once); the others go on undisturbed.
    pub fn reconfigure(self: &Arc<Self>, acme: Option<&Acme>) {
        let new = acme.cloned().map(Arc::new);
        let mut st = self.lock_state();
        if st.cfg.as_deref() == new.as_deref() {
            return;
        }
        st.cfg = new.clone();
        let wanted = jobs_of(new.as_ref());
        let removed: Vec<String> = st
            .slots
            .keys()
            .filter(|n| !wanted.iter().any(|j| &j.cert.name == *n))
            .cloned()
            .collect();
        for name in removed {
            if let Some(slot) = st.slots.remove(&name) {
                let files = storage::cert_dir(&slot.job.acme.storage, &name);
                tracing::info!(certificate = %name, files = %files.display(), "certificate removed from [acme]: its renewal loop stops; its files stay");
                let _ = slot.stop_loop();
            }
        }
        for job in wanted {
            let unchanged = st
                .slots
                .get(&job.cert.name)
                .is_some_and(|s| s.job.cert == job.cert && same_settings(&s.job.acme, &job.acme));
            if unchanged {
                continue;
            }
            match st.slots.remove(&job.cert.name) {
                Some(old) => {
                    tracing::info!(certificate = %job.cert.name, names = %job.cert.names.join(","), "certificate settings changed in [acme]: its loop restarts with them");
                    let _ = old.stop_loop();
                }
                None => {
                    tracing::info!(certificate = %job.cert.name, names = %job.cert.names.join(","), "certificate added to [acme]: starting its loop")
                }
            }
            self.prepare_one(&job);
            self.start(&mut st, job);
        }
    }

    /// Starts the loop of `job` (when the manager runs), unless its names are held back.
    fn start(self: &Arc<Self>, st: &mut State, job: Job) {
        let name = job.cert.name.clone();
        let private_ca = job.acme.ca_root.is_some();
        if let Some((n, why)) = names::held_back(&job.cert.names, private_ca) {
            tracing::warn!(certificate = %name, name = %n, reason = why, "a name no public CA validates: not ordered, the self-signed certificate keeps serving (use a public name or address, or set ca_root for a private CA)");
            self.lock_live().entry(name.clone()).or_default().status.last_error = Some(format!(
                "not ordered: `{n}` is {why}, which no public CA validates (use a public name or address, or set ca_root for a private CA)"
            ));
            st.slots.insert(
                name,
                Slot {
                    job,
                    stop: None,
                    task: None,
                },
            );
            return;
        }
        let Some(runtime) = st.runtime.clone() else {
            return;
        };
        let (tx, rx) = watch::channel(false);
        let me = self.clone();
        let loop_job = job.clone();
        let task = runtime.spawn(async move { me.manage(loop_job, rx).await });
        st.slots.insert(
            name,
            Slot {
                job,
                stop: Some(tx),
                task: Some(task),
            },
        );
    }

    fn current(&self, name: &str) -> Option<Loaded> {
        self.store
            .snapshot()
            .entries
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.cert.clone())
    }

    /// When to renew the served certificate; `None` when there is none worth keeping (none,
    /// the placeholder, or one that lacks a configured name): order now.
    async fn plan(&self, job: &Job, ari_directory: &str, u: f64) -> Option<schedule::Wake> {
        let cert = self.current(&job.cert.name)?;
        if cert.self_signed || !covers_all(&cert, &job.cert.names) {
            return None;
        }
        let own = schedule::renew_at(cert.not_before, cert.not_after, u);
        let (window, retry_after) = self.ari_window(job, ari_directory, &cert, u).await;
        Some(schedule::plan(
            SystemTime::now(),
            own,
            window,
            schedule::ari_recheck(retry_after),
        ))
    }

    /// A time in the CA's suggested renewal window for `cert` (RFC 9773 section 4.2) and
    /// the CA's `Retry-After` for asking again; nothing when the CA offers no ARI, does not
    /// know the certificate or does not answer (within `order_timeout`).
    async fn ari_window(
        &self,
        job: &Job,
        directory: &str,
        cert: &Loaded,
        u: f64,
    ) -> (Option<SystemTime>, Option<Duration>) {
        let Some(id) = cert
            .key
            .cert
            .first()
            .and_then(|der| CertificateIdentifier::try_from(der).ok())
        else {
            return (None, None);
        };
        let lookup = async {
            let account = self.account(job, directory).await.ok()?;
            match account.renewal_info(&id).await {
                Ok(found) => Some(found),
                Err(e) => {
                    tracing::debug!(certificate = %job.cert.name, error = %errors::describe(&e, None), "no renewal window from the CA");
                    None
                }
            }
        };
        match tokio::time::timeout(job.acme.order_timeout, lookup).await {
            Ok(Some((info, retry))) => {
                let start: SystemTime = info.suggested_window.start.into();
                let end: SystemTime = info.suggested_window.end.into();
                (schedule::in_window(start, end, u), Some(retry))
            }
            _ => (None, None),
        }
    }

    /// One certificate's loop, until `stop`.
    async fn manage(self: Arc<Self>, job: Job, mut stop: watch::Receiver<bool>) {
        let c = &job.cert;
        let cfg = job.acme.clone();
        let dirs = job.directories();
        let mut dir_index = 0usize;
        let mut failures: u32 = 0;
        // Where in the jitter and in the CA's window this certificate renews; drawn again
        // after each issuance.
        let mut u: f64 = rand::rng().random();
        let stored_status = storage::read_status(&cfg.storage, &c.name);
        let mut issued_by = stored_status.as_ref().and_then(|s| s.issued_by.clone());
        self.seed_live(&c.name, stored_status);
        let mut health = Health::default();
        let backend = match &cfg.object_storage {
            None => keeper::Backend::Dir(cfg.storage.clone()),
            Some(url) => match self.remote(url) {
                Ok(r) => {
                    self.tokens.shared(Some(r.clone()));
                    keeper::Backend::Remote(r)
                }
                Err(why) => keeper::Backend::Broken(why),
            },
        };
        let keeper = keeper::Keeper::start(
            backend,
            c.name.clone(),
            cfg.lease_ttl,
            cfg.poll_interval,
            self.observer.clone(),
        );
        self.lock_live().entry(c.name.clone()).or_default().lease = Some(keeper.state.clone());
        'run: loop {
            let directory = dirs[dir_index % dirs.len()].clone();
            let reason = if failures == 0 {
                let ari_directory = issued_by.clone().unwrap_or_else(|| directory.clone());
                match self.plan(&job, &ari_directory, u).await {
                    None => {
                        self.checkpoint(&job, &mut health, &directory, None, Some(SystemTime::now()));
                        "no valid certificate yet"
                    }
                    Some(wake) => {
                        self.checkpoint(&job, &mut health, &directory, None, Some(wake.renewal));
                        // Meanwhile, a checkpoint every STORAGE_RETRY: what could not be
                        // stored is tried again, and a storage that stops being writable is
                        // reported before the renewal needs it.
                        // And every `poll_interval`, a look at the storage: a certificate
                        // another instance stored is served here within that time.
                        let mut next_checkpoint = SystemTime::now() + persist::STORAGE_RETRY;
                        loop {
                            let poll = SystemTime::now() + keeper::jittered(cfg.poll_interval);
                            let at = wake.at.min(next_checkpoint).min(poll);
                            if !sleep_until(at, &mut stop).await {
                                break 'run;
                            }
                            if at >= wake.at {
                                break;
                            }
                            if self.refresh(&job, u, keeper.holds()).await {
                                u = rand::rng().random();
                                issued_by =
                                    storage::read_status(&cfg.storage, &c.name).and_then(|s| s.issued_by);
                                continue 'run;
                            }
                            if at >= next_checkpoint {
                                self.checkpoint(&job, &mut health, &directory, None, None);
                                next_checkpoint = SystemTime::now() + persist::STORAGE_RETRY;
                            }
                        }
                        if !wake.renew {
                            // Fetch the renewal window again (RFC 9773 section 4.3).
                            continue 'run;
                        }
                        "renewal"
                    }
                }
            } else {
                let base = schedule::backoff(cfg.retry_min, cfg.retry_max, failures);
                let wait = base.mul_f64(rand::rng().random_range(0.8..1.2));
                tracing::warn!(certificate = %c.name, failures, backoff = %seconds(base), retry_in = %seconds(wait), "ACME attempt failed; retrying with backoff");
                let at = SystemTime::now() + wait;
                self.checkpoint(&job, &mut health, &directory, None, Some(at));
                if !sleep_until(at, &mut stop).await {
                    break 'run;
                }
                "retry"
            };
            // One orderer per certificate across the instances sharing the storage: the
            // holder of its lease.
            let result = {
                let adopted = match self.wait_lease(&job, &keeper, u, &mut stop).await {
                    Locked::Held => {
                        health.lock = None;
                        false
                    }
                    Locked::Unavailable(why) => {
                        health.lock = Some(why);
                        health.fresh += 1;
                        false
                    }
                    Locked::Stopped => break 'run,
                    Locked::Adopted => true,
                };
                // Another gateway sharing the storage may have just stored one.
                if adopted || self.refresh(&job, u, keeper.holds()).await {
                    // What this process could not store is older than what it adopted.
                    health.pending = None;
                    health.order_error = None;
                    failures = 0;
                    u = rand::rng().random();
                    issued_by = storage::read_status(&cfg.storage, &c.name).and_then(|s| s.issued_by);
                    continue 'run;
                }
                tracing::info!(certificate = %c.name, names = %c.names.join(","), reason, directory = %directory, "ordering certificate");
                let replace = order::may_replace(issued_by.as_deref(), &directory);
                let attempt = tokio::time::timeout(cfg.order_timeout, self.obtain(&job, &directory, replace));
                // Given up when the lease is lost meanwhile (unless ordering without it).
                let leased = health.lock.is_none();
                tokio::select! {
                    _ = stop.changed() => break 'run,
                    _ = lease_lost(&keeper), if leased => Err(errors::IssueError::LeaseLost),
                    r = attempt => r.unwrap_or_else(|_| Err(errors::IssueError::OrderTimeout(cfg.order_timeout))),
                }
            };
            match result {
                Ok(issued) => {
                    failures = 0;
                    u = rand::rng().random();
                    issued_by = Some(directory.clone());
                    let loaded = issued.loaded;
                    tracing::info!(certificate = %c.name, issuer = %loaded.issuer, not_after = %humantime::format_rfc3339_seconds(loaded.not_after), directory = %directory, "certificate issued and now served");
                    self.store.install(&c.name, &c.names, loaded);
                    self.lock_unpushed()
                        .insert(c.name.clone(), (issued.chain_pem, issued.key_pem));
                    self.push(&job, keeper.holds()).await;
                    self.observer.order(&c.name, true);
                    self.observer.installed(&c.name, &self.store.snapshot());
                    health.order_error = None;
                    if issued.unsaved.is_some() {
                        health.fresh += 1;
                    }
                    health.pending = issued.unsaved;
                    self.checkpoint(&job, &mut health, &directory, Some(directory.as_str()), None);
                }
                Err(e) => {
                    // Worded once, here: the log, status.json and `gateway certs` show it.
                    let msg = self.describe(&e);
                    failures += 1;
                    self.observer.order(&c.name, false);
                    tracing::error!(certificate = %c.name, attempt = failures, error = %msg, "could not obtain certificate; still serving the current one");
                    health.order_error = Some(msg);
                    self.checkpoint(&job, &mut health, &directory, None, None);
                    if failures.is_multiple_of(3) && cfg.object_storage.is_some() {
                        // Another instance may succeed where this one keeps failing.
                        let aside = schedule::backoff(cfg.retry_min, cfg.retry_max, failures);
                        tracing::warn!(certificate = %c.name, period = %seconds(aside), "orders keep failing here: leaving the certificate's lease to the other instances for a while");
                        keeper.step_aside(aside);
                    }
                    if failures.is_multiple_of(3) && dirs.len() > 1 {
                        dir_index = (dir_index + 1) % dirs.len();
                        tracing::warn!(certificate = %c.name, directory = %dirs[dir_index], "switching to the next ACME directory");
                    }
                }
            }
        }
        keeper.release().await;
        tracing::info!(certificate = %c.name, "renewal loop stopped");
    }

    /// Waits until this instance holds the certificate's lease, serving meanwhile what the
    /// holder stores (checked every `poll_interval`).
    async fn wait_lease(
        &self,
        job: &Job,
        keeper: &keeper::Keeper,
        u: f64,
        stop: &mut watch::Receiver<bool>,
    ) -> Locked {
        let name = &job.cert.name;
        let mut state = keeper.state.clone();
        let mut told = false;
        loop {
            let now = state.borrow_and_update().clone();
            if now.holds() {
                return Locked::Held;
            }
            if let Some(why) = now.error.clone() {
                // A directory of this machine: order anyway, served from memory (one
                // instance). Object storage: every instance would order; wait for it.
                if job.acme.object_storage.is_none() {
                    tracing::warn!(certificate = %name, error = %why, "cannot take the certificate's lease; ordering without it");
                    return Locked::Unavailable(why);
                }
            }
            if let Some(holder) = now.holder.as_ref().filter(|_| !now.holds()) {
                if !told {
                    tracing::info!(certificate = %name, holder = %holder.owner, "another instance holds the certificate's lease and orders it; serving what it stores");
                    told = true;
                }
            }
            if self.refresh(job, u, false).await {
                return Locked::Adopted;
            }
            tokio::select! {
                _ = stop.changed() => return Locked::Stopped,
                _ = state.changed() => {}
                _ = tokio::time::sleep(keeper::jittered(job.acme.poll_interval)) => {}
            }
        }
    }

    /// Serves the stored certificate instead of ordering when another process sharing the
    /// storage just stored one: it covers the names, is newer than the served one and is
    /// not due itself.
    fn adopt_stored(&self, job: &Job, u: f64) -> bool {
        let c = &job.cert;
        let Some(stored) = storage::load(&job.acme.storage, &c.name) else {
            return false;
        };
        if stored.self_signed || !covers_all(&stored, &c.names) {
            return false;
        }
        let newer = self
            .current(&c.name)
            .is_none_or(|cur| cur.self_signed || stored.not_after > cur.not_after);
        if !newer || schedule::renew_at(stored.not_before, stored.not_after, u) <= SystemTime::now() {
            return false;
        }
        tracing::info!(certificate = %c.name, not_after = %humantime::format_rfc3339_seconds(stored.not_after), "adopting the certificate another process stored (shared storage); not ordering");
        self.store.install(&c.name, &c.names, stored);
        self.observer.installed(&c.name, &self.store.snapshot());
        true
    }
}

/// What `gateway certs` shows for one certificate.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub path: PathBuf,
    pub names: Vec<String>,
    /// The directory the certificate is ordered from (before any fallback).
    pub directory: String,
    pub issuer: Option<String>,
    pub not_after: Option<SystemTime>,
    pub status: Status,
    /// Stored pairs refused at load (a key that does not fit its chain), with the reason.
    pub refused: Vec<String>,
    /// How the names are validated: `http-01`, `tls-alpn-01`, or `dns-01 via NAME (KIND)`.
    pub challenge: String,
    /// Who holds the certificate's lease (the instance that orders it), as
    /// [`crate::lease::describe`] words it.
    pub lease: String,
    /// The ACME profile ordered (`None`: the CA's default).
    pub profile: Option<String>,
}

/// The challenge line of `gateway certs`: `dns-01 via main-dns (rfc2136)`.
pub(crate) fn challenge_text(cfg: &Acme, c: &AcmeCert) -> String {
    match &c.dns_provider {
        Some(p) => {
            let kind = cfg
                .dns_providers
                .iter()
                .find(|d| &d.name == p)
                .map_or("not configured", |d| d.kind.as_str());
            format!("{} via {p} ({kind})", c.challenge.as_str())
        }
        None => c.challenge.as_str().to_owned(),
    }
}

/// Reads the stored state of every ACME certificate (no network), when no gateway runs to
/// ask ([`AcmeManager::live_report`]). A storage this user cannot write is named in the last
/// error: a gateway running as this user would serve from memory only.
pub fn report(cfg: &Acme) -> Vec<Report> {
    cfg.certificates
        .iter()
        .map(|c| {
            let stored = storage::load_unit(&cfg.storage, &c.name);
            let mut status = storage::read_status(&cfg.storage, &c.name).unwrap_or_default();
            if let Err(e) = storage::check_writable(&cfg.storage, &c.name) {
                let why = format!(
                    "ACME storage is not writable by uid {}: {}: {}",
                    nix::unistd::getuid(),
                    cfg.storage.display(),
                    crate::error_chain(&e)
                );
                status.last_error = Some(match status.last_error.take() {
                    Some(old) => format!("{why}; {old}"),
                    None => why,
                });
            }
            Report {
                name: c.name.clone(),
                names: c.names.clone(),
                directory: c.directory.clone().unwrap_or_else(|| cfg.directory.clone()),
                issuer: stored.loaded.as_ref().map(|l| l.issuer.clone()),
                not_after: stored.loaded.as_ref().map(|l| l.not_after),
                status,
                path: storage::cert_dir(&cfg.storage, &c.name),
                refused: stored.refused,
                challenge: challenge_text(cfg, c),
                lease: lease_text(cfg, &c.name),
                profile: c.profile.clone(),
            }
        })
        .collect()
}

/// Resolves once the keeper no longer confirms the lease (lost, or not renewed in time).
async fn lease_lost(keeper: &keeper::Keeper) {
    let mut state = keeper.state.clone();
    loop {
        if !state.borrow_and_update().holds() {
            return;
        }
        tokio::select! {
            _ = state.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// The lease of `name` as `gateway certs` shows it, read from the storage.
pub(crate) fn lease_text(cfg: &Acme, name: &str) -> String {
    if let Some(url) = &cfg.object_storage {
        return format!("in {url}: see `gateway certs` of a running instance");
    }
    match crate::lease::current(&cfg.storage, name) {
        Ok(found) => crate::lease::describe(found.as_ref().map(|(_, r)| r), crate::lease::now_ms()),
        Err(e) => format!("unknown: {}", crate::error_chain(&e)),
    }
}

/// A wait for a log field: seconds with millisecond precision (`1.600s`), one token.
fn seconds(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}
