//! Which names are sent to a CA.
//!
//! A public CA never validates special-use names (the order fails, and keeps failing with
//! backoff, and counts against the account's rate limits), so they are not ordered: the
//! self-signed placeholder keeps serving them. A private CA (`ca_root` set: step-ca, Pebble)
//! may validate any DNS name, so for it only IP addresses are held back (the client orders
//! DNS identifiers only; RFC 8738 IP identifiers are not used).

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
    if is_ip(n) {
        return Some("an IP address (only DNS names are ordered)");
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

fn is_ip(n: &str) -> bool {
    n.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
}

/// True when a public CA may validate `name`.
pub fn is_public_name(name: &str) -> bool {
    not_public(name).is_none()
}

/// The first of `names` that must not be sent to the CA, and why. With a private CA
/// (`private_ca`: `ca_root` is set) only IP addresses are held back.
pub fn held_back(names: &[String], private_ca: bool) -> Option<(&str, &'static str)> {
    names.iter().find_map(|n| {
        let why = not_public(n)?;
        if private_ca && !is_ip(n.trim_start_matches("*.")) {
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
    fn ip_addresses_and_single_labels_are_held_back() {
        for n in ["10.0.0.1", "127.0.0.1", "::1", "[2001:db8::1]", "203.0.113.7"] {
            assert!(not_public(n).is_some_and(|w| w.contains("IP address")), "{n}");
        }
        assert!(not_public("api").is_some_and(|w| w.contains("single label")));
    }

    #[test]
    fn a_private_ca_gets_every_dns_name_but_no_ip() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let test_names = names(&["a.gateway.test", "localhost", "api"]);
        assert_eq!(held_back(&test_names, true), None);
        assert_eq!(
            held_back(&test_names, false).map(|(n, _)| n),
            Some("a.gateway.test")
        );
        let with_ip = names(&["a.gateway.test", "10.0.0.1"]);
        assert_eq!(held_back(&with_ip, true).map(|(n, _)| n), Some("10.0.0.1"));
        assert_eq!(held_back(&names(&["example.com"]), false), None);
    }
}
