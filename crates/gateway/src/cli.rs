//! Command-line interface.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "gateway",
    version,
    about = "Reverse proxy and TLS edge configured by proxy.toml"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve: HTTPS with the configured routes, HTTP redirects, metrics.
    Run {
        #[arg(short, long, default_value = "proxy.toml")]
        config: PathBuf,
        /// Take the listening sockets over from a running gateway (zero-downtime upgrade).
        #[arg(long)]
        upgrade: bool,
        /// Where the pid file and the upgrade socket live (created 0700) [default:
        /// $XDG_RUNTIME_DIR/gateway, /run/gateway for root, else /tmp/gateway-<uid>]
        #[arg(long)]
        run_dir: Option<PathBuf>,
    },
    /// Validate the configuration and print the route table (exit 1 on any error), like `nginx -t`.
    Check {
        #[arg(short, long, default_value = "proxy.toml")]
        config: PathBuf,
    },
    /// Show which route, upstream and upstream path a URL gets, or why it is rejected.
    Route {
        #[arg(short, long, default_value = "proxy.toml")]
        config: PathBuf,
        /// For example `https://example.com/n8n/rest/push`.
        url: String,
    },
    /// Zero-downtime replacement of the running gateway: a new process (a new binary, or this
    /// one) takes the listening sockets over, the old one drains and exits.
    Upgrade {
        #[arg(short, long, default_value = "proxy.toml")]
        config: PathBuf,
        /// The running gateway's --run-dir [default: as `run`]
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// The new binary (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Where the new process writes its output (default: this terminal).
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Exit 0 when the running gateway answers on its metrics listener (container healthcheck).
    Healthcheck {
        #[arg(short, long, default_value = "proxy.toml")]
        config: PathBuf,
    },
    /// List certificates: names, issuer, expiry, next renewal, last error.
    Certs {
        #[arg(short, long, default_value = "proxy.toml")]
        config: PathBuf,
    },
    /// Ask the running gateway to reload proxy.toml and its certificates (SIGHUP).
    Reload {
        /// The running gateway's --run-dir [default: as `run`]
        #[arg(long)]
        run_dir: Option<PathBuf>,
    },
}
