//! The model of DNS-01 and the other ACME challenge settings: `challenge`, `dns_provider`
//! and `profile` of `[[acme.certificates]]`, and `[acme.dns_providers.NAME]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The ACME challenge type a certificate is validated with (RFC 8555 section 8,
/// `challenge = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Challenge {
    /// `http-01` (RFC 8555 section 8.3): the CA fetches
    /// `http://<name>/.well-known/acme-challenge/<token>` from the `:80` listener.
    #[default]
    Http01,
    /// `tls-alpn-01` (RFC 8737): the CA connects to `:443` with ALPN `acme-tls/1` and
    /// checks a self-signed certificate made for the challenge.
    TlsAlpn01,
    /// `dns-01` (RFC 8555 section 8.4): a TXT record at `_acme-challenge.<name>` through a
    /// DNS provider. The only one that can validate a wildcard name.
    Dns01,
}

impl Challenge {
    /// The name as written in the file and in RFC 8555 (`http-01`, `tls-alpn-01`, `dns-01`).
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
            Challenge::Dns01 => "dns-01",
        }
    }
}

/// A secret from the file (after `${ENV}` expansion): never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// `[acme.dns_providers.NAME]`: one DNS host that publishes challenge TXT records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsProvider {
    /// `NAME`, as certificates refer to it with `dns_provider = "NAME"`.
    pub name: String,
    pub kind: DnsProviderKind,
    /// The zone the records go into (`example.com`), lower case, no trailing dot; `None`:
    /// the closest enclosing zone found through SOA queries.
    pub zone: Option<String>,
    /// Longest wait for every authoritative server to answer the TXT values before the CA
    /// is asked to validate (`propagation_timeout`, default 120 s).
    pub propagation_timeout: Duration,
    /// The authoritative servers the propagation check asks (`nameservers = ["IP:port"]`);
    /// empty: those named by the zone's NS records, on port 53.
    pub nameservers: Vec<SocketAddr>,
}

/// What kind of DNS host a provider is (`kind = "..."`), with its own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsProviderKind {
    /// `rfc2136`: DNS UPDATE (RFC 2136) signed with TSIG (RFC 8945) to the zone's primary.
    Rfc2136(Rfc2136),
    /// `alidns`: Alibaba Cloud DNS OpenAPI (AddDomainRecord, DescribeDomainRecords,
    /// DeleteDomainRecord).
    Alidns(Alidns),
    /// `cloudflare`: Cloudflare API v4 with an API token (Zone.DNS edit).
    Cloudflare(Cloudflare),
    /// `exec`: the admin's script, run as `COMMAND present|cleanup FQDN VALUE`.
    Exec(ExecHook),
}

impl DnsProviderKind {
    /// The `kind` as written in the file.
    pub fn as_str(&self) -> &'static str {
        match self {
            DnsProviderKind::Rfc2136(_) => "rfc2136",
            DnsProviderKind::Alidns(_) => "alidns",
            DnsProviderKind::Cloudflare(_) => "cloudflare",
            DnsProviderKind::Exec(_) => "exec",
        }
    }
}

/// TSIG algorithms (RFC 8945 section 6) accepted for `tsig_algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl TsigAlgorithm {
    /// The name as in BIND's `key` statements and `tsig_algorithm` (`hmac-sha256`).
    pub fn as_str(self) -> &'static str {
        match self {
            TsigAlgorithm::HmacSha256 => "hmac-sha256",
            TsigAlgorithm::HmacSha384 => "hmac-sha384",
            TsigAlgorithm::HmacSha512 => "hmac-sha512",
        }
    }
}

/// `kind = "rfc2136"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rfc2136 {
    /// The zone's primary server, `IP:port` (`server`, port 53 when not given).
    pub server: SocketAddr,
    /// The TSIG key's name (`tsig_key_name`), as in the server's `key` statement.
    pub tsig_key_name: String,
    pub tsig_algorithm: TsigAlgorithm,
    /// The key, base64 as BIND's `tsig-keygen` prints it (`tsig_secret`); checked to be
    /// base64 by `gateway check`.
    pub tsig_secret: Secret,
}

/// The default Alibaba Cloud DNS endpoint (`endpoint`).
pub const ALIDNS_ENDPOINT: &str = "https://alidns.aliyuncs.com";
/// The default Cloudflare API base (`endpoint`).
pub const CLOUDFLARE_ENDPOINT: &str = "https://api.cloudflare.com/client/v4";

/// `kind = "alidns"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alidns {
    /// The RAM user's AccessKey ID (`access_key_id`).
    pub access_key_id: String,
    /// Its AccessKey secret (`access_key_secret`).
    pub access_key_secret: Secret,
    /// `endpoint`: base URL of the API, default [`ALIDNS_ENDPOINT`] (`http://` is allowed
    /// for a local test server).
    pub endpoint: String,
}

/// `kind = "cloudflare"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cloudflare {
    /// An API token with Zone:Read and DNS:Edit on the zone (`api_token`).
    pub api_token: Secret,
    /// `endpoint`: base URL of the API, default [`CLOUDFLARE_ENDPOINT`].
    pub endpoint: String,
}

/// `kind = "exec"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecHook {
    /// The program (`command`), run without a shell as `command present|cleanup FQDN VALUE`;
    /// FQDN ends with a dot, as lego's exec provider passes it.
    pub command: PathBuf,
    /// Longest run of one call (`timeout`, default 60 s); past it the program is killed.
    pub timeout: Duration,
}
