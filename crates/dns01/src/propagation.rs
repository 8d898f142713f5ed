//! The propagation check: before the CA is asked to validate, every authoritative server of
//! the zone must answer the TXT values, asked directly (recursion off, no cache on the way),
//! as lego and Caddy check. Otherwise a CA that asks a secondary not yet updated fails the
//! order, and with it one of the few failed validations a CA allows per hour.
//!
//! - [`Discovery::find_zone`]: the closest enclosing zone of a name (SOA queries upwards,
//!   through the system resolver), when `zone` is not configured;
//! - [`Discovery::authoritative_servers`]: the zone's NS names and their addresses, port 53,
//!   when `nameservers` is not configured;
//! - [`wait`]: polls each server until it answers every value, or the timeout.

use crate::Dns01Error;
use hickory_client::client::{Client, ClientHandle};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_proto::runtime::TokioRuntimeProvider;
use hickory_proto::tcp::TcpClientStream;
use hickory_proto::udp::UdpClientStream;
use hickory_resolver::TokioResolver;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Longest wait for one server's answer to one query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between two rounds of queries.
const INTERVAL: Duration = Duration::from_secs(2);

fn name(n: &str) -> Result<Name, Dns01Error> {
    let mut name =
        Name::from_str(n).map_err(|e| Dns01Error::Setup(format!("`{n}` is not a DNS name: {e}")))?;
    name.set_fqdn(true);
    Ok(name)
}

/// How the zone and its authoritative servers are found: a recursive resolver (the
/// system's, `/etc/resolv.conf`), and the port the servers it names are asked on (53).
pub struct Discovery {
    resolver: TokioResolver,
    port: u16,
}

impl Discovery {
    /// The system resolver, authoritative servers on port 53: what the gateway uses.
    ///
    /// Errors: [`Dns01Error::Lookup`] when `/etc/resolv.conf` cannot be read.
    pub fn system() -> Result<Discovery, Dns01Error> {
        let resolver = TokioResolver::builder_tokio()
            .map(|b| b.build())
            .map_err(|e| Dns01Error::Lookup {
                name: "/etc/resolv.conf".into(),
                cause: Box::new(e),
            })?;
        Ok(Discovery { resolver, port: 53 })
    }

    /// `resolver` asked over UDP and TCP, and the servers it names asked on `port` (tests:
    /// one BIND server on loopback that is authoritative for the zone).
    pub fn via(resolver: SocketAddr, port: u16) -> Discovery {
        use hickory_proto::xfer::Protocol;
        use hickory_resolver::config::{NameServerConfig, ResolverConfig};
        use hickory_resolver::name_server::TokioConnectionProvider;
        let mut config = ResolverConfig::new();
        config.add_name_server(NameServerConfig::new(resolver, Protocol::Udp));
        config.add_name_server(NameServerConfig::new(resolver, Protocol::Tcp));
        let resolver = TokioResolver::builder_with_config(config, TokioConnectionProvider::default()).build();
        Discovery { resolver, port }
    }

    /// The zone that holds `fqdn` (`example.com` for `_acme-challenge.www.example.com`):
    /// the longest suffix with an SOA record of its own.
    ///
    /// Errors: [`Dns01Error::NoZone`] when no suffix of two labels or more has one.
    pub async fn find_zone(&self, fqdn: &str) -> Result<String, Dns01Error> {
        let labels: Vec<&str> = fqdn.trim_end_matches('.').split('.').collect();
        let mut last = String::from("no SOA record on any suffix");
        for i in 0..labels.len().saturating_sub(1) {
            let candidate = labels[i..].join(".");
            let owner = name(&candidate)?;
            match self.resolver.soa_lookup(owner.clone()).await {
                Ok(soa) => {
                    let own = soa
                        .as_lookup()
                        .records()
                        .iter()
                        .any(|r| r.record_type() == RecordType::SOA && r.name() == &owner);
                    if own {
                        return Ok(candidate.to_ascii_lowercase());
                    }
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(Dns01Error::NoZone {
            name: fqdn.to_owned(),
            detail: last,
        })
    }

    /// The addresses of `zone`'s authoritative servers: its NS records, each name's A and
    /// AAAA records, on this discovery's port.
    ///
    /// Errors: [`Dns01Error::Lookup`] when the NS records, or every server's address, cannot
    /// be resolved; [`Dns01Error::NoZone`] for a zone without NS records.
    pub async fn authoritative_servers(&self, zone: &str) -> Result<Vec<SocketAddr>, Dns01Error> {
        let ns = self
            .resolver
            .ns_lookup(name(zone)?)
            .await
            .map_err(|e| Dns01Error::Lookup {
                name: format!("{zone} NS"),
                cause: Box::new(e),
            })?;
        let mut out = Vec::new();
        let mut last = None;
        for n in ns.iter() {
            match self.resolver.lookup_ip(n.0.clone()).await {
                Ok(ips) => out.extend(ips.iter().map(|ip| SocketAddr::new(ip, self.port))),
                Err(e) => last = Some(e),
            }
        }
        out.sort_unstable();
        out.dedup();
        match (out.is_empty(), last) {
            (true, Some(e)) => Err(Dns01Error::Lookup {
                name: format!("the name servers of {zone}"),
                cause: Box::new(e),
            }),
            (true, None) => Err(Dns01Error::NoZone {
                name: zone.to_owned(),
                detail: "it has no NS records".into(),
            }),
            _ => Ok(out),
        }
    }
}

/// The TXT values `server` answers for `fqdn` (asked over UDP, over TCP when the answer is
/// truncated), or what went wrong, as text for the error message.
async fn txt_values(server: SocketAddr, fqdn: &Name) -> Result<Vec<String>, String> {
    let udp = UdpClientStream::builder(server, TokioRuntimeProvider::new())
        .with_timeout(Some(QUERY_TIMEOUT))
        .build();
    let (mut client, bg) = Client::connect(udp).await.map_err(|e| e.to_string())?;
    let task = tokio::spawn(bg);
    let mut answer = client
        .query(fqdn.clone(), DNSClass::IN, RecordType::TXT)
        .await
        .map_err(|e| e.to_string());
    task.abort();
    if matches!(&answer, Ok(a) if a.truncated()) {
        let (stream, sender) =
            TcpClientStream::new(server, None, Some(QUERY_TIMEOUT), TokioRuntimeProvider::new());
        let (mut client, bg) = Client::with_timeout(stream, sender, QUERY_TIMEOUT, None)
            .await
            .map_err(|e| e.to_string())?;
        let task = tokio::spawn(bg);
        answer = client
            .query(fqdn.clone(), DNSClass::IN, RecordType::TXT)
            .await
            .map_err(|e| e.to_string());
        task.abort();
    }
    let answer = answer?;
    match answer.response_code() {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        other => return Err(format!("answered {other}")),
    }
    Ok(answer
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::TXT(t) => Some(
                t.txt_data()
                    .iter()
                    .map(|part| String::from_utf8_lossy(part).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect())
}

/// Waits until every server in `servers` answers every value of `values` at `fqdn`;
/// returns how long that took.
///
/// Errors: [`Dns01Error::NotPropagated`] after `timeout`, naming each server still missing
/// a value and what it answered; [`Dns01Error::Setup`] for a name that is not a DNS name.
pub async fn wait(
    fqdn: &str,
    values: &[String],
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<Duration, Dns01Error> {
    let owner = name(fqdn)?;
    let start = Instant::now();
    let mut pending: Vec<SocketAddr> = servers.to_vec();
    loop {
        let mut missing = Vec::new();
        for &server in &pending {
            match txt_values(server, &owner).await {
                Ok(seen) if values.iter().all(|v| seen.contains(v)) => {}
                Ok(seen) if seen.is_empty() => missing.push((server, "no TXT record yet".to_owned())),
                Ok(seen) => missing.push((server, format!("only {}", seen.join(", ")))),
                Err(e) => missing.push((server, e)),
            }
        }
        pending = missing.iter().map(|(s, _)| *s).collect();
        if pending.is_empty() {
            tracing::debug!(
                fqdn,
                servers = servers.len(),
                "TXT record visible on every authoritative server"
            );
            return Ok(start.elapsed());
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(Dns01Error::NotPropagated {
                fqdn: fqdn.to_owned(),
                waited: Duration::from_secs(start.elapsed().as_secs()),
                missing: missing
                    .iter()
                    .map(|(s, why)| format!("{s}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        tokio::time::sleep(INTERVAL.min(left)).await;
    }
}
