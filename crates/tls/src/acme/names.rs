//! Which names are sent to a CA.
//!
//! A public CA never validates special-use names (the order fails, and keeps failing with
//! backoff, and counts against the account's rate limits), so they are not ordered: the
//! self-signed placeholder keeps serving them. A private CA (`ca_root` set: step-ca, Pebble)
//! may validate any name. IP addresses are ordered as RFC 8738 `ip` identifiers (with
//! http-01 or tls-alpn-01; a public CA issues them only under some profiles, Let's
//! Encrypt's `shortlived`); private and special-use addresses (RFC 6890) never go to a
//! public CA.

use std::net::IpAddr;

/// Top-level suffixes no public CA validates, with where they are reserved.
const SPECIAL_USE: &[(&str, &str)] = &[
    ("test", "a special-use name (.test, RFC 6761 section 6.2)"),
    (
        "localhost",
        "a special-use name (localhost, RFC 6761 section 6.3)",
    ),
    ("invalid", "a special-use name (.invalid, RFC 6761 section 6.4)"),
    ("example", "a special-use name (.example, RFC 6761 section 6.5)"),
    ("local", "a multicast DNS name (.local, RFC 6762)"),
    ("home.arpa", "a home network name (.home.arpa, RFC 8375)"),
    (
        "internal",
        "a private-use name (.internal, reserved by ICANN for private networks)",
    ),
    ("lan", "a private network name (.lan)"),
    ("onion", "a Tor onion name (.onion, RFC 7686)"),
];

/// Why no public CA validates `name`, or `None` when one may. A leading `*.` is ignored.
pub fn not_public(name: &str) -> Option<&'static str> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let n = lower.strip_prefix("*.").unwrap_or(&lower);
    if let Some(ip) = parse_ip(n) {
        return special_ip(ip);
    }
    for &(suffix, why) in SPECIAL_USE {
        if n == suffix || n.strip_suffix(suffix).is_some_and(|rest| rest.ends_with('.')) {
            return Some(why);
        }
    }
    if !n.contains('.') {
        return Some("a single label, not a public DNS name");
    }
    None
}

fn parse_ip(n: &str) -> Option<IpAddr> {
    n.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()
}

/// Why no public CA validates the address `ip` (the special-purpose registries of RFC 6890
/// and their updates), or `None` for a global unicast address.
fn special_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            if a.is_private() {
                Some("a private IPv4 address (RFC 1918)")
            } else if a.is_loopback() {
                Some("a loopback address (RFC 1122)")
            } else if a.is_link_local() {
                Some("a link-local address (RFC 3927)")
            } else if o[0] == 100 && (64..128).contains(&o[1]) {
                Some("a shared address (carrier-grade NAT, RFC 6598)")
            } else if a.is_documentation() {
                Some("a documentation address (RFC 5737)")
            } else if a.is_unspecified() || o[0] == 0 || a.is_broadcast() || a.is_multicast() || o[0] >= 240 {
                Some("a reserved, multicast or unspecified address (RFC 6890)")
            } else if o[0] == 198 && (o[1] == 18 || o[1] == 19) {
                Some("a benchmarking address (RFC 2544)")
            } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
                Some("an IETF protocol assignment (RFC 6890)")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            if let Some(v4) = a.to_ipv4_mapped() {
                return special_ip(IpAddr::V4(v4));
            }
            if a.is_loopback() || a.is_unspecified() {
                Some("a loopback or unspecified IPv6 address (RFC 4291)")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("a unique local IPv6 address (RFC 4193)")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("a link-local IPv6 address (RFC 4291)")
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("a documentation IPv6 address (RFC 3849)")
            } else if a.is_multicast() || s[0] & 0xe000 != 0x2000 {
                Some("a multicast or non-global IPv6 address (RFC 4291)")
            } else {
                None
            }
        }
    }
}

/// True when a public CA may validate `name`.
pub fn is_public_name(name: &str) -> bool {
    not_public(name).is_none()
}

/// The first of `names` that must not be sent to the CA, and why. A private CA
/// (`private_ca`: `ca_root` is set) gets every name.
pub fn held_back(names: &[String], private_ca: bool) -> Option<(&str, &'static str)> {
    names.iter().find_map(|n| {
        let why = not_public(n)?;
        if private_ca {
            return None;
        }
        Some((n.as_str(), why))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_names_are_ordered() {
        for n in [
            "example.com",
            "www.example.org",
            "*.example.net",
            "testing.com",
            "my-local.dev",
            "localhost.example.com",
            "internal.example.com",
            "test.example.com",
            "example.com.",
        ] {
            assert!(is_public_name(n), "{n}");
        }
    }

    #[test]
    fn each_special_use_name_is_held_back() {
        let cases = [
            ("a.gateway.test", ".test"),
            ("test", ".test"),
            ("www.example", ".example"),
            ("x.invalid", ".invalid"),
            ("localhost", "localhost"),
            ("app.localhost", "localhost"),
            ("printer.local", ".local"),
            ("db.internal", ".internal"),
            ("router.home.arpa", ".home.arpa"),
            ("nas.lan", ".lan"),
            ("abc.onion", ".onion"),
            ("*.corp.internal", ".internal"),
            ("Printer.LOCAL.", ".local"),
        ];
        for (name, reason) in cases {
            let why = not_public(name).unwrap_or_else(|| panic!("{name} is not held back"));
            assert!(why.contains(reason), "{name}: {why}");
        }
    }

    #[test]
    fn special_use_addresses_and_single_labels_are_held_back_public_addresses_are_not() {
        for (n, why) in [
            ("10.0.0.1", "RFC 1918"),
            ("192.168.1.1", "RFC 1918"),
            ("127.0.0.1", "loopback"),
            ("169.254.1.1", "link-local"),
            ("100.64.0.1", "RFC 6598"),
            ("203.0.113.7", "RFC 5737"),
            ("224.0.0.1", "multicast"),
            ("::1", "loopback"),
            ("[2001:db8::1]", "RFC 3849"),
            ("fd00::1", "RFC 4193"),
            ("fe80::1", "link-local"),
            ("::ffff:10.0.0.1", "RFC 1918"),
        ] {
            assert!(
                not_public(n).is_some_and(|w| w.contains(why)),
                "{n}: {:?}",
                not_public(n)
            );
        }
        for n in ["47.96.1.2", "8.8.8.8", "2400:3200::1", "[2606:4700::1111]"] {
            assert_eq!(not_public(n), None, "{n}");
        }
        assert!(not_public("api").is_some_and(|w| w.contains("single label")));
    }

    #[test]
    fn a_private_ca_gets_every_name() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let test_names = names(&["a.gateway.test", "localhost", "api"]);
        assert_eq!(held_back(&test_names, true), None);
        assert_eq!(
            held_back(&test_names, false).map(|(n, _)| n),
            Some("a.gateway.test")
        );
        let with_ip = names(&["a.gateway.test", "127.0.0.1"]);
        assert_eq!(held_back(&with_ip, true), None);
        assert_eq!(held_back(&with_ip, false).map(|(n, _)| n), Some("a.gateway.test"));
        assert_eq!(held_back(&names(&["example.com"]), false), None);
    }
}
