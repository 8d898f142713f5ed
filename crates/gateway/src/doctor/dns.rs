//! DNS of the ACME names: each resolves; its addresses include `--public-ip`; no AAAA record
//! while the gateway listens on IPv4 only (Let's Encrypt validates over IPv6 first when a
//! name has one, and fails if nothing answers there); CAA (RFC 8659) allows the CA.

use super::{Level, Report};
use gateway_config::Config;
use hickory_resolver::TokioResolver;
use std::net::IpAddr;

/// The CAA identities of well-known CAs by their directory URLs.
const CA_IDENTITIES: &[(&str, &str)] = &[
    ("letsencrypt.org", "letsencrypt.org"),
    ("zerossl.com", "sectigo.com"),
    ("pki.goog", "pki.goog"),
    ("buypass", "buypass.com"),
];

fn ca_identity(directory: &str) -> Option<&'static str> {
    CA_IDENTITIES
        .iter()
        .find(|(d, _)| directory.contains(d))
        .map(|(_, id)| *id)
}

pub(super) async fn names(r: &mut Report, cfg: &Config, public_ip: Option<IpAddr>) {
    let Some(acme) = &cfg.acme else { return };
    let resolver = match TokioResolver::builder_tokio() {
        Ok(b) => b.build(),
        Err(e) => {
            r.add(
                Level::Fail,
                "dns",
                format!("no resolver: {e}"),
                "check /etc/resolv.conf",
            );
            return;
        }
    };
    let listens_v6 = cfg
        .listen
        .https
        .iter()
        .chain(&cfg.listen.http)
        .any(|a| a.is_ipv6());
    for c in &acme.certificates {
        let directory = c.directory.as_deref().unwrap_or(&acme.directory);
        for n in &c.names {
            if n.parse::<IpAddr>().is_ok() {
                continue;
            }
            let check = format!("dns {n}");
            if acme.ca_root.is_none() {
                if let Some(why) = gateway_tls::acme::not_public(n) {
                    r.add(
                        Level::Warn,
                        check,
                        format!("{why}: not ordered, the self-signed placeholder is served"),
                        "use the public name clients use (DOMAIN)",
                    );
                    continue;
                }
            }
            let name = n.strip_prefix("*.").unwrap_or(n);
            if name == n.as_str() {
                addresses(
                    r,
                    &resolver,
                    &check,
                    n,
                    public_ip,
                    listens_v6,
                    acme.ca_root.is_some(),
                )
                .await;
            }
            caa(r, &resolver, &check, name, directory, acme.ca_root.is_some()).await;
        }
    }
}

/// A private CA (`ca_root`) may resolve names its own way (a test CA's DNS, split
/// horizon): a name this host cannot resolve is then a WARN, not a FAIL.
async fn addresses(
    r: &mut Report,
    resolver: &TokioResolver,
    check: &str,
    name: &str,
    public_ip: Option<IpAddr>,
    listens_v6: bool,
    private_ca: bool,
) {
    let ips: Vec<IpAddr> = match resolver.lookup_ip(name).await {
        Ok(l) => l.iter().collect(),
        Err(e) => {
            let level = if private_ca { Level::Warn } else { Level::Fail };
            r.add(
                level,
                check,
                format!("does not resolve here: {e}"),
                "add an A (and AAAA) record pointing at this host",
            );
            return;
        }
    };
    let list = ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    if let Some(ip) = public_ip {
        if !ips.contains(&ip) {
            r.add(
                Level::Fail,
                check,
                format!("resolves to {list}, not to {ip}"),
                format!("point its records at {ip}, or wait for the change to reach the resolvers"),
            );
            return;
        }
    }
    if ips.iter().any(|i| i.is_ipv6()) && !listens_v6 {
        r.add(
            Level::Fail,
            check,
            format!("has an AAAA record ({list}) while the gateway listens on IPv4 only"),
            "listen on [::]:443 and [::]:80 too (the default), or remove the AAAA record: the CA validates over IPv6 first",
        );
        return;
    }
    r.ok(check, format!("resolves to {list}"));
}

/// The closest CAA record set (RFC 8659 section 3: the name, then each parent) must allow
/// the CA to issue (`issue`, or `issuewild` for a wildcard).
async fn caa(
    r: &mut Report,
    resolver: &TokioResolver,
    check: &str,
    name: &str,
    directory: &str,
    private_ca: bool,
) {
    let labels: Vec<&str> = name.split('.').collect();
    for i in 0..labels.len() {
        let at = labels[i..].join(".");
        let Ok(found) = resolver
            .lookup(at.as_str(), hickory_proto::rr::RecordType::CAA)
            .await
        else {
            continue;
        };
        let records: Vec<String> = found.iter().map(|d| d.to_string()).collect();
        if records.is_empty() {
            continue;
        }
        if private_ca {
            r.ok(
                format!("{check} caa"),
                format!("CAA at {at}: {} (a private CA: not checked)", records.join("; ")),
            );
            return;
        }
        let Some(id) = ca_identity(directory) else {
            r.add(
                Level::Warn,
                format!("{check} caa"),
                format!("CAA at {at}: {}", records.join("; ")),
                format!("check that they allow the CA of {directory}"),
            );
            return;
        };
        let allowed = records.iter().any(|rec| {
            let mut parts = rec.splitn(3, ' ');
            let (_flags, tag, value) = (
                parts.next(),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            (tag == "issue" || tag == "issuewild")
                && value
                    .trim_matches('"')
                    .split(';')
                    .next()
                    .is_some_and(|v| v.trim() == id)
        });
        if allowed {
            r.ok(format!("{check} caa"), format!("CAA at {at} allows {id}"));
        } else {
            r.add(
                Level::Fail,
                format!("{check} caa"),
                format!("CAA at {at} ({}) does not allow {id}", records.join("; ")),
                format!("add `{at}. CAA 0 issue \"{id}\"`"),
            );
        }
        return;
    }
}
