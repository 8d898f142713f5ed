//! The crate's own error type. Failures inside a request are Pingora's errors
//! (`pingora_core::Error`, mapped to statuses in `respond.rs`); this one is for the
//! machinery around requests, such as resolving upstream names.

use std::time::Duration;

/// Errors of the proxy crate. `Clone`: one lookup's outcome is shared by every request
/// that waited for it (`dns.rs`); so a cause is kept behind an `Arc`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The name servers did not answer within the deadline (all servers and attempts).
    #[error("resolving {host} timed out after {after:?}")]
    DnsTimeout { host: String, after: Duration },
    /// The resolver failed: NXDOMAIN, SERVFAIL, refused, name servers unreachable.
    #[error("cannot resolve {host}")]
    DnsLookup {
        host: String,
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The name exists but has no A or AAAA record.
    #[error("{host} has no address")]
    DnsNoAddress { host: String },
    /// The lookup task ended without an answer (the DNS service stopped: shutdown).
    #[error("the lookup of {host} was cancelled")]
    DnsCancelled { host: String },
}
