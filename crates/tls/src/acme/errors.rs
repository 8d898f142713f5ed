//! ACME failures worded for the log and `status.json`: what failed, what the CA said, and
//! every cause under it (see [`crate::error_chain`]).

use super::client::RequestTimeout;
use crate::error_chain;

/// A failure, worded for the log: what failed and what the CA said.
pub(super) fn describe(e: &instant_acme::Error, retry_after: Option<String>) -> String {
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
        E::Other(err) if err.downcast_ref::<RequestTimeout>().is_some() => {
            format!("timed out: {}", error_chain(e))
        }
        E::Hyper(_) => format!("cannot reach the CA (connection): {}", error_chain(e)),
        E::Other(_) => format!("cannot reach the CA (DNS, connection or TLS): {}", error_chain(e)),
        E::Timeout(_) => "the CA did not finish validation in time".into(),
        _ => format!("ACME error: {}", error_chain(e)),
    }
}

pub(super) fn is_unknown_account(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p) if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist"))
}

pub(super) fn is_bad_nonce(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p) if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce"))
}

/// Why one issuance failed, before it is worded by [`IssueError::describe`].
#[derive(Debug, thiserror::Error)]
pub(super) enum IssueError {
    /// The CA, or the way to it.
    #[error(transparent)]
    Acme(#[from] instant_acme::Error),
    /// The CA's answer could not be used (a certificate that does not load, for example).
    #[error(transparent)]
    Tls(#[from] crate::TlsError),
    /// No HTTP client for the CA (a bad `ca_root` or `https_proxy`).
    #[error(transparent)]
    Client(#[from] super::client::ClientError),
    #[error("the CA kept rejecting nonces")]
    NonceRetries,
    #[error("authorization is {0:?}")]
    Authorization(instant_acme::AuthorizationStatus),
    /// The CA does not offer the certificate's `challenge` for a name.
    #[error("the CA offers no {challenge} challenge for {name}")]
    NoChallenge { challenge: &'static str, name: String },
    /// A DNS-01 step: the provider, the zone lookup or the propagation check.
    #[error("dns-01 through `{provider}`")]
    Dns01 {
        provider: String,
        #[source]
        cause: gateway_dns01::Dns01Error,
    },
    /// The certificate's `profile` is not among those the directory's `meta` offers.
    #[error("the CA at {directory} offers no profile `{profile}` ({})", if offered.is_empty() { "its directory lists no profiles: it does not support ACME profiles; remove `profile`".to_owned() } else { format!("it offers: {}", offered.join(", ")) })]
    UnknownProfile {
        profile: String,
        directory: String,
        offered: Vec<String>,
    },
    /// `dns_provider` names no `[acme.dns_providers.NAME]` (refused by `gateway check`).
    #[error("no DNS provider `{0}` is configured")]
    NoDnsProvider(String),
    /// The order did not become ready: "validation failed: " and the CA's own problem
    /// documents, as it worded them (`Orders::validation_errors`).
    #[error("{0}")]
    Validation(String),
    #[error("cannot encode the account credentials")]
    Credentials(#[source] serde_json::Error),
    #[error("eab_hmac_key is not base64url")]
    EabKey(#[source] base64::DecodeError),
    /// The whole order took longer than `order_timeout`.
    #[error("timed out: the order did not finish within {0:?} (a CA or proxy that accepts connections but does not answer?)")]
    OrderTimeout(std::time::Duration),
    /// The certificate's lease passed to another instance (or could not be confirmed in
    /// time) while the order ran: it is given up, the holder orders.
    #[error("the certificate's lease was lost during the order; the instance holding it now orders")]
    LeaseLost,
}

impl IssueError {
    /// The text for the log, `status.json` and `gateway certs`: the CA's problem worded
    /// for an admin, or the whole chain of causes.
    pub(super) fn describe(&self, retry_after: Option<String>) -> String {
        match self {
            IssueError::Acme(e) => describe(e, retry_after),
            other => error_chain(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn problem(kind: &str, detail: &str) -> instant_acme::Error {
        let json =
            format!(r#"{{"type":"urn:ietf:params:acme:error:{kind}","detail":"{detail}","status":400}}"#);
        instant_acme::Error::Api(serde_json::from_str(&json).unwrap())
    }

    #[test]
    fn problems_are_worded_for_the_log() {
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

    #[derive(Debug, thiserror::Error)]
    #[error("invalid peer certificate: UnknownIssuer")]
    struct Tls;

    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Connect(#[source] std::io::Error);

    #[test]
    fn connection_failures_show_the_inner_cause() {
        let inner = Connect(std::io::Error::new(std::io::ErrorKind::InvalidData, Tls));
        let e = instant_acme::Error::Other(Box::new(inner));
        let s = describe(&e, None);
        assert_eq!(
            s,
            "cannot reach the CA (DNS, connection or TLS): client error (Connect): invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn a_stalled_request_is_a_timeout() {
        let e = instant_acme::Error::Other(Box::new(RequestTimeout(Duration::from_secs(2))));
        let s = describe(&e, None);
        assert!(
            s.starts_with("timed out: no complete answer from the CA within 2s"),
            "{s}"
        );
    }
}
