//! Certificates for the HTTPS listener: a store that picks a certificate per SNI name and
//! can be swapped while serving, PEM loading that validates before rustls sees anything,
//! a self-signed stand-in for the first start, and automatic issuance over ACME.

pub mod acme;
pub mod lease;
pub mod pem;
pub mod remote;
pub mod storage;
pub mod store;

pub use pem::Loaded;
pub use store::{CertError, CertStore, Entry, Snapshot, Source, StoreNotice};

use std::path::PathBuf;

/// Errors from loading, generating or obtaining certificates; each carries its cause
/// (`source()`), rendered with [`error_chain`] where it is logged or shown.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    /// A pair of files that does not load: which files, and why.
    #[error("{} / {}", cert.display(), key.display())]
    Files {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: Box<TlsError>,
    },
    #[error("bad PEM certificate")]
    Pem(#[source] rustls::pki_types::pem::Error),
    #[error("no certificate in the PEM file")]
    NoCertificate,
    #[error("no usable private key")]
    Key(#[source] rustls::pki_types::pem::Error),
    #[error("the key does not fit the certificate")]
    KeyMismatch(#[source] rustls::Error),
    #[error("unreadable X.509 certificate")]
    X509(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    #[error("cannot generate the self-signed stand-in")]
    Generate(#[source] rcgen::Error),
    #[error("the generated key is unusable: {0}")]
    GeneratedKey(&'static str),
    /// A request to the object storage (`s3://`) failed: what it was for, and where.
    #[error("{what} ({url})")]
    Remote {
        what: String,
        url: String,
        #[source]
        source: object_store::Error,
    },
}

/// An error with every cause under it (`source()`), joined by ": ", so a log line or
/// `status.json` shows the whole story: "client error (Connect): invalid peer certificate:
/// UnknownIssuer", not only "client error (Connect)". A cause whose text its parent already
/// printed (wrappers such as `"HTTP request failure: {0}"`) is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut parent = out.clone();
    let mut cause = e.source();
    // A bound, in case a broken `source()` loops.
    for _ in 0..32 {
        let Some(c) = cause else { break };
        let text = c.to_string();
        if !text.is_empty() && !parent.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        parent = text;
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;
    use std::fmt;

    #[derive(Debug)]
    struct Leaf;
    impl fmt::Display for Leaf {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("invalid peer certificate: CaUsedAsEndEntity")
        }
    }
    impl std::error::Error for Leaf {}

    /// Like hyper-util's client error: a terse text, the cause only in `source()`.
    #[derive(Debug)]
    struct Terse(Leaf);
    impl fmt::Display for Terse {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("client error (Connect)")
        }
    }
    impl std::error::Error for Terse {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// A wrapper that prints its cause and also returns it as `source()`.
    #[derive(Debug)]
    struct Repeating(Terse);
    impl fmt::Display for Repeating {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "HTTP request failure: {}", self.0)
        }
    }
    impl std::error::Error for Repeating {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn every_cause_is_shown_once() {
        assert_eq!(
            error_chain(&Terse(Leaf)),
            "client error (Connect): invalid peer certificate: CaUsedAsEndEntity"
        );
        assert_eq!(
            error_chain(&Repeating(Terse(Leaf))),
            "HTTP request failure: client error (Connect): invalid peer certificate: CaUsedAsEndEntity"
        );
        assert_eq!(error_chain(&Leaf), "invalid peer certificate: CaUsedAsEndEntity");
        // Through a boxed error, as instant-acme's `Error::Other` holds it.
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(Terse(Leaf));
        let acme = instant_acme::Error::Other(boxed);
        assert!(
            error_chain(&acme).ends_with("invalid peer certificate: CaUsedAsEndEntity"),
            "{}",
            error_chain(&acme)
        );
        // io::Error shows its inner error's text and skips to that error's cause.
        let io = std::io::Error::other(Terse(Leaf));
        assert_eq!(
            error_chain(&io),
            "client error (Connect): invalid peer certificate: CaUsedAsEndEntity"
        );
    }
}
