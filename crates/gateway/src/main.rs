//! `gateway`: a reverse proxy and TLS edge on Pingora, configured by one `proxy.toml`.
//!
//! This crate is the binary: the command line, signals, reload, metrics and telemetry.
//! The decisions live in the library crates (config, routing, tls, proxy).

mod cli;
mod inspect;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Check { config } => inspect::check(&config),
        cli::Command::Route { config, url } => inspect::route(&config, &url),
    }
}
