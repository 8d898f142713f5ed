//! DNS-01 for one order (RFC 8555 section 8.4): the TXT records of every pending
//! authorization published through the certificate's provider, grouped by owner name (apex
//! and wildcard share `_acme-challenge.example.com` and are published together), checked on
//! every authoritative server, and removed when the order ends however it ends.

use super::errors::IssueError;
use super::Job;
use gateway_config::DnsProvider;
use gateway_dns01::{challenge_name, propagation, Provider, Record};
use instant_acme::{AuthorizationStatus, ChallengeType, Identifier, Order};
use std::sync::Arc;
use std::time::Duration;

/// TXT records published for one order; [`TxtRecords::cleanup`] removes them. Dropped
/// without it (the order's deadline cut it short), the removal runs in the background.
pub(super) struct TxtRecords {
    provider: Arc<dyn Provider>,
    records: Vec<Record>,
    /// Longest propagation wait of the order, for `gateway certs`.
    pub(super) propagated_in: Option<Duration>,
}

impl TxtRecords {
    pub(super) async fn cleanup(mut self) {
        let records = std::mem::take(&mut self.records);
        remove(self.provider.clone(), records).await;
    }
}

impl Drop for TxtRecords {
    fn drop(&mut self) {
        let records = std::mem::take(&mut self.records);
        if records.is_empty() {
            return;
        }
        let provider = self.provider.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(remove(provider, records));
        }
    }
}

async fn remove(provider: Arc<dyn Provider>, records: Vec<Record>) {
    for r in &records {
        match provider.cleanup(r).await {
            Ok(()) => tracing::debug!(fqdn = %r.fqdn, "removed the dns-01 TXT record"),
            Err(e) => {
                tracing::warn!(fqdn = %r.fqdn, error = %crate::error_chain(&e), "cannot remove the dns-01 TXT record; remove it by hand")
            }
        }
    }
}

fn provider_of(job: &Job) -> Result<&DnsProvider, IssueError> {
    let name = job.cert.dns_provider.clone().unwrap_or_default();
    job.acme
        .dns_providers
        .iter()
        .find(|p| p.name == name)
        .ok_or(IssueError::NoDnsProvider(name))
}

/// Publishes the TXT record of every pending authorization of `order` and waits until each
/// is visible on every authoritative server. The records are removed again on any error.
pub(super) async fn publish(job: &Job, order: &mut Order) -> Result<TxtRecords, IssueError> {
    let cfg = provider_of(job)?;
    let fail = |cause| IssueError::Dns01 {
        provider: cfg.name.clone(),
        cause,
    };
    let provider = gateway_dns01::build(cfg).map_err(fail)?;
    let mut wanted: Vec<(String, String)> = Vec::new();
    let mut auths = order.authorizations();
    while let Some(a) = auths.next().await {
        let mut a = a?;
        if a.status != AuthorizationStatus::Pending {
            continue;
        }
        let name = match &a.identifier().identifier {
            Identifier::Dns(n) => n.clone(),
            other => format!("{other:?}"),
        };
        // The authorization of `*.example.com` names `example.com` with `wildcard: true`.
        let Some(ch) = a.challenge(ChallengeType::Dns01) else {
            return Err(IssueError::NoChallenge {
                challenge: "dns-01",
                name,
            });
        };
        wanted.push((challenge_name(&name), ch.key_authorization().dns_value()));
    }
    let mut txt = TxtRecords {
        provider: provider.clone(),
        records: Vec::new(),
        propagated_in: None,
    };
    for (fqdn, value) in wanted {
        let zone = match &cfg.zone {
            Some(z) => z.clone(),
            None => propagation::Discovery::system()
                .map_err(fail)?
                .find_zone(&fqdn)
                .await
                .map_err(fail)?,
        };
        let record = Record { fqdn, zone, value };
        if txt.records.contains(&record) {
            continue;
        }
        // Listed before `present`: one that fails or times out may still have added the
        // record, and `cleanup` (on drop) removes it; removing a missing value is no error.
        txt.records.push(record.clone());
        provider.present(&record).await.map_err(fail)?;
        tracing::info!(certificate = %job.cert.name, fqdn = %record.fqdn, provider = %cfg.name, "published the dns-01 TXT record");
    }
    // One check per owner name, for all its values at once.
    let mut owners: Vec<(&str, &str)> = txt
        .records
        .iter()
        .map(|r| (r.fqdn.as_str(), r.zone.as_str()))
        .collect();
    owners.sort_unstable();
    owners.dedup();
    let mut longest = Duration::ZERO;
    for (fqdn, zone) in owners {
        let values: Vec<String> = txt
            .records
            .iter()
            .filter(|r| r.fqdn == fqdn)
            .map(|r| r.value.clone())
            .collect();
        let servers = if cfg.nameservers.is_empty() {
            propagation::Discovery::system()
                .map_err(fail)?
                .authoritative_servers(zone)
                .await
                .map_err(fail)?
        } else {
            cfg.nameservers.clone()
        };
        let took = propagation::wait(fqdn, &values, &servers, cfg.propagation_timeout)
            .await
            .map_err(fail)?;
        tracing::info!(certificate = %job.cert.name, fqdn, servers = servers.len(), waited_ms = took.as_millis() as u64, "the dns-01 TXT record is visible on every authoritative server");
        longest = longest.max(took);
    }
    // Nothing published (every authorization was already valid): nothing propagated.
    if !txt.records.is_empty() {
        txt.propagated_in = Some(longest);
    }
    Ok(txt)
}
