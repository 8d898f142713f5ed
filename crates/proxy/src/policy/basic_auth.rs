//! `basic_auth` (RFC 7617; nginx `auth_basic`). STUB: to be implemented (bcrypt/argon2id
//! verified off the event loop, a cache of verified credentials).

use super::{DenyReason, Refusal};
use gateway_config::BasicAuth;
use pingora_http::RequestHeader;

/// Verified credentials, kept briefly (shared by every route and across reloads).
#[derive(Default, Clone)]
pub struct CredentialCache {}

pub struct BasicAuthFilter {
    realm: String,
}

impl BasicAuthFilter {
    pub fn new(cfg: &BasicAuth, _state: &super::PolicyState) -> Self {
        BasicAuthFilter {
            realm: cfg.realm.clone(),
        }
    }

    /// The verified user name, or 401 with `WWW-Authenticate`.
    pub async fn check(&self, _req: &RequestHeader) -> Result<String, Refusal> {
        let mut r = Refusal::new(401, DenyReason::Auth);
        if let Ok(v) =
            http::HeaderValue::from_str(&format!("Basic realm=\"{}\", charset=\"UTF-8\"", self.realm))
        {
            r.headers.push((http::header::WWW_AUTHENTICATE, v));
        }
        Err(r)
    }
}
