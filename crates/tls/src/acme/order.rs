//! One issuance (RFC 8555 section 7.4: new order, HTTP-01 authorizations, finalize,
//! download) and the accounts it needs (section 7.3).

use super::errors::{describe, is_bad_nonce, is_unknown_account, IssueError};
use super::persist::{Pending, STORAGE_RETRY};
use super::{client, dns, AcmeManager, ChallengeTokens, Job};
use crate::pem::{self, Loaded};
use crate::storage;
use gateway_config::Challenge;
use instant_acme::{
    Account, AccountBuilder, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    ExternalAccountKey, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use std::sync::Arc;
use std::time::Duration;

/// Attempts per ACME request when the CA rejects only its nonce.
const NONCE_TRIES: usize = 60;

/// Evaluates `$attempt` (one awaited ACME request) again while the CA rejects only its
/// nonce (RFC 8555 section 6.5: badNonce is always retryable), at most `NONCE_TRIES` times
/// in all, so one unlucky request does not restart the whole order.
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

/// A certificate obtained; `unsaved` when it could not be stored (it is served from memory
/// all the same, and stored later when the storage is writable again).
pub(super) struct Issued {
    pub(super) loaded: Loaded,
    pub(super) unsaved: Option<Pending>,
    /// The PEM texts, for the object storage (`s3://`), if any.
    pub(super) chain_pem: String,
    pub(super) key_pem: String,
}

/// Whether a new order may name the served certificate in `replaces` (RFC 9773 section 5):
/// only when the order goes to the directory that issued it. After a switch to a fallback
/// directory the other CA does not know the certificate and may refuse the order; when the
/// issuing directory is not recorded (a certificate stored by an older version), it is not
/// sent either.
pub(super) fn may_replace(issued_by: Option<&str>, directory: &str) -> bool {
    issued_by == Some(directory)
}

/// HTTP-01 answers published for one order, withdrawn when the order ends however it ends
/// (success, failure, deadline, or the loop stopped mid-order).
struct Published {
    tokens: Arc<dyn ChallengeTokens>,
    list: Vec<String>,
    /// TLS-ALPN-01 answers served from the certificate store, by name.
    store: Arc<crate::store::CertStore>,
    alpn: Vec<String>,
    /// The ACME storage: HTTP-01 answers are written there too, so that every instance
    /// sharing it answers the CA, whichever one the load balancer sends it to.
    storage: std::path::PathBuf,
    /// The object storage, when `storage` is `s3://`: the answers go there instead.
    remote: Option<Arc<crate::remote::Remote>>,
}

impl Published {
    /// Serves the TLS-ALPN-01 answer for `name` (RFC 8737) on the HTTPS listener.
    fn publish_alpn(&mut self, name: &str, digest: &[u8]) -> Result<(), IssueError> {
        let answer = pem::acme_tls_alpn(name, digest)?;
        // RFC 8738 section 6: the validation of an IP address sends its reverse name as SNI.
        let sni = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => reverse_name(ip),
            Err(_) => name.to_owned(),
        };
        let name = sni.as_str();
        self.store.publish_alpn(name, answer);
        if !self.alpn.iter().any(|n| n == name) {
            self.alpn.push(name.to_owned());
        }
        Ok(())
    }

    async fn publish(&mut self, token: &str, key_authorization: &str) {
        if !self.list.iter().any(|t| t == token) {
            self.tokens.publish(token, key_authorization);
            let shared = match &self.remote {
                Some(r) => r
                    .put_challenge(token, key_authorization)
                    .await
                    .map_err(|e| crate::error_chain(&e)),
                None => storage::write_challenge(&self.storage, token, key_authorization)
                    .map_err(|e| crate::error_chain(&e)),
            };
            if let Err(why) = shared {
                tracing::warn!(token, error = %why, "cannot write the HTTP-01 answer to the shared storage; only this instance answers it");
            }
            self.list.push(token.to_owned());
        }
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        for t in &self.list {
            self.tokens.withdraw(t);
            match &self.remote {
                Some(r) => {
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        let (r, t) = (r.clone(), t.clone());
                        rt.spawn(async move {
                            let _ = r.delete_challenge(&t).await;
                        });
                    }
                }
                None => {
                    let _ = std::fs::remove_file(storage::challenge_path(&self.storage, t));
                }
            }
        }
        for n in &self.alpn {
            self.store.withdraw_alpn(n);
        }
    }
}

/// The reverse-mapping name of `ip` (`4.3.2.1.in-addr.arpa`, nibbles under `ip6.arpa`),
/// RFC 8738 section 6.
fn reverse_name(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        std::net::IpAddr::V6(a) => {
            let mut s = String::new();
            for b in a.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa"
        }
    }
}

/// The `mailto:` contacts of the account.
fn contacts(job: &Job) -> Vec<String> {
    job.acme.email.iter().map(|e| format!("mailto:{e}")).collect()
}

/// Accounts are cached per directory and per everything that shapes the client or the
/// account (root, proxy, timeouts, contact, EAB), so a reload that changes those uses them.
fn cache_key(job: &Job, directory: &str) -> String {
    let a = &job.acme;
    format!(
        "{directory}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        a.ca_root,
        a.https_proxy,
        job.timeouts(),
        a.email,
        a.eab.as_ref().map(|(kid, _)| kid)
    )
}

impl AcmeManager {
    /// One issuance from `directory`, retried at once a few times when only the nonce was
    /// rejected or the CA forgot the account. `replace`: name the served certificate in
    /// `replaces` (see [`may_replace`]). The error is worded for the log, causes included.
    pub(super) async fn obtain(
        &self,
        job: &Job,
        directory: &str,
        replace: bool,
    ) -> Result<Issued, IssueError> {
        let mut last = IssueError::NonceRetries;
        for _ in 0..10 {
            match self.issue(job, directory, replace).await {
                Ok(issued) => return Ok(issued),
                Err(IssueError::Acme(e)) if is_bad_nonce(&e) || is_unknown_account(&e) => {
                    last = IssueError::Acme(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// The text of an error of [`Orders::obtain`], with the CA's `Retry-After` if it sent one.
    pub(super) fn describe(&self, e: &IssueError) -> String {
        e.describe(self.retry_after.take())
    }

    /// Orders, validates, downloads and stores one certificate. A storage failure does not
    /// fail the issuance (the certificate is served from memory); it is returned for reporting.
    async fn issue(&self, job: &Job, directory: &str, replace: bool) -> Result<Issued, IssueError> {
        let c = &job.cert;
        let account = self.account(job, directory).await?;
        // draft-ietf-acme-profiles section 3: the profiles a CA offers are in its
        // directory's `meta`; ordering another fails, so say which ones exist.
        if let Some(p) = &c.profile {
            let offered: Vec<String> = account.profiles().map(|m| m.name.to_owned()).collect();
            if !offered.iter().any(|o| o == p) {
                return Err(IssueError::UnknownProfile {
                    profile: p.clone(),
                    directory: directory.to_owned(),
                    offered,
                });
            }
        }
        // RFC 8738: an IP address is ordered as an `ip` identifier.
        let ids: Vec<Identifier> = c
            .names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Identifier::Ip(ip),
                Err(_) => Identifier::Dns(n.clone()),
            })
            .collect();
        let replaces = if replace {
            self.current(&c.name).filter(|l| !l.self_signed).and_then(|l| {
                l.key
                    .cert
                    .first()
                    .and_then(|d| CertificateIdentifier::try_from(d).ok())
                    .map(|i| i.into_owned())
            })
        } else {
            None
        };
        let mut new_order = NewOrder::new(&ids);
        if let Some(p) = &c.profile {
            new_order = new_order.profile(p);
        }
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
                    new_order = NewOrder::new(&ids);
                    if let Some(p) = &c.profile {
                        new_order = new_order.profile(p);
                    }
                }
                Err(e) if is_unknown_account(&e) => {
                    // The CA forgot the account (a test CA restarted, or it was deactivated):
                    // set the stored one aside and register again on the next attempt.
                    self.forget_account(job, directory).await;
                    let path = storage::account_path(&job.acme.storage, directory);
                    let _ = std::fs::rename(&path, path.with_extension("json.unknown-to-ca"));
                    tracing::warn!(directory = %directory, "the CA does not know the stored account; registering a new one");
                    return Err(IssueError::Acme(e));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let Some(mut order) = order else {
            return Err(IssueError::NonceRetries);
        };
        let mut published = Published {
            tokens: self.tokens.clone(),
            list: Vec::new(),
            store: self.store.clone(),
            alpn: Vec::new(),
            storage: job.acme.storage.clone(),
            remote: self.remote_of(job),
        };
        let mut readied: Vec<String> = Vec::new();
        let mut auth_error = None;
        let kind = match c.challenge {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            Challenge::Dns01 => ChallengeType::Dns01,
        };
        // DNS-01: every TXT record is published and visible before any challenge is
        // declared ready; HTTP-01 and TLS-ALPN-01 answers are published one by one below.
        let mut txt = None;
        if c.challenge == Challenge::Dns01 {
            match dns::publish(job, &mut order).await {
                Ok(t) => {
                    self.note_propagation(&c.name, t.propagated_in);
                    txt = Some(t)
                }
                Err(e) => auth_error = Some(e),
            }
        }
        'attempts: for _ in 0..NONCE_TRIES {
            if auth_error.is_some() {
                break;
            }
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
                        auth_error = Some(IssueError::Authorization(other));
                        break 'attempts;
                    }
                }
                let name = format!("{}", a.identifier());
                let Some(mut ch) = a.challenge(kind.clone()) else {
                    auth_error = Some(IssueError::NoChallenge {
                        challenge: c.challenge.as_str(),
                        name,
                    });
                    break 'attempts;
                };
                let token = ch.token.clone();
                if readied.contains(&token) {
                    continue;
                }
                match c.challenge {
                    Challenge::Http01 => published.publish(&token, ch.key_authorization().as_str()).await,
                    Challenge::TlsAlpn01 => {
                        if let Err(e) =
                            published.publish_alpn(&name, ch.key_authorization().digest().as_ref())
                        {
                            auth_error = Some(e);
                            break 'attempts;
                        }
                    }
                    Challenge::Dns01 => {}
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
                return Err(IssueError::Validation(
                    self.validation_errors(&mut order, status).await,
                ));
            }
            let key_pem = retry_bad_nonce!(order.finalize().await)?;
            let chain_pem = retry_bad_nonce!(order.poll_certificate(&policy).await)?;
            Ok((chain_pem, key_pem))
        }
        .await;
        drop(published);
        if let Some(t) = txt {
            t.cleanup().await;
        }
        let (chain_pem, key_pem) = result?;
        let loaded = pem::from_pem(chain_pem.as_bytes(), key_pem.as_bytes())?;
        let saved = storage::save(
            &job.acme.storage,
            &c.name,
            chain_pem.as_bytes(),
            key_pem.as_bytes(),
        );
        let unsaved = match saved {
            Ok(()) => None,
            Err(e) => {
                let why = crate::error_chain(&e);
                tracing::error!(certificate = %c.name, error = %why, "cannot store the new certificate; the old files are left intact");
                Some(Pending {
                    not_after: loaded.not_after,
                    chain: chain_pem.clone(),
                    key: key_pem.clone(),
                    why,
                    retry_at: std::time::SystemTime::now() + STORAGE_RETRY,
                })
            }
        };
        Ok(Issued {
            loaded,
            unsaved,
            chain_pem,
            key_pem,
        })
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

    fn builder(&self, job: &Job) -> Result<AccountBuilder, IssueError> {
        client::builder(
            job.acme.ca_root.as_deref(),
            job.acme.https_proxy.as_deref(),
            self.retry_after.clone(),
            job.timeouts(),
        )
        .map_err(IssueError::Client)
    }

    fn account_slot(&self, key: &str) -> Arc<tokio::sync::Mutex<Option<Account>>> {
        let mut map = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_owned()).or_default().clone()
    }

    /// Drops the cached account for `directory` (the CA forgot it).
    async fn forget_account(&self, job: &Job, directory: &str) {
        *self.account_slot(&cache_key(job, directory)).lock().await = None;
    }

    /// The account for `directory`: stored credentials when present (given the configured
    /// contact if it changed), else a new account whose credentials are stored (mode 0600)
    /// for the next start.
    pub(super) async fn account(&self, job: &Job, directory: &str) -> Result<Account, IssueError> {
        let slot = self.account_slot(&cache_key(job, directory));
        let mut cached = slot.lock().await;
        if let Some(a) = cached.as_ref() {
            return Ok(a.clone());
        }
        let cfg = &job.acme;
        let path = storage::account_path(&cfg.storage, directory);
        let stored: Option<AccountCredentials> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let account = match stored {
            Some(creds) => {
                tracing::info!(directory, file = %path.display(), "using the stored ACME account");
                let account = self.builder(job)?.from_credentials(creds).await?;
                self.sync_contact(&account, job, directory).await;
                account
            }
            None => {
                let contact = contacts(job);
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let eab = match &cfg.eab {
                    Some((kid, hmac)) => Some(ExternalAccountKey::new(kid.clone(), &decode_b64url(hmac)?)),
                    None => None,
                };
                let new = NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, creds) = retry_bad_nonce!(
                    self.builder(job)?
                        .create(&new, directory.to_owned(), eab.as_ref())
                        .await
                )?;
                let json = serde_json::to_vec_pretty(&creds).map_err(IssueError::Credentials)?;
                let email = cfg.email.clone().unwrap_or_default();
                let contact = storage::contact_path(&cfg.storage, directory);
                let written = storage::write_atomic(&path, &json, 0o600);
                match written {
                    Ok(()) => {
                        tracing::info!(directory, file = %path.display(), "created ACME account");
                        let _ = storage::write_atomic(&contact, email.as_bytes(), 0o600);
                    }
                    Err(e) => {
                        let why = crate::error_chain(&e);
                        tracing::error!(file = %path.display(), error = %why, "cannot store the ACME account: it is used from memory, and a restart registers a new one");
                        self.account_unsaved(path.clone(), json, (contact, email.into_bytes()), why);
                    }
                }
                account
            }
        };
        *cached = Some(account.clone());
        Ok(account)
    }

    /// Gives a stored account the configured contact when it differs from the one it was
    /// last given (RFC 8555 section 7.3.2), so a changed `email` applies. Best effort: a
    /// failure is logged and the order goes on with the account as it is.
    async fn sync_contact(&self, account: &Account, job: &Job, directory: &str) {
        let path = storage::contact_path(&job.acme.storage, directory);
        let wanted = job.acme.email.clone().unwrap_or_default();
        let recorded = std::fs::read_to_string(&path).ok();
        // An account from an older version (nothing recorded) and no email: nothing to do.
        if recorded.as_deref() == Some(wanted.as_str()) || (recorded.is_none() && wanted.is_empty()) {
            return;
        }
        let contact = contacts(job);
        let refs: Vec<&str> = contact.iter().map(String::as_str).collect();
        match retry_bad_nonce!(account.update_contacts(&refs).await) {
            Ok(()) => {
                tracing::info!(directory, contact = %contact.join(","), "gave the ACME account the configured contact");
                if let Err(e) = storage::write_atomic(&path, wanted.as_bytes(), 0o600) {
                    tracing::warn!(file = %path.display(), error = %crate::error_chain(&e), "cannot record the account's contact");
                }
            }
            Err(e) => {
                tracing::warn!(directory, error = %describe(&e, None), "cannot update the ACME account's contact; keeping it as it is")
            }
        }
    }
}

fn decode_b64url(s: &str) -> Result<Vec<u8>, IssueError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(IssueError::EabKey)
}

#[cfg(test)]
mod tests {
    use super::may_replace;

    const LE: &str = "https://acme-v02.api.letsencrypt.org/directory";
    const ZEROSSL: &str = "https://acme.zerossl.com/v2/DV90";

    #[test]
    fn reverse_names_follow_rfc8738_section_6() {
        use super::reverse_name;
        assert_eq!(
            reverse_name("192.0.2.10".parse().unwrap()),
            "10.2.0.192.in-addr.arpa"
        );
        assert_eq!(
            reverse_name("2001:db8::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn replaces_goes_only_to_the_issuing_directory() {
        // Renewal at the CA that issued the certificate: ARI's `replaces` is sent.
        assert!(may_replace(Some(LE), LE));
        // After a switch to the fallback CA: that CA never saw the certificate.
        assert!(!may_replace(Some(LE), ZEROSSL));
        // Back at the primary with a certificate the fallback issued.
        assert!(!may_replace(Some(ZEROSSL), LE));
        // Issuer unknown (stored by an older version, or put there by hand).
        assert!(!may_replace(None, LE));
    }
}
