//! `forward_auth` (nginx `auth_request`, Caddy `forward_auth`, Traefik ForwardAuth). STUB:
//! to be implemented.

use super::{DenyReason, Refusal, RequestFacts};
use crate::state::Shared;
use gateway_config::ForwardAuth;
use http::{HeaderName, HeaderValue};

pub struct ForwardAuthFilter {
    _cfg: ForwardAuth,
    copy_headers: Vec<HeaderName>,
}

impl ForwardAuthFilter {
    pub fn new(cfg: &ForwardAuth) -> Self {
        ForwardAuthFilter {
            _cfg: cfg.clone(),
            copy_headers: cfg
                .copy_headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
        }
    }

    /// The `copy_headers` names (removed from the client's request whatever the answer).
    pub fn copy_header_names(&self) -> &[HeaderName] {
        &self.copy_headers
    }

    /// The headers to copy onto the proxied request (2xx), or the auth service's answer
    /// (any other status), or 503 when it cannot be asked.
    pub async fn check(
        &self,
        _facts: &RequestFacts<'_>,
        _shared: &Shared,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Refusal> {
        Err(Refusal::new(503, DenyReason::ForwardAuth))
    }
}
