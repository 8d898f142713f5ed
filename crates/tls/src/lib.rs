//! Certificates for the HTTPS listener: a store that picks a certificate per SNI name and
//! can be swapped while serving, PEM loading that validates before rustls sees anything,
//! a self-signed stand-in for the first start, and automatic issuance over ACME.

pub mod acme;
pub mod pem;
pub mod storage;
pub mod store;

pub use pem::Loaded;
pub use store::{CertStore, Entry, Snapshot, Source};

use std::path::PathBuf;

/// Errors from loading or obtaining certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{0}")]
    Invalid(String),
}
