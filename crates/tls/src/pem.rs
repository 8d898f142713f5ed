//! Reading and checking certificate/key pairs before rustls ever sees them.
//!
//! Pingora's rustls settings panic on a bad certificate; everything here returns an error
//! instead, so a broken file can be refused while the last good certificate keeps serving.

use crate::TlsError;
use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A usable certificate with what we know about it.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// DNS names from the subject alternative names (lower case, `*.x` kept).
    pub names: Vec<String>,
    pub issuer: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Generated here, not issued by a CA.
    pub self_signed: bool,
}

impl Loaded {
    /// True when the certificate is valid for `host` (exact or one-label wildcard).
    pub fn covers(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.names.iter().any(|n| match n.strip_prefix("*.") {
            Some(suffix) => host.split_once('.').is_some_and(|(_, rest)| rest == suffix),
            None => *n == host,
        })
    }
}

/// Reads `fullchain.pem` and `privkey.pem` and checks that they belong together.
pub fn load_files(cert: &Path, key: &Path) -> Result<Loaded, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|e| TlsError::Read(cert.to_path_buf(), e))?;
    let key_pem = std::fs::read(key).map_err(|e| TlsError::Read(key.to_path_buf(), e))?;
    from_pem(&cert_pem, &key_pem).map_err(|e| TlsError::Files {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source: Box::new(e),
    })
}

/// Builds a certificate from PEM text.
pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Loaded, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(TlsError::Pem)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(TlsError::Key)?;
    from_der(chain, key, false)
}

pub(crate) fn from_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    self_signed: bool,
) -> Result<Loaded, TlsError> {
    let (names, issuer, not_before, not_after) = describe(&chain[0])?;
    let key = CertifiedKey::from_der(chain, key, &default_provider()).map_err(TlsError::KeyMismatch)?;
    Ok(Loaded {
        key: Arc::new(key),
        names,
        issuer,
        not_before,
        not_after,
        self_signed,
    })
}

fn describe(der: &CertificateDer<'_>) -> Result<(Vec<String>, String, SystemTime, SystemTime), TlsError> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(TlsError::X509)?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                // RFC 8738 certificates name IP addresses (4 or 16 bytes).
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        names.push(std::net::IpAddr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        names.push(std::net::IpAddr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    let ts = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    Ok((
        names,
        cert.issuer().to_string(),
        ts(cert.validity().not_before.timestamp()),
        ts(cert.validity().not_after.timestamp()),
    ))
}

/// A self-signed stand-in so that HTTPS works before any real certificate exists.
pub fn self_signed(names: &[String]) -> Result<Loaded, TlsError> {
    let names: Vec<String> = if names.is_empty() {
        vec!["localhost".into()]
    } else {
        names.to_vec()
    };
    let generated = rcgen::generate_simple_self_signed(names).map_err(TlsError::Generate)?;
    let key =
        PrivateKeyDer::try_from(generated.signing_key.serialize_der()).map_err(TlsError::GeneratedKey)?;
    from_der(vec![generated.cert.der().clone()], key, true)
}

/// The TLS-ALPN-01 answer for `name` (RFC 8737 section 3): a self-signed certificate for
/// that one name (a DNS name, or an IP address, RFC 8738 section 6) carrying the critical
/// `id-pe-acmeIdentifier` extension with `digest`, the SHA-256 of the key authorization.
///
/// Built without [`CertifiedKey::from_der`]'s key check: that parses the certificate with
/// webpki, which refuses the critical extension it does not know.
pub fn acme_tls_alpn(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(TlsError::Generate)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let pair = rcgen::KeyPair::generate().map_err(TlsError::Generate)?;
    let cert = params.self_signed(&pair).map_err(TlsError::Generate)?;
    let key = PrivateKeyDer::try_from(pair.serialize_der()).map_err(TlsError::GeneratedKey)?;
    let signing = default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(TlsError::KeyMismatch)?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_covers_its_names() {
        let c = self_signed(&["example.com".into(), "*.example.com".into()]).unwrap();
        assert!(c.covers("example.com") && c.covers("A.example.com"));
        assert!(!c.covers("a.b.example.com") && !c.covers("other.org"));
        assert!(c.not_after > SystemTime::now());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(from_pem(b"not pem", b"nope").is_err());
        let a = rcgen::generate_simple_self_signed(vec!["a".to_string()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b".to_string()]).unwrap();
        let err = from_pem(a.cert.pem().as_bytes(), b.signing_key.serialize_pem().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        if let Err(e) = from_pem(a.cert.pem().as_bytes(), a.signing_key.serialize_pem().as_bytes()) {
            panic!("from_pem(a.cert.pem().as_bytes(), a.signing_key.serialize_pem().as_bytes()): {e:?}");
        }
    }
}
