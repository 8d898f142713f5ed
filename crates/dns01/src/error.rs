//! The one error type of the crate.

use std::time::Duration;

/// Why a DNS-01 step failed. Each variant names the provider or server it concerns and
/// carries its cause; render the chain with the caller's error formatter.
#[derive(Debug, thiserror::Error)]
pub enum Dns01Error {
    /// The provider's section cannot be turned into a client.
    #[error("{0}")]
    Setup(String),
    /// An HTTP request to a provider's API did not complete (connection, TLS, timeout).
    #[error("{provider}: request to {url} failed")]
    Http {
        provider: &'static str,
        url: String,
        #[source]
        cause: reqwest::Error,
    },
    /// A provider's API answered with an error (wrong credentials, missing permission, an
    /// unknown zone): its HTTP status, its error code and message as it sent them.
    #[error("{provider}: {action} refused: HTTP {status}, {code}: {message}")]
    Api {
        provider: &'static str,
        action: String,
        status: u16,
        code: String,
        message: String,
    },
    /// A provider's API answered something that is not the documented shape.
    #[error("{provider}: unexpected answer to {action}: {detail}")]
    Unexpected {
        provider: &'static str,
        action: String,
        detail: String,
    },
    /// The zone holding a name could not be found (Cloudflare zone lookup, SOA walk).
    #[error("no DNS zone found for {name}: {detail} (set `zone` in the provider's section)")]
    NoZone { name: String, detail: String },
    /// A DNS UPDATE (RFC 2136) could not be sent or got no answer.
    #[error("DNS UPDATE to {server} failed")]
    Update {
        server: String,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The primary answered a DNS UPDATE with an error code (`REFUSED`, `NOTAUTH` for a bad
    /// TSIG key, `NOTZONE`, ...).
    #[error("DNS UPDATE to {server} refused: {rcode}")]
    UpdateRefused { server: String, rcode: String },
    /// The `exec` hook could not be started, failed, or ran past its timeout.
    #[error("the DNS hook `{command} {action}` {detail}")]
    Exec {
        command: String,
        action: &'static str,
        detail: String,
    },
    /// A DNS query of the propagation check failed (no answer from a resolver).
    #[error("DNS lookup of {name} failed")]
    Lookup {
        name: String,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Not every authoritative server answered every value within the timeout.
    #[error(
        "the TXT record {fqdn} was not visible on every authoritative server within {waited:?}: {missing}"
    )]
    NotPropagated {
        fqdn: String,
        waited: Duration,
        /// `server: what it answered` for each server still missing a value.
        missing: String,
    },
}
