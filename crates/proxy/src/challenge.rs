//! ACME HTTP-01 answers: an in-memory token store, falling back to a certbot webroot.

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

/// Tokens published by the ACME client while an order is pending.
#[derive(Default, Debug)]
pub struct Challenges {
    tokens: RwLock<HashMap<String, String>>,
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

    /// The body for `/.well-known/acme-challenge/<token>`: from memory (an order of this
    /// process), from the ACME storage `shared` (an order of another instance sharing it:
    /// `<storage>/.challenges/<token>`), or from the webroot.
    pub fn answer(&self, token: &str, shared: Option<&Path>, webroot: Option<&Path>) -> Option<Vec<u8>> {
        // A token is base64url; anything else (a `/`, `..`) is never a file name we serve.
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
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

impl gateway_tls::acme::ChallengeTokens for Challenges {
    fn publish(&self, token: &str, key_authorization: &str) {
        self.insert(token, key_authorization);
    }

    fn withdraw(&self, token: &str) {
        self.remove(token);
    }
}
