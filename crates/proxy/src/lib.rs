//! Pingora wiring for the gateway: the HTTPS listener and its `ProxyHttp` phases, the
//! plain-HTTP redirect listener, and the background services they need.
//!
//! Decisions live elsewhere: routing in `gateway-routing`, certificates in `gateway-tls`,
//! error statuses in [`respond::status_for`]. This crate connects them to Pingora.

pub mod access;
pub mod challenge;
pub mod compress;
pub mod dns;
mod edge;
pub mod error;
pub mod error_page;
pub mod framing;
pub mod headers;
pub mod metrics;
mod next_upstream;
pub mod policy;
mod proxy;
pub mod proxy_protocol;
pub mod redirect;
pub mod respond;
mod server;
pub mod state;
pub mod tls_names;
pub mod upstream;

pub use edge::Guarded;
pub use error::Error;
pub use proxy::{Ctx, Gateway};
pub use server::{add_services, server_conf, upgrade_sock_path};
pub use state::{Shared, Snapshot};
