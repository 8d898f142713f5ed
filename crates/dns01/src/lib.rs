//! ACME DNS-01 (RFC 8555 section 8.4): the TXT record `_acme-challenge.<name>` through a DNS
//! provider, and the check that every authoritative server of the zone answers it before
//! the CA is asked to validate.
//!
//! - [`Provider`]: one per `[acme.dns_providers.NAME]`, built by [`build`]: `rfc2136` (DNS
//!   UPDATE with TSIG, RFC 2136 and RFC 8945), `alidns` (Alibaba Cloud DNS OpenAPI),
//!   `cloudflare` (API v4), `exec` (the admin's script, `present|cleanup FQDN VALUE`).
//! - [`propagation`]: the zone's authoritative servers (NS records, or the configured
//!   `nameservers`) asked directly until each answers every value.
//!
//! Errors are [`Dns01Error`], carrying their cause; they are rendered where they are logged
//! or shown (`gateway certs`).

pub mod alidns;
pub mod cloudflare;
mod error;
pub mod exec;
pub mod propagation;
pub mod rfc2136;

pub use error::Dns01Error;

use gateway_config::{DnsProvider, DnsProviderKind};
use std::sync::Arc;
use std::time::Duration;

/// One TXT record of a DNS-01 challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Absolute owner name, lower case, without the trailing dot:
    /// `_acme-challenge.example.com` (also for `*.example.com`, RFC 8555 section 8.4).
    pub fqdn: String,
    /// The zone the record is in (`example.com`), without the trailing dot: the configured
    /// `zone`, or the closest enclosing zone found through SOA.
    pub zone: String,
    /// The TXT value: base64url(SHA-256(key authorization)), 43 characters.
    pub value: String,
}

impl Record {
    /// The owner name relative to the zone (`_acme-challenge`, `_acme-challenge.www`): the
    /// `RR` of Alibaba Cloud DNS, the left part of a Cloudflare name.
    pub fn relative_name(&self) -> &str {
        let z = self.zone.as_str();
        self.fqdn
            .strip_suffix(z)
            .and_then(|r| r.strip_suffix('.'))
            .filter(|r| !r.is_empty())
            .unwrap_or("@")
    }
}

/// The owner name of the challenge TXT record for certificate name `name`:
/// `_acme-challenge.` + the name without a leading `*.` (RFC 8555 section 8.4), lower case.
pub fn challenge_name(name: &str) -> String {
    let base = name.strip_prefix("*.").unwrap_or(name).trim_end_matches('.');
    format!("_acme-challenge.{}", base.to_ascii_lowercase())
}

/// A DNS host that can publish and remove the TXT records of DNS-01 challenges.
///
/// `present` adds `record.value` at `record.fqdn` next to any other TXT value there (apex
/// and wildcard of one order share `_acme-challenge.example.com` and need both at once);
/// `cleanup` removes exactly that value and leaves the others. Both may be called again
/// for the same record (a retried order): `present` of a value already there and `cleanup`
/// of one already gone are not errors.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The provider's `kind` (`rfc2136`, `alidns`, `cloudflare`, `exec`).
    fn kind(&self) -> &'static str;
    /// Publishes the TXT record.
    async fn present(&self, record: &Record) -> Result<(), Dns01Error>;
    /// Removes the TXT record published by [`Provider::present`].
    async fn cleanup(&self, record: &Record) -> Result<(), Dns01Error>;
}

/// The provider a `[acme.dns_providers.NAME]` section describes. Secrets are already
/// expanded from `${ENV}` by the config crate.
///
/// Errors: [`Dns01Error::Setup`] when the section cannot be turned into a client (a TSIG
/// secret that is not base64, an HTTP client that cannot be built).
pub fn build(p: &DnsProvider) -> Result<Arc<dyn Provider>, Dns01Error> {
    Ok(match &p.kind {
        DnsProviderKind::Rfc2136(c) => Arc::new(rfc2136::Rfc2136::new(c)?),
        DnsProviderKind::Alidns(c) => Arc::new(alidns::Alidns::new(c)?),
        DnsProviderKind::Cloudflare(c) => Arc::new(cloudflare::Cloudflare::new(c)?),
        DnsProviderKind::Exec(c) => Arc::new(exec::Exec::new(c)),
    })
}

/// The HTTP client of the API providers: the platform's roots, `timeout` for a whole
/// request (connection to the last byte), no proxy from the environment unless
/// `HTTPS_PROXY` is set (reqwest's default).
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, Dns01Error> {
    use rustls_platform_verifier::BuilderVerifierExt;
    // The process's provider when one is installed (the gateway installs aws-lc-rs at
    // start), else aws-lc-rs: with both ring and aws-lc-rs compiled in, rustls cannot pick.
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Dns01Error::Setup(format!("TLS: {e}")))?
        .with_platform_verifier()
        .map_err(|e| Dns01Error::Setup(format!("TLS roots: {e}")))?
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("gateway/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Dns01Error::Setup(format!("HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_names_follow_rfc8555_section_8_4() {
        assert_eq!(challenge_name("example.com"), "_acme-challenge.example.com");
        assert_eq!(challenge_name("*.Example.COM"), "_acme-challenge.example.com");
        assert_eq!(
            challenge_name("www.example.com."),
            "_acme-challenge.www.example.com"
        );
    }

    #[test]
    fn relative_names_are_the_part_below_the_zone() {
        let r = |fqdn: &str, zone: &str| Record {
            fqdn: fqdn.into(),
            zone: zone.into(),
            value: String::new(),
        };
        assert_eq!(
            r("_acme-challenge.example.com", "example.com").relative_name(),
            "_acme-challenge"
        );
        assert_eq!(
            r("_acme-challenge.www.example.com", "example.com").relative_name(),
            "_acme-challenge.www"
        );
        assert_eq!(r("example.com", "example.com").relative_name(), "@");
        // A zone that is only a suffix of a label is not the zone.
        assert_eq!(
            r("_acme-challenge.myexample.com", "example.com").relative_name(),
            "@"
        );
    }
}
