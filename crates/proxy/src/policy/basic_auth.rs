//! `basic_auth = { realm, users | htpasswd_file, forward_authorization }`: HTTP Basic
//! authentication (RFC 7617; nginx `auth_basic` + `auth_basic_user_file`, Caddy
//! `basic_auth`, Traefik BasicAuth).
//!
//! - Credentials: `Authorization: Basic <base64 of user-id ":" password>` (RFC 7617 §2; the
//!   scheme name is case-insensitive, RFC 9110 §11.1; base64 padding optional, as browsers
//!   and curl always send it anyway). The user-id ends at the first colon. Missing,
//!   malformed or wrong credentials: 401 with `WWW-Authenticate: Basic realm="<realm>",
//!   charset="UTF-8"` (RFC 7617 §2.1, §2.1.1) and the gateway's own error page, which
//!   tells nothing about users or hashes.
//! - Hashes as `htpasswd` writes them (validated by the config crate): bcrypt (`$2y$`,
//!   `$2a$`, `$2b$`; the `bcrypt` crate; as with Apache's htpasswd, only the first 72 bytes
//!   of a password count) and argon2id (a PHC string, the `argon2` crate, with the
//!   parameters the hash names). Both compare in constant time.
//! - Off the event loop: one verification costs milliseconds (bcrypt cost 10 is about 50 ms
//!   of one core), so it runs on tokio's blocking pool (`spawn_blocking`), never on a worker
//!   thread, at most [`verify_permits`] at a time (2 per core, for every route together).
//!   A request that gets no permit within [`PERMIT_WAIT`] is answered 503 with
//!   `Retry-After: 1`: a flood of wrong passwords delays other logins by at most that, holds
//!   no worker thread and cannot grow the blocking pool. The permit travels with the blocking
//!   job, so a client that goes away does not free it before the job ends. Credentials in
//!   the cache cost no permit: known users with a cached login are not slowed by a flood.
//! - No user enumeration by timing: an unknown user costs one verification too, against the
//!   first user's hash (same algorithm and cost; the result is ignored).
//! - [`CredentialCache`]: successful verifications are kept for [`CACHE_TTL`] (from the
//!   verification), at most [`CACHE_MAX`] of them, keyed by HMAC-SHA-256 under a random key
//!   of this process over (realm, user, password, stored hash). The password is never kept,
//!   a key is worthless outside the process, and a changed or removed htpasswd entry (the
//!   stored hash is part of the key) is never answered from the cache. Failures are never
//!   cached. It lives in `PolicyState`: shared by every route and kept across reloads.

use super::{DenyReason, Refusal};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use gateway_config::BasicAuth;
use http::HeaderValue;
use pingora_http::RequestHeader;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long a successful verification is reused (from the moment it was verified).
pub const CACHE_TTL: Duration = Duration::from_secs(300);

/// Verified credentials kept at most (only correct passwords get in, so in practice one
/// entry per user and realm; a full cache drops the expired entries, then takes no more
/// until some expire).
pub const CACHE_MAX: usize = 10_000;

/// Longest wait for a verification permit; then 503 with `Retry-After: 1`.
pub const PERMIT_WAIT: Duration = Duration::from_secs(10);

/// Verified for an unknown user when the list is empty (bcrypt cost 10; verifies nothing).
const DUMMY_HASH: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

/// RFC 4648 base64 with optional padding (RFC 7617 §2 names `token68`).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Verifications that may run at once: two per core (at least 2).
pub fn verify_permits() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

/// Verified credentials, kept briefly (module comment); shared by every route and across
/// reloads. Also holds the permits that bound verifications in flight. Clones share all.
#[derive(Clone)]
pub struct CredentialCache {
    inner: Arc<CacheInner>,
}

struct CacheInner {
    /// HMAC-SHA-256 key, random per process.
    key: ring::hmac::Key,
    /// Cache key → when it was verified.
    entries: Mutex<HashMap<[u8; 32], Instant>>,
    ttl: Duration,
    max: usize,
    permits: Arc<Semaphore>,
    permit_wait: Duration,
}

impl Default for CredentialCache {
    fn default() -> Self {
        Self::new(CACHE_TTL, CACHE_MAX, verify_permits(), PERMIT_WAIT)
    }
}

impl CredentialCache {
    /// `ttl` per entry, at most `max` entries, `permits` verifications at once, each
    /// waiting at most `permit_wait` for its permit.
    pub fn new(ttl: Duration, max: usize, permits: usize, permit_wait: Duration) -> Self {
        let secret: [u8; 32] = rand::random();
        CredentialCache {
            inner: Arc::new(CacheInner {
                key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
                entries: Mutex::new(HashMap::new()),
                ttl,
                max,
                permits: Arc::new(Semaphore::new(permits.max(1))),
                permit_wait,
            }),
        }
    }

    /// The cache key of one credential: each field length-prefixed, so no two different
    /// tuples share an input.
    fn key(&self, realm: &str, user: &[u8], password: &[u8], stored: &str) -> [u8; 32] {
        let mut ctx = ring::hmac::Context::with_key(&self.inner.key);
        for field in [realm.as_bytes(), user, password, stored.as_bytes()] {
            ctx.update(&(field.len() as u64).to_le_bytes());
            ctx.update(field);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        self.inner.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `key` was verified less than the TTL ago.
    fn fresh(&self, key: &[u8; 32]) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|at| at.elapsed() < self.inner.ttl)
    }

    /// Records a successful verification.
    fn insert(&self, key: [u8; 32]) {
        let mut map = self.lock();
        if map.len() >= self.inner.max && !map.contains_key(&key) {
            let ttl = self.inner.ttl;
            map.retain(|_, at| at.elapsed() < ttl);
            if map.len() >= self.inner.max {
                return;
            }
        }
        map.insert(key, Instant::now());
    }

    /// Entries held now (expired ones included until a sweep).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Verifies `password` against `stored` on the blocking pool, under a permit; 503
    /// when no permit comes within the wait.
    async fn verify(&self, password: Vec<u8>, stored: Arc<str>) -> Result<bool, Refusal> {
        let (wait, acquire) = (self.inner.permit_wait, self.inner.permits.clone().acquire_owned());
        let permit = match pingora_timeout::fast_timeout::fast_timeout(wait, acquire).await {
            Ok(Ok(p)) => p,
            // Timed out (or the semaphore closed, which it never is).
            Ok(Err(_)) | Err(_) => {
                // At most one line a second, however many requests a flood brings.
                static LAST_WARNED: AtomicU64 = AtomicU64::new(0);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                if LAST_WARNED.swap(now, Ordering::Relaxed) != now {
                    tracing::warn!(
                        waited = ?wait,
                        "basic_auth: every password verification slot stayed busy; answering 503"
                    );
                }
                let mut r = Refusal::new(503, DenyReason::Auth);
                r.headers
                    .push((http::header::RETRY_AFTER, HeaderValue::from_static("1")));
                return Err(r);
            }
        };
        let job = tokio::task::spawn_blocking(move || {
            let ok = verify_hash(&password, &stored);
            drop(permit);
            ok
        });
        match job.await {
            Ok(ok) => Ok(ok),
            Err(e) => {
                tracing::warn!(error = %e, "basic_auth: a password verification failed");
                Ok(false)
            }
        }
    }
}

/// Whether `password` matches `stored` (bcrypt or argon2id; anything else, or a hash the
/// crate refuses, matches nothing). Blocking: milliseconds of CPU.
pub fn verify_hash(password: &[u8], stored: &str) -> bool {
    if stored.starts_with("$argon2") {
        use argon2::{PasswordHash, PasswordVerifier};
        match PasswordHash::new(stored) {
            Ok(parsed) => argon2::Argon2::default()
                .verify_password(password, &parsed)
                .is_ok(),
            Err(_) => false,
        }
    } else {
        bcrypt::verify(password, stored).unwrap_or(false)
    }
}

/// `Authorization: Basic ...` as (user-id, password), RFC 7617 §2; `None` when absent or
/// malformed (another scheme, bad base64, no colon).
pub fn credentials(req: &RequestHeader) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = req
        .headers
        .get(http::header::AUTHORIZATION)?
        .as_bytes()
        .trim_ascii();
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, token) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let mut raw = BASE64.decode(token.trim_ascii()).ok()?;
    let colon = raw.iter().position(|b| *b == b':')?;
    let password = raw[colon + 1..].to_vec();
    raw.truncate(colon);
    Some((raw, password))
}

pub struct BasicAuthFilter {
    realm: String,
    /// `Basic realm="...", charset="UTF-8"`.
    challenge: HeaderValue,
    /// User → stored hash (the first line of a user that appears twice, as htpasswd reads).
    users: HashMap<String, Arc<str>>,
    /// Verified for unknown users: the first user's hash, or [`DUMMY_HASH`].
    dummy: Arc<str>,
    cache: CredentialCache,
}

impl BasicAuthFilter {
    pub fn new(cfg: &BasicAuth, state: &super::PolicyState) -> Self {
        let mut users: HashMap<String, Arc<str>> = HashMap::with_capacity(cfg.users.len());
        for (user, hash) in &cfg.users {
            users
                .entry(user.clone())
                .or_insert_with(|| Arc::from(hash.as_str()));
        }
        let dummy: Arc<str> = cfg
            .users
            .first()
            .map_or_else(|| Arc::from(DUMMY_HASH), |(_, h)| Arc::from(h.as_str()));
        // Validated: the realm has no quote, backslash or control character.
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{}\", charset=\"UTF-8\"", cfg.realm))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"restricted\", charset=\"UTF-8\""));
        BasicAuthFilter {
            realm: cfg.realm.clone(),
            challenge,
            users,
            dummy,
            cache: state.credentials.clone(),
        }
    }

    fn unauthorized(&self) -> Refusal {
        let mut r = Refusal::new(401, DenyReason::Auth);
        r.headers
            .push((http::header::WWW_AUTHENTICATE, self.challenge.clone()));
        r
    }

    /// The verified user name, or 401 with `WWW-Authenticate` (503 with `Retry-After` when
    /// every verification slot stayed busy for [`PERMIT_WAIT`]).
    pub async fn check(&self, req: &RequestHeader) -> Result<String, Refusal> {
        let Some((user, password)) = credentials(req) else {
            return Err(self.unauthorized());
        };
        let known = std::str::from_utf8(&user)
            .ok()
            .and_then(|u| self.users.get_key_value(u));
        let stored = known.map_or_else(|| self.dummy.clone(), |(_, h)| h.clone());
        let key = self.cache.key(&self.realm, &user, &password, &stored);
        if let Some((name, _)) = known {
            if self.cache.fresh(&key) {
                return Ok(name.clone());
            }
        }
        let matched = self.cache.verify(password, stored).await?;
        match known {
            Some((name, _)) if matched => {
                self.cache.insert(key);
                Ok(name.clone())
            }
            _ => Err(self.unauthorized()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        if let Some(a) = auth {
            r.insert_header("authorization", a).unwrap();
        }
        r
    }

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[test]
    fn credentials_follow_rfc_7617() {
        assert_eq!(
            credentials(&req(Some(&basic("alice:pa:ss")))),
            Some((b"alice".to_vec(), b"pa:ss".to_vec())),
            "the user-id ends at the first colon"
        );
        // Scheme case-insensitive, extra spaces, padding optional ("a:b" is "YTpi").
        assert_eq!(
            credentials(&req(Some("bAsIc   YTpi"))),
            Some((b"a".to_vec(), b"b".to_vec()))
        );
        assert_eq!(
            credentials(&req(Some("Basic YTpiYw"))),
            Some((b"a".to_vec(), b"bc".to_vec()))
        );
        assert_eq!(credentials(&req(None)), None);
        assert_eq!(credentials(&req(Some("Bearer YTpi"))), None);
        assert_eq!(credentials(&req(Some("Basic !!!"))), None);
        assert_eq!(credentials(&req(Some(&basic("no-colon")))), None);
        assert_eq!(credentials(&req(Some("Basic"))), None);
    }

    #[test]
    fn bcrypt_and_argon2id_verify() {
        let b = bcrypt::hash("secret", 4).unwrap();
        assert!(verify_hash(b"secret", &b));
        assert!(!verify_hash(b"wrong", &b));
        use argon2::PasswordHasher;
        let params = argon2::Params::new(64, 1, 1, None).unwrap();
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(
                b"secret",
                argon2::password_hash::Salt::from_b64("c2FsdHNhbHRzYWx0c2FsdA").unwrap(),
            )
            .unwrap()
            .to_string();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert!(verify_hash(b"secret", &a));
        assert!(!verify_hash(b"wrong", &a));
        // The dummy is a well-formed hash that matches nothing tried here.
        if let Err(e) = bcrypt::verify("", DUMMY_HASH) {
            panic!("bcrypt::verify(\"\", DUMMY_HASH): {e:?}");
        }
        assert!(!verify_hash(b"secret", DUMMY_HASH));
        assert!(!verify_hash(b"secret", "$argon2id$garbage"));
        assert!(!verify_hash(b"secret", "plain"));
    }

    #[test]
    fn the_stored_hash_and_every_field_are_part_of_the_key() {
        let c = CredentialCache::default();
        let k = c.key("admin", b"alice", b"pw", "$2y$old");
        assert_ne!(k, c.key("admin", b"alice", b"pw", "$2y$new"), "a changed entry");
        assert_ne!(k, c.key("other", b"alice", b"pw", "$2y$old"), "another realm");
        assert_ne!(k, c.key("admin", b"alice", b"pw2", "$2y$old"));
        // Length prefixes: moving a byte from one field to the next changes the key.
        assert_ne!(c.key("a", b"bc", b"", "h"), c.key("ab", b"c", b"", "h"));
        // Another process (another secret) has other keys.
        let other = CredentialCache::default();
        assert_ne!(k, other.key("admin", b"alice", b"pw", "$2y$old"));
        c.insert(k);
        assert!(c.fresh(&k));
        assert!(!c.fresh(&c.key("admin", b"alice", b"pw", "$2y$new")));
    }

    #[test]
    fn entries_expire_and_the_cache_stays_bounded() {
        let c = CredentialCache::new(Duration::from_secs(1), 3, 1, PERMIT_WAIT);
        for i in 0..5u8 {
            c.insert(c.key("r", &[i], b"p", "h"));
        }
        assert_eq!(c.len(), 3, "full: no more until some expire");
        let first = c.key("r", &[0], b"p", "h");
        assert!(c.fresh(&first));
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.fresh(&first) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!c.fresh(&first), "expired after the TTL");
        c.insert(c.key("r", &[9], b"p", "h"));
        assert_eq!(c.len(), 1, "the expired entries were swept to make room");
    }

    fn filter(users: &[(&str, String)]) -> BasicAuthFilter {
        let cfg = BasicAuth {
            realm: "admin".into(),
            users: users.iter().map(|(u, h)| (u.to_string(), h.clone())).collect(),
            htpasswd_file: None,
            forward_authorization: false,
        };
        BasicAuthFilter::new(&cfg, &super::super::PolicyState::default())
    }

    #[tokio::test]
    async fn check_answers_the_user_or_401_with_the_challenge() {
        let f = filter(&[("alice", bcrypt::hash("secret", 4).unwrap())]);
        assert_eq!(
            f.check(&req(Some(&basic("alice:secret")))).await.unwrap(),
            "alice"
        );
        // Now cached: still alice.
        assert_eq!(
            f.check(&req(Some(&basic("alice:secret")))).await.unwrap(),
            "alice"
        );
        for bad in [Some(basic("alice:wrong")), Some(basic("bob:secret")), None] {
            let r = f.check(&req(bad.as_deref())).await.unwrap_err();
            assert_eq!(r.status, 401);
            assert_eq!(r.reason, DenyReason::Auth);
            assert_eq!(r.headers.len(), 1);
            assert_eq!(r.headers[0].0, http::header::WWW_AUTHENTICATE);
            assert_eq!(r.headers[0].1, "Basic realm=\"admin\", charset=\"UTF-8\"");
            assert!(r.body.is_none(), "the gateway's own page, nothing of the policy");
        }
        // An empty list refuses everyone, after a dummy verification.
        let none = filter(&[]);
        assert_eq!(
            none.check(&req(Some(&basic("a:b")))).await.unwrap_err().status,
            401
        );
    }

    #[tokio::test]
    async fn no_permit_within_the_wait_is_503_with_retry_after() {
        let mut f = filter(&[("alice", bcrypt::hash("secret", 4).unwrap())]);
        f.cache = CredentialCache::new(CACHE_TTL, CACHE_MAX, 1, Duration::from_millis(50));
        let _held = f.cache.inner.permits.clone().acquire_owned().await.unwrap();
        let r = f.check(&req(Some(&basic("alice:secret")))).await.unwrap_err();
        assert_eq!(r.status, 503);
        assert_eq!(r.headers[0].0, http::header::RETRY_AFTER);
    }
}
