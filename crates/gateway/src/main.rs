//! `gateway`: a reverse proxy and TLS edge on Pingora, configured by one `proxy.toml`.
//!
//! This crate is the binary: the command line, signals, reload, metrics and telemetry.
//! The decisions live in the library crates (config, routing, tls, proxy).

mod acme;
mod admin;
mod cli;
mod health;
mod inspect;
mod preflight;
mod reload;
mod run;
mod signal;
mod telemetry;
mod upgrade;

use clap::Parser;

// glibc malloc's arena locks showed up as futex waits under load; mimalloc has per-thread heaps.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Pingora's rustls and instant-acme must agree on one provider: ring, installed first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Check { config } => inspect::check(&config),
        cli::Command::Route { config, url } => inspect::route(&config, &url),
        cli::Command::Run {
            config,
            upgrade,
            run_dir,
        } => {
            match run::run(run::RunArgs {
                config,
                upgrade,
                run_dir: run_dir.unwrap_or_else(preflight::default_run_dir),
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gateway: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        cli::Command::Certs { config } => acme::certs(&config),
        cli::Command::Healthcheck { config } => health::check(&config),
        cli::Command::Upgrade {
            config,
            run_dir,
            binary,
            log,
        } => {
            match upgrade::upgrade(upgrade::UpgradeArgs {
                config,
                run_dir: run_dir.unwrap_or_else(preflight::default_run_dir),
                binary,
                log,
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gateway upgrade: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        cli::Command::Reload { run_dir } => match signal::send(
            &run_dir.unwrap_or_else(preflight::default_run_dir),
            nix::sys::signal::Signal::SIGHUP,
        ) {
            Ok(pid) => {
                println!("sent SIGHUP to gateway process {pid}; it logs the result");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gateway reload: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
