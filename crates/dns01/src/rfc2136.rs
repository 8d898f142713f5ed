//! `kind = "rfc2136"`: DNS UPDATE (RFC 2136) to the zone's primary over TCP, signed with
//! TSIG (RFC 8945), through `hickory-client`. BIND's `nsupdate -y`, lego's `rfc2136` and
//! Caddy's `rfc2136` module send the same messages.
//!
//! `present` adds one TXT record to the RRset (RFC 2136 section 2.5.1, "Add To An RRset"),
//! keeping the other values; `cleanup` deletes exactly that record (section 2.5.4, "Delete
//! An RR From An RRset").

use crate::{Dns01Error, Provider, Record};
use gateway_config::TsigAlgorithm;
use hickory_client::client::{Client, ClientHandle};
use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm as HAlgorithm;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData};
use hickory_proto::runtime::TokioRuntimeProvider;
use hickory_proto::tcp::TcpClientStream;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// TTL of the challenge records, in seconds (short: they live for one validation).
const TTL: u32 = 60;
/// Longest wait for the primary's answer to one UPDATE.
const TIMEOUT: Duration = Duration::from_secs(10);
/// TSIG fudge (RFC 8945 section 5.2.3: 300 s recommended).
const FUDGE: u16 = 300;

/// A primary server and the TSIG key that may update it.
pub struct Rfc2136 {
    server: SocketAddr,
    signer: TSigner,
}

impl std::fmt::Debug for Rfc2136 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136")
            .field("server", &self.server)
            .field("key", &self.signer.signer_name().to_string())
            .finish()
    }
}

impl Rfc2136 {
    /// Errors: [`Dns01Error::Setup`] for a secret that is not base64 or a key name that is
    /// not a DNS name.
    pub fn new(c: &gateway_config::Rfc2136) -> Result<Rfc2136, Dns01Error> {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD
            .decode(c.tsig_secret.0.trim())
            .map_err(|e| Dns01Error::Setup(format!("`tsig_secret` is not base64: {e}")))?;
        let name = Name::from_str(&c.tsig_key_name)
            .map_err(|e| Dns01Error::Setup(format!("`tsig_key_name` `{}`: {e}", c.tsig_key_name)))?;
        let algorithm = match c.tsig_algorithm {
            TsigAlgorithm::HmacSha256 => HAlgorithm::HmacSha256,
            TsigAlgorithm::HmacSha384 => HAlgorithm::HmacSha384,
            TsigAlgorithm::HmacSha512 => HAlgorithm::HmacSha512,
        };
        let signer = TSigner::new(key, algorithm, name, FUDGE)
            .map_err(|e| Dns01Error::Setup(format!("TSIG key: {e}")))?;
        Ok(Rfc2136 {
            server: c.server,
            signer,
        })
    }

    async fn client(&self) -> Result<Client, Dns01Error> {
        let (stream, sender) =
            TcpClientStream::new(self.server, None, Some(TIMEOUT), TokioRuntimeProvider::new());
        let (client, background) =
            Client::with_timeout(stream, sender, TIMEOUT, Some(Arc::new(self.signer.clone())))
                .await
                .map_err(|e| self.failed(e))?;
        tokio::spawn(background);
        Ok(client)
    }

    fn failed(&self, e: impl std::error::Error + Send + Sync + 'static) -> Dns01Error {
        // A server that rejects the request's TSIG answers NOTAUTH with an unsigned TSIG
        // (BADKEY, BADSIG or BADTIME, RFC 8945 section 5.2), which hickory cannot verify and
        // reports as a "truncated HMAC"; its error type has no variant for it to match.
        let text = format!("{e:?}");
        if text.contains("truncated HMAC") || text.contains("TsigWrongKey") {
            return Dns01Error::UpdateRefused {
                server: self.server.to_string(),
                rcode: "NOTAUTH: the server rejected the TSIG signature (BADKEY, BADSIG or BADTIME): check `tsig_key_name`, `tsig_secret` and `tsig_algorithm` against its `key` statement, and the clock".into(),
            };
        }
        Dns01Error::Update {
            server: self.server.to_string(),
            cause: Box::new(e),
        }
    }

    fn record(&self, r: &Record) -> Result<(hickory_proto::rr::Record, Name), Dns01Error> {
        let name = fqdn(&r.fqdn)?;
        let zone = fqdn(&r.zone)?;
        let mut rec =
            hickory_proto::rr::Record::from_rdata(name, TTL, RData::TXT(TXT::new(vec![r.value.clone()])));
        rec.set_dns_class(DNSClass::IN);
        Ok((rec, zone))
    }

    fn check(&self, code: ResponseCode) -> Result<(), Dns01Error> {
        if code == ResponseCode::NoError {
            Ok(())
        } else {
            Err(Dns01Error::UpdateRefused {
                server: self.server.to_string(),
                rcode: format!("{code} (rcode {})", u16::from(code)),
            })
        }
    }
}

fn fqdn(n: &str) -> Result<Name, Dns01Error> {
    let mut name =
        Name::from_str(n).map_err(|e| Dns01Error::Setup(format!("`{n}` is not a DNS name: {e}")))?;
    name.set_fqdn(true);
    Ok(name)
}

#[async_trait::async_trait]
impl Provider for Rfc2136 {
    fn kind(&self) -> &'static str {
        "rfc2136"
    }

    async fn present(&self, r: &Record) -> Result<(), Dns01Error> {
        let (rec, zone) = self.record(r)?;
        let mut client = self.client().await?;
        let answer = client
            .append(rec, zone, false)
            .await
            .map_err(|e| self.failed(e))?;
        self.check(answer.response_code())
    }

    async fn cleanup(&self, r: &Record) -> Result<(), Dns01Error> {
        let (rec, zone) = self.record(r)?;
        let mut client = self.client().await?;
        let answer = client
            .delete_by_rdata(rec, zone)
            .await
            .map_err(|e| self.failed(e))?;
        self.check(answer.response_code())
    }
}
