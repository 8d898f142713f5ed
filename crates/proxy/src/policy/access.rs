//! `allow` / `deny` (nginx `ngx_http_access_module`, Caddy `remote_ip`, Traefik IPAllowList):
//! rules in file order, the first that matches the client decides, none matching lets the
//! request through. 403 otherwise.

use gateway_config::AccessRule;
use std::net::IpAddr;

/// Compiled rules: `(allow, network)`, `None` for `all`.
#[derive(Debug, Clone)]
pub struct AccessList {
    rules: Vec<(bool, Option<ipnet::IpNet>)>,
}

impl AccessList {
    pub fn new(rules: &[AccessRule]) -> Self {
        AccessList {
            rules: rules
                .iter()
                .map(|r| (matches!(r, AccessRule::Allow(_)), r.net()))
                .collect(),
        }
    }

    /// Whether `client` may pass. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, a dual-stack
    /// socket's view of an IPv4 client) is matched as the IPv4 address. A client whose
    /// address is unknown is matched only by `all`.
    pub fn allows(&self, client: Option<IpAddr>) -> bool {
        let client = client.map(|ip| ip.to_canonical());
        for (allow, net) in &self.rules {
            let hit = match (net, client) {
                (None, _) => true,
                (Some(n), Some(ip)) => n.contains(&ip),
                (Some(_), None) => false,
            };
            if hit {
                return *allow;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(rules: &[(bool, &str)]) -> AccessList {
        let rules: Vec<AccessRule> = rules
            .iter()
            .map(|(allow, n)| {
                let net = (*n != "all").then(|| n.parse().unwrap());
                if *allow {
                    AccessRule::Allow(net)
                } else {
                    AccessRule::Deny(net)
                }
            })
            .collect();
        AccessList::new(&rules)
    }

    #[test]
    fn first_match_decides_like_nginx() {
        let office = list(&[(true, "10.0.0.0/8"), (true, "2001:db8::/32"), (false, "all")]);
        assert!(office.allows(Some("10.1.2.3".parse().unwrap())));
        assert!(office.allows(Some("2001:db8::1".parse().unwrap())));
        assert!(office.allows(Some("::ffff:10.9.9.9".parse().unwrap())));
        assert!(!office.allows(Some("192.0.2.1".parse().unwrap())));
        assert!(!office.allows(None));
        let carve = list(&[(false, "10.0.0.5/32"), (true, "10.0.0.0/8"), (false, "all")]);
        assert!(!carve.allows(Some("10.0.0.5".parse().unwrap())));
        assert!(carve.allows(Some("10.0.0.6".parse().unwrap())));
        let deny_one = list(&[(false, "192.0.2.1/32")]);
        assert!(
            deny_one.allows(Some("192.0.2.2".parse().unwrap())),
            "no match: allowed"
        );
    }
}
