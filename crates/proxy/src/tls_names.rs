//! A TLS connection's parameters as nginx names them (`$ssl_protocol`, `$ssl_cipher`,
//! `$ssl_curve`), for the access log and the labels of `gateway_tls_handshakes_total`.

use pingora_core::protocols::tls::SslDigest;
use std::borrow::Cow;

/// The `version` label values (nginx's `$ssl_protocol` spelling).
pub const VERSIONS: &[&str] = &["TLSv1.2", "TLSv1.3"];
/// The `group` label values: the key exchange groups the listener offers (rustls' aws-lc-rs
/// defaults, hybrid post-quantum first), `none` for a resumed TLS 1.2 session (no key
/// exchange), `other` for anything else.
pub const GROUPS: &[&str] = &[
    "X25519MLKEM768",
    "X25519",
    "secp256r1",
    "secp384r1",
    "none",
    "other",
];

/// `TLSv1.3` / `TLSv1.2` (rustls writes `TLSv1_3`).
pub fn protocol(d: &SslDigest) -> Cow<'static, str> {
    match d.version.as_ref() {
        "TLSv1_3" => "TLSv1.3".into(),
        "TLSv1_2" => "TLSv1.2".into(),
        _ => d.version.clone(),
    }
}

/// The IANA name of the cipher suite (rustls writes TLS 1.3 suites as `TLS13_...`; IANA and
/// OpenSSL, so nginx, as `TLS_...`).
pub fn cipher(d: &SslDigest) -> Cow<'static, str> {
    match d.cipher.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}").into(),
        None => d.cipher.clone(),
    }
}

/// The key exchange group, empty when none was negotiated (a resumed TLS 1.2 session).
pub fn group(d: &SslDigest) -> &str {
    d.kx_group.as_deref().unwrap_or("")
}

/// The handshake metric's labels for `d`: one of [`VERSIONS`] (else the raw version) and
/// one of [`GROUPS`].
pub fn labels(d: &SslDigest) -> (Cow<'static, str>, &'static str) {
    let g = group(d);
    let group = if g.is_empty() {
        "none"
    } else {
        GROUPS.iter().find(|x| **x == g).copied().unwrap_or("other")
    };
    (protocol(d), group)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(version: &'static str, cipher: &'static str, group: Option<&'static str>) -> SslDigest {
        let mut d = SslDigest::new(cipher, version, None, None, Vec::new());
        d.kx_group = group.map(Cow::Borrowed);
        d
    }

    #[test]
    fn names_follow_nginx_and_iana() {
        let d = digest("TLSv1_3", "TLS13_AES_128_GCM_SHA256", Some("X25519MLKEM768"));
        assert_eq!(protocol(&d), "TLSv1.3");
        assert_eq!(cipher(&d), "TLS_AES_128_GCM_SHA256");
        assert_eq!(labels(&d), ("TLSv1.3".into(), "X25519MLKEM768"));
        let d = digest("TLSv1_2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", None);
        assert_eq!(cipher(&d), "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
        assert_eq!(labels(&d), ("TLSv1.2".into(), "none"));
        assert_eq!(labels(&digest("TLSv1_3", "x", Some("ffdhe2048"))).1, "other");
    }
}
