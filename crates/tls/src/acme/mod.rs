//! Automatic certificates over ACME (RFC 8555) with HTTP-01, through `instant-acme`.
//!
//! One loop per configured certificate: load what is stored, serve a self-signed
//! placeholder until a real certificate exists, issue or renew when a third of the lifetime
//! is left (or inside the CA's ARI window), back off exponentially on failure and move to the
//! next directory in the fallback list. The certificate being served never changes on a
//! failure; new ones are swapped into the [`CertStore`] without a restart.

mod client;

use crate::pem::{self, Loaded};
use crate::storage::{self, Status};
use crate::store::CertStore;
use crate::TlsError;
use gateway_config::{Acme, AcmeCert};
use instant_acme::{
    Account, AccountBuilder, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    ExternalAccountKey, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rand::Rng;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Where HTTP-01 key authorizations are published (the HTTP listener answers from it).
pub trait ChallengeTokens: Send + Sync {
    fn publish(&self, token: &str, key_authorization: &str);
    fn withdraw(&self, token: &str);
}

/// Counters the binary turns into metrics.
pub trait Observer: Send + Sync {
    fn attempt(&self, certificate: &str);
    fn failure(&self, certificate: &str);
    fn issued(&self, certificate: &str, not_after: SystemTime);
}

/// The ACME client for every certificate of the `[acme]` section.
pub struct AcmeManager {
    cfg: Acme,
    store: Arc<CertStore>,
    tokens: Arc<dyn ChallengeTokens>,
    observer: Arc<dyn Observer>,
    accounts: tokio::sync::Mutex<HashMap<String, Account>>,
    /// Index into the directory list, shared by all certificates.
    directory: Mutex<usize>,
    retry_after: Arc<client::RetryAfter>,
}

/// A failure, worded for the log: what failed and what the CA said.
fn describe(e: &instant_acme::Error, retry_after: Option<String>) -> String {
    use instant_acme::Error as E;
    match e {
        E::Api(p) => {
            let kind = p
                .r#type
                .as_deref()
                .unwrap_or("error")
                .trim_start_matches("urn:ietf:params:acme:error:");
            // These problem types mean the CA tried to validate and could not reach or
            // verify us; say so, since "refused" would point at the CA.
            let validation = [
                "connection",
                "dns",
                "unauthorized",
                "incorrectResponse",
                "tls",
                "caa",
            ]
            .contains(&kind);
            let what = if validation {
                "validation failed"
            } else {
                "the CA refused"
            };
            let mut s = format!("{what} ({kind}): {}", p.detail.as_deref().unwrap_or("no detail"));
            for sub in &p.subproblems {
                s.push_str(&format!("; {}", sub.detail.as_deref().unwrap_or("")));
            }
            if kind == "rateLimited" {
                match retry_after {
                    Some(after) => s.push_str(&format!(" (rate limited; the CA says retry after {after})")),
                    None => s.push_str(" (rate limited: retrying with backoff)"),
                }
            }
            s
        }
        E::Hyper(err) => format!("cannot reach the CA (connection): {err}"),
        E::Other(err) => format!("cannot reach the CA (DNS, connection or TLS): {err}"),
        E::Timeout(_) => "the CA did not finish validation in time".into(),
        other => format!("ACME error: {other}"),
    }
}

/// Names no public CA will issue for (as Caddy decides): localhost, `.local`, `.internal`,
/// `.home.arpa`, IP addresses.
pub fn is_public_name(name: &str) -> bool {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    let internal = [
        "localhost",
        ".localhost",
        ".local",
        ".internal",
        ".home.arpa",
        ".lan",
    ];
    !(n.parse::<std::net::IpAddr>().is_ok()
        || !n.contains('.')
        || internal.iter().any(|s| {
            if s.starts_with('.') {
                n.ends_with(s)
            } else {
                n == *s
            }
        }))
}

fn is_unknown_account(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p) if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist"))
}

fn is_bad_nonce(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p) if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce"))
}

/// Attempts per ACME request when the CA rejects only its nonce.
const NONCE_TRIES: usize = 60;

/// Evaluates `$attempt` (one awaited ACME request) again while the CA rejects only its
/// nonce (RFC 8555 6.5: badNonce is always retryable), at most `NONCE_TRIES` times in all,
/// so one unlucky request does not restart the whole order.
macro_rules! retry_bad_nonce {
    ($attempt:expr) => {{
        let mut result = $attempt;
        for _ in 1..NONCE_TRIES {
            if !matches!(&result, Err(e) if is_bad_nonce(e)) {
                break;
            }
            result = $attempt;
        }
        result
    }};
}

impl AcmeManager {
    pub fn new(
        cfg: Acme,
        store: Arc<CertStore>,
        tokens: Arc<dyn ChallengeTokens>,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Self {
            cfg,
            store,
            tokens,
            observer,
            accounts: tokio::sync::Mutex::new(HashMap::new()),
            directory: Mutex::new(0),
            retry_after: Arc::default(),
        }
    }

    fn directories(&self) -> Vec<String> {
        std::iter::once(self.cfg.directory.clone())
            .chain(self.cfg.fallback_directories.iter().cloned())
            .collect()
    }

    fn current_directory(&self) -> String {
        let dirs = self.directories();
        let i = *self.directory.lock().unwrap_or_else(|p| p.into_inner());
        dirs[i % dirs.len()].clone()
    }

    fn next_directory(&self) -> Option<String> {
        let dirs = self.directories();
        if dirs.len() < 2 {
            return None;
        }
        let mut i = self.directory.lock().unwrap_or_else(|p| p.into_inner());
        *i = (*i + 1) % dirs.len();
        Some(dirs[*i].clone())
    }

    /// Before serving: install stored certificates, or a self-signed placeholder for those
    /// not issued yet, so the first handshake already has something to present.
    pub fn prepare(&self) {
        for c in &self.cfg.certificates {
            match storage::load(&self.cfg.storage, &c.name) {
                Some(loaded) if c.names.iter().all(|n| loaded.covers(n)) => {
                    self.store.install(&c.name, &c.names, loaded);
                }
                stored => {
                    if stored.is_some() {
                        tracing::info!(certificate = %c.name, "stored certificate does not cover every configured name; ordering a new one");
                    }
                    match pem::self_signed(&c.names) {
                        Ok(p) => {
                            tracing::warn!(certificate = %c.name, names = ?c.names, "no certificate yet: serving a self-signed placeholder until the CA issues one");
                            self.store.install(&c.name, &c.names, p);
                        }
                        Err(e) => {
                            tracing::error!(certificate = %c.name, error = %e, "cannot generate a placeholder")
                        }
                    }
                }
            }
        }
    }

    /// Runs every certificate's loop until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tasks = Vec::new();
        for c in self.cfg.certificates.clone() {
            if let Some(n) = c.names.iter().find(|n| !is_public_name(n)) {
                tracing::warn!(certificate = %c.name, name = %n, "not a public DNS name, so no CA can validate it: serving the self-signed certificate (set DOMAIN to a real name)");
                continue;
            }
            let me = self.clone();
            let sd = shutdown.clone();
            tasks.push(tokio::spawn(async move { me.manage(c, sd).await }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    fn current(&self, name: &str) -> Option<Loaded> {
        self.store
            .snapshot()
            .entries
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.cert.clone())
    }

    /// When the current certificate should be renewed; `None` means now.
    async fn renewal_time(&self, c: &AcmeCert) -> Option<SystemTime> {
        let cert = self.current(&c.name)?;
        if cert.self_signed || !c.names.iter().all(|n| cert.covers(n)) {
            return None;
        }
        let lifetime = cert.not_after.duration_since(cert.not_before).unwrap_or_default();
        let mut at = cert.not_after - lifetime / 3;
        // Spread renewals of many certificates over a window instead of one instant.
        let jitter = (lifetime / 50).min(Duration::from_secs(6 * 3600));
        if !jitter.is_zero() {
            at -= jitter.mul_f64(rand::rng().random::<f64>());
        }
        if let Some(window) = self.ari_window(&cert).await {
            at = at.min(window);
        }
        Some(at)
    }

    /// A time inside the CA's suggested renewal window (ARI), when the CA offers one.
    async fn ari_window(&self, cert: &Loaded) -> Option<SystemTime> {
        let der = cert.key.cert.first()?;
        let id = CertificateIdentifier::try_from(der).ok()?;
        let account = self.account(&self.current_directory()).await.ok()?;
        let (info, _) = account.renewal_info(&id).await.ok()?;
        let start: SystemTime = info.suggested_window.start.into();
        let end: SystemTime = info.suggested_window.end.into();
        let span = end.duration_since(start).unwrap_or_default();
        Some(start + span.mul_f64(rand::rng().random::<f64>()))
    }

    async fn manage(self: Arc<Self>, c: AcmeCert, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        loop {
            let (at, reason) = if failures == 0 {
                match self.renewal_time(&c).await {
                    None => (SystemTime::now(), "no valid certificate yet"),
                    Some(t) => (t, "renewal"),
                }
            } else {
                let base = self
                    .cfg
                    .retry_min
                    .mul_f64(2f64.powi(failures.saturating_sub(1).min(30) as i32));
                let wait = base
                    .min(self.cfg.retry_max)
                    .mul_f64(rand::rng().random_range(0.8..1.2));
                tracing::warn!(certificate = %c.name, failures, retry_in = ?wait, "ACME attempt failed; retrying with backoff");
                (SystemTime::now() + wait, "retry")
            };
            self.write_status(&c, Some(at), None);
            let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if *shutdown.borrow() {
                return;
            }
            tracing::info!(certificate = %c.name, names = ?c.names, reason, directory = %self.current_directory(), "ordering certificate");
            self.observer.attempt(&c.name);
            match self.obtain(&c).await {
                Ok((loaded, store_error)) => {
                    failures = 0;
                    tracing::info!(certificate = %c.name, issuer = %loaded.issuer, not_after = ?loaded.not_after, "certificate issued and now served");
                    self.observer.issued(&c.name, loaded.not_after);
                    self.store.install(&c.name, &c.names, loaded);
                    if let Some(e) = store_error {
                        self.store.set_error(&c.name, Some(e.clone()));
                        self.write_status(&c, None, Some(e));
                    }
                }
                Err(msg) => {
                    failures += 1;
                    self.observer.failure(&c.name);
                    tracing::error!(certificate = %c.name, attempt = failures, error = %msg, "could not obtain certificate; still serving the current one");
                    self.store.set_error(&c.name, Some(msg.clone()));
                    self.write_status(&c, None, Some(msg));
                    if failures.is_multiple_of(3) {
                        if let Some(d) = self.next_directory() {
                            tracing::warn!(certificate = %c.name, directory = %d, "switching to the next ACME directory");
                        }
                    }
                }
            }
        }
    }

    fn write_status(&self, c: &AcmeCert, next: Option<SystemTime>, error: Option<String>) {
        let mut st = storage::read_status(&self.cfg.storage, &c.name).unwrap_or_default();
        if let Some(n) = next {
            st.next_renewal = Some(storage::rfc3339(n));
        }
        if error.is_some() || next.is_none() {
            st.last_error = error;
        }
        st.directory = Some(self.current_directory());
        st.names = c.names.clone();
        let _ = storage::write_status(&self.cfg.storage, &c.name, &st);
    }

    /// One issuance, retried at once a few times when only the nonce was rejected.
    async fn obtain(&self, c: &AcmeCert) -> Result<(Loaded, Option<String>), String> {
        let mut last = String::new();
        for _ in 0..10 {
            match self.issue(c).await {
                Ok(l) => return Ok(l),
                Err(IssueError::Acme(e)) if is_bad_nonce(&e) || is_unknown_account(&e) => {
                    last = describe(&e, None)
                }
                Err(IssueError::Acme(e)) => return Err(describe(&e, self.retry_after.take())),
                Err(IssueError::Other(m)) => return Err(m),
            }
        }
        Err(last)
    }

    /// Orders, validates, downloads and stores one certificate. A storage failure does not
    /// fail the issuance (the certificate is served from memory); it is returned for reporting.
    async fn issue(&self, c: &AcmeCert) -> Result<(Loaded, Option<String>), IssueError> {
        let directory = self.current_directory();
        let account = self.account(&directory).await?;
        let ids: Vec<Identifier> = c.names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let replaces = self.current(&c.name).filter(|l| !l.self_signed).and_then(|l| {
            l.key
                .cert
                .first()
                .and_then(|d| CertificateIdentifier::try_from(d).ok())
                .map(|i| i.into_owned())
        });
        let mut new_order = NewOrder::new(&ids);
        if let Some(r) = replaces.clone() {
            new_order = new_order.replaces(r);
        }
        // Every request below is retried on its own on badNonce (see `retry_bad_nonce`).
        let mut order = None;
        for _ in 0..NONCE_TRIES {
            match account.new_order(&new_order).await {
                Ok(o) => {
                    order = Some(o);
                    break;
                }
                Err(e) if is_bad_nonce(&e) => continue,
                // Not every CA supports ARI's `replaces`; order without it.
                Err(instant_acme::Error::Unsupported(_)) if replaces.is_some() => {
                    new_order = NewOrder::new(&ids)
                }
                Err(e) if is_unknown_account(&e) => {
                    // The CA forgot the account (a test CA restarted, or it was deactivated):
                    // set the stored one aside and register again on the next attempt.
                    self.accounts.lock().await.remove(&directory);
                    let path = storage::account_path(&self.cfg.storage, &directory);
                    let _ = std::fs::rename(&path, path.with_extension("json.unknown-to-ca"));
                    tracing::warn!(directory = %directory, "the CA does not know the stored account; registering a new one");
                    return Err(IssueError::Acme(e));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let Some(mut order) = order else {
            return Err(IssueError::Other("the CA kept rejecting nonces".into()));
        };
        let mut published: Vec<String> = Vec::new();
        let mut readied: Vec<String> = Vec::new();
        let mut auth_error = None;
        'attempts: for _ in 0..NONCE_TRIES {
            // A fresh pass re-yields the authorizations already fetched without a request.
            let mut auths = order.authorizations();
            while let Some(a) = auths.next().await {
                let mut a = match a {
                    Ok(a) => a,
                    Err(e) if is_bad_nonce(&e) => continue 'attempts,
                    Err(e) => {
                        auth_error = Some(IssueError::Acme(e));
                        break 'attempts;
                    }
                };
                match a.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => {
                        auth_error = Some(IssueError::Other(format!("authorization is {other:?}")));
                        break 'attempts;
                    }
                }
                let Some(mut ch) = a.challenge(ChallengeType::Http01) else {
                    auth_error = Some(IssueError::Other("the CA offers no HTTP-01 challenge".into()));
                    break 'attempts;
                };
                let token = ch.token.clone();
                if readied.contains(&token) {
                    continue;
                }
                if !published.contains(&token) {
                    self.tokens.publish(&token, ch.key_authorization().as_str());
                    published.push(token.clone());
                }
                match ch.set_ready().await {
                    Ok(()) => readied.push(token),
                    Err(e) if is_bad_nonce(&e) => continue 'attempts,
                    Err(e) => {
                        auth_error = Some(IssueError::Acme(e));
                        break 'attempts;
                    }
                }
            }
            break;
        }
        let policy = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(Duration::from_secs(90));
        let result = async {
            if let Some(e) = auth_error {
                return Err(e);
            }
            let status = retry_bad_nonce!(order.poll_ready(&policy).await)?;
            if status != OrderStatus::Ready {
                return Err(IssueError::Other(
                    self.validation_errors(&mut order, status).await,
                ));
            }
            let key_pem = retry_bad_nonce!(order.finalize().await)?;
            let chain_pem = retry_bad_nonce!(order.poll_certificate(&policy).await)?;
            Ok((chain_pem, key_pem))
        }
        .await;
        for t in &published {
            self.tokens.withdraw(t);
        }
        let (chain_pem, key_pem) = result?;
        let loaded = pem::from_pem(chain_pem.as_bytes(), key_pem.as_bytes())
            .map_err(|e| IssueError::Other(e.to_string()))?;
        let store_error = match storage::save(
            &self.cfg.storage,
            &c.name,
            chain_pem.as_bytes(),
            key_pem.as_bytes(),
        ) {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(certificate = %c.name, error = %e, "cannot store the new certificate; the old files are left intact");
                Some(format!(
                    "the new certificate is served but could not be stored in {}: {e}",
                    self.cfg.storage.display()
                ))
            }
        };
        Ok((loaded, store_error))
    }

    /// The CA's words on why validation failed, per name.
    async fn validation_errors(&self, order: &mut instant_acme::Order, status: OrderStatus) -> String {
        let mut msgs = Vec::new();
        let mut auths = order.authorizations();
        while let Some(Ok(a)) = auths.next().await {
            for ch in &a.challenges {
                if let Some(p) = &ch.error {
                    msgs.push(format!(
                        "{:?}: {}",
                        a.identifier().identifier,
                        p.detail.as_deref().unwrap_or("validation failed")
                    ));
                }
            }
        }
        if msgs.is_empty() {
            format!("the order ended {status:?}")
        } else {
            format!("validation failed: {}", msgs.join("; "))
        }
    }

    fn builder(&self) -> Result<AccountBuilder, IssueError> {
        client::builder(
            self.cfg.ca_root.as_deref(),
            self.cfg.https_proxy.as_deref(),
            self.retry_after.clone(),
        )
        .map_err(IssueError::Other)
    }

    /// The account for `directory`: stored credentials when present, else a new account
    /// whose credentials are stored (mode 0600) for the next start.
    async fn account(&self, directory: &str) -> Result<Account, IssueError> {
        let mut cache = self.accounts.lock().await;
        if let Some(a) = cache.get(directory) {
            return Ok(a.clone());
        }
        let path = storage::account_path(&self.cfg.storage, directory);
        let stored: Option<AccountCredentials> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let account = match stored {
            Some(creds) => {
                tracing::info!(directory, file = %path.display(), "using the stored ACME account");
                self.builder()?.from_credentials(creds).await?
            }
            None => {
                let contact: Vec<String> = self.cfg.email.iter().map(|e| format!("mailto:{e}")).collect();
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let eab = match &self.cfg.eab {
                    Some((kid, hmac)) => Some(ExternalAccountKey::new(kid.clone(), &decode_b64url(hmac)?)),
                    None => None,
                };
                let new = NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, creds) = retry_bad_nonce!(
                    self.builder()?
                        .create(&new, directory.to_owned(), eab.as_ref())
                        .await
                )?;
                let json = serde_json::to_vec_pretty(&creds).map_err(|e| IssueError::Other(e.to_string()))?;
                match storage::write_atomic(&path, &json, 0o600) {
                    Ok(()) => tracing::info!(directory, file = %path.display(), "created ACME account"),
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "cannot store the ACME account")
                    }
                }
                account
            }
        };
        cache.insert(directory.to_owned(), account.clone());
        Ok(account)
    }
}

fn decode_b64url(s: &str) -> Result<Vec<u8>, IssueError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| IssueError::Other(format!("eab_hmac_key is not base64url: {e}")))
}

enum IssueError {
    Acme(instant_acme::Error),
    Other(String),
}

impl From<instant_acme::Error> for IssueError {
    fn from(e: instant_acme::Error) -> Self {
        IssueError::Acme(e)
    }
}

impl From<TlsError> for IssueError {
    fn from(e: TlsError) -> Self {
        IssueError::Other(e.to_string())
    }
}

/// What `gateway certs` shows for one certificate.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub names: Vec<String>,
    pub issuer: Option<String>,
    pub not_after: Option<SystemTime>,
    pub status: Status,
    pub path: PathBuf,
}

/// Reads the stored state of every ACME certificate (no network).
pub fn report(cfg: &Acme) -> Vec<Report> {
    cfg.certificates
        .iter()
        .map(|c| {
            let loaded = storage::load(&cfg.storage, &c.name);
            Report {
                name: c.name.clone(),
                names: c.names.clone(),
                issuer: loaded.as_ref().map(|l| l.issuer.clone()),
                not_after: loaded.as_ref().map(|l| l.not_after),
                status: storage::read_status(&cfg.storage, &c.name).unwrap_or_default(),
                path: storage::cert_dir(&cfg.storage, &c.name),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::is_public_name;

    #[test]
    fn problems_are_worded_for_the_log() {
        use super::describe;
        let problem = |kind: &str, detail: &str| {
            let json =
                format!(r#"{{"type":"urn:ietf:params:acme:error:{kind}","detail":"{detail}","status":400}}"#);
            instant_acme::Error::Api(serde_json::from_str(&json).unwrap())
        };
        let rl = describe(
            &problem("rateLimited", "too many certificates"),
            Some("3600".into()),
        );
        assert!(
            rl.contains("too many certificates") && rl.contains("retry after 3600"),
            "{rl}"
        );
        let v = describe(&problem("connection", "dial tcp: refused"), None);
        assert!(
            v.starts_with("validation failed (connection): dial tcp: refused"),
            "{v}"
        );
        let other = describe(&problem("malformed", "bad CSR"), None);
        assert!(other.starts_with("the CA refused (malformed)"), "{other}");
    }

    #[test]
    fn public_names() {
        assert!(is_public_name("example.com") && is_public_name("a.gateway.test"));
        for n in [
            "localhost",
            "x.localhost",
            "printer.local",
            "db.internal",
            "10.0.0.1",
            "api",
            "h.home.arpa",
        ] {
            assert!(!is_public_name(n), "{n}");
        }
    }
}
