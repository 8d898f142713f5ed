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
}
