//! ACME HTTP-01 answers: an in-memory token store, then the shared ACME storage (the
//! answers of another instance's order), then a certbot webroot.

use gateway_tls::remote::Remote;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long an answer read from the object storage is reused: a CA validates from several
/// vantage points within seconds.
const REMOTE_CACHE: Duration = Duration::from_secs(30);
/// At most this many answers are cached.
const REMOTE_CACHE_MAX: usize = 256;

/// Tokens published by the ACME client while an order is pending.
#[derive(Default, Debug)]
pub struct Challenges {
    tokens: RwLock<HashMap<String, String>>,
    /// The object storage (`s3://` storage), for the answers of other instances.
    remote: RwLock<Option<Arc<Remote>>>,
    cache: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
    /// Tokens the object storage did not have, for [`MISS_CACHE`]: a client asking for
    /// random tokens costs one request per token and period, not one per request.
    misses: Mutex<HashMap<String, Instant>>,
    /// Object storage lookups in flight; beyond [`MAX_LOOKUPS`] the answer is a 404.
    lookups: std::sync::atomic::AtomicUsize,
}

/// How long a token the object storage does not have is answered 404 without asking again.
const MISS_CACHE: Duration = Duration::from_secs(2);
/// Object storage lookups at once, at most.
const MAX_LOOKUPS: usize = 16;

/// Decrements the lookup count when a lookup ends, however it ends.
struct Lookup<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Lookup<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Challenges {
    pub fn insert(&self, token: &str, key_authorization: &str) {
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.into(), key_authorization.into());
    }

    pub fn remove(&self, token: &str) {
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }

    /// A token published by another instance in the object storage, if it has one (read
    /// through a small cache). `token` must have passed [`Challenges::answer`]'s check.
    pub async fn answer_remote(&self, token: &str) -> Option<Vec<u8>> {
        if !is_token(token) {
            return None;
        }
        let remote = self.remote.read().unwrap_or_else(|p| p.into_inner()).clone()?;
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((b, at)) = cache.get(token) {
                if at.elapsed() < REMOTE_CACHE {
                    return Some(b.clone());
                }
            }
        }
        {
            let mut misses = self.misses.lock().unwrap_or_else(|p| p.into_inner());
            if misses.get(token).is_some_and(|at| at.elapsed() < MISS_CACHE) {
                return None;
            }
            if misses.len() > 1024 {
                misses.retain(|_, at| at.elapsed() < MISS_CACHE);
            }
        }
        use std::sync::atomic::Ordering;
        if self.lookups.fetch_add(1, Ordering::SeqCst) >= MAX_LOOKUPS {
            self.lookups.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let _lookup = Lookup(&self.lookups);
        match remote.challenge(token).await {
            Ok(Some(b)) => {
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                cache.retain(|_, (_, at)| at.elapsed() < REMOTE_CACHE);
                if cache.len() < REMOTE_CACHE_MAX {
                    cache.insert(token.to_owned(), (b.clone(), Instant::now()));
                }
                Some(b)
            }
            Ok(None) => {
                let mut misses = self.misses.lock().unwrap_or_else(|p| p.into_inner());
                if misses.len() <= 1024 {
                    misses.insert(token.to_owned(), Instant::now());
                }
                None
            }
            Err(e) => {
                tracing::debug!(token, error = %gateway_tls::error_chain(&e), "cannot read the HTTP-01 answer from the object storage");
                None
            }
        }
    }

    /// The body for `/.well-known/acme-challenge/<token>`: from memory (an order of this
    /// process), from the ACME storage `shared` (an order of another instance sharing it:
    /// `<storage>/.challenges/<token>`), or from the webroot.
    pub fn answer(&self, token: &str, shared: Option<&Path>, webroot: Option<&Path>) -> Option<Vec<u8>> {
        if !is_token(token) {
            return None;
        }
        if let Some(v) = self.tokens.read().unwrap_or_else(|p| p.into_inner()).get(token) {
            return Some(v.clone().into_bytes());
        }
        if let Some(b) =
            shared.and_then(|s| std::fs::read(gateway_tls::storage::challenge_path(s, token)).ok())
        {
            return Some(b);
        }
        let path = webroot?.join(".well-known/acme-challenge").join(token);
        std::fs::read(path).ok()
    }
}

/// A token is base64url; anything else (a `/`, `..`) is never a file or object name we read.
fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 128
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl gateway_tls::acme::ChallengeTokens for Challenges {
    fn shared(&self, remote: Option<Arc<Remote>>) {
        *self.remote.write().unwrap_or_else(|p| p.into_inner()) = remote;
    }

    fn publish(&self, token: &str, key_authorization: &str) {
        self.insert(token, key_authorization);
    }

    fn withdraw(&self, token: &str) {
        self.remove(token);
    }
}
