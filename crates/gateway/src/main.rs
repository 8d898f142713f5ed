//! `gateway`: a reverse proxy and TLS edge on Pingora, configured by one `proxy.toml`.
//!
//! This crate is the binary: the command line, signals, reload, metrics and telemetry.
//! The decisions live in the library crates (config, routing, tls, proxy).

mod acme;
mod admin;
mod cli;
mod control;
mod doctor;
mod health;
mod import;
mod inspect;
mod notify;
mod preflight;
mod reload;
mod run;
mod signal;
mod telemetry;
mod upgrade;
mod upstreams;

use clap::{CommandFactory, Parser};
use std::process::ExitCode;
use std::time::Duration;

// glibc malloc's arena locks showed up as futex waits under load; mimalloc has per-thread heaps.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints an error chain for `what` and fails.
fn failed(what: &str, e: &anyhow::Error) -> ExitCode {
    eprintln!("{what}: {e:#}");
    ExitCode::FAILURE
}

/// Asks the gateway running with `run_dir` for a text answer (`certs`, `route`), when it
/// serves this very `config` file: its view (its environment, its loaded file) is the true
/// one. `None` when none runs there, or it runs another file: then the file is read.
/// The running gateway's answer to a view command, unless `--file` or none runs.
fn ask_view(view: &cli::ViewArgs, req: control::Request) -> Option<ExitCode> {
    if view.file {
        return None;
    }
    ask_running(&view.run_dir.get(), &view.config.config, req)
}

fn ask_running(
    run_dir: &std::path::Path,
    config: &std::path::Path,
    req: control::Request,
) -> Option<ExitCode> {
    let status = control::status(run_dir, Duration::from_secs(3)).ok()?;
    let same = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    if same(config)? != same(&status.config)? {
        return None;
    }
    match control::request(run_dir, &req, Duration::from_secs(10)) {
        Ok(control::Response::Text { text, ok }) => {
            eprintln!(
                "(the running gateway's view: process {}, {})",
                status.pid,
                status.config.display()
            );
            print!("{text}");
            Some(exit(ok))
        }
        Ok(control::Response::Error { message }) => {
            eprintln!("{message}");
            Some(ExitCode::FAILURE)
        }
        Ok(other) => {
            eprintln!("unexpected answer from the running gateway: {other:?}");
            Some(ExitCode::FAILURE)
        }
        Err(_) => None,
    }
}

fn main() -> ExitCode {
    // One process-wide rustls provider, installed before anything builds a TLS config
    // (Pingora's listeners and connectors, instant-acme, the DNS provider clients):
    // aws-lc-rs with `prefer-post-quantum`, whose key exchange groups are X25519MLKEM768
    // (hybrid post-quantum, draft-ietf-tls-ecdhe-mlkem) first, then X25519, secp256r1 and
    // secp384r1. ring stays compiled for the crates that name it.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Check { config } => inspect::check(&config.config),
        cli::Command::Doctor {
            config,
            run_dir,
            public_ip,
            json,
        } => doctor::run(&doctor::Options {
            config: &config.config,
            run_dir: &run_dir.get(),
            public_ip,
            json,
        }),
        cli::Command::ImportNginx { file, output, check } => import::run(&file, output.as_deref(), check),
        cli::Command::Route { view, url } => {
            if let Some(code) = ask_view(&view, control::Request::Route { url: url.clone() }) {
                return code;
            }
            inspect::route(&view.config.config, &url)
        }
        cli::Command::Run {
            config,
            upgrade,
            run_dir,
        } => match run::run(run::RunArgs {
            config: config.config,
            upgrade,
            run_dir: run_dir.get(),
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failed("gateway", &e),
        },
        cli::Command::Certs { view } => {
            if let Some(code) = ask_view(&view, control::Request::Certs) {
                return code;
            }
            acme::certs(&view.config.config)
        }
        cli::Command::Upstreams { view } => {
            if let Some(code) = ask_view(&view, control::Request::Upstreams) {
                return code;
            }
            upstreams::from_file(&view.config.config)
        }
        cli::Command::Healthcheck { run_dir, .. } => health::check(&run_dir.get()),
        cli::Command::Upgrade { run_dir, binary, .. } => match upgrade::upgrade(upgrade::UpgradeArgs {
            run_dir: run_dir.get(),
            binary,
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failed("gateway upgrade", &e),
        },
        cli::Command::Reload { run_dir } => reload::command(&run_dir.get()),
        cli::Command::Maintenance {
            state,
            route,
            run_dir,
        } => {
            let req = control::Request::Maintenance {
                route,
                on: state == cli::OnOff::On,
            };
            match control::request(&run_dir.get(), &req, Duration::from_secs(10)) {
                Ok(control::Response::Text { text, ok }) => {
                    print!("{text}");
                    exit(ok)
                }
                Ok(control::Response::Error { message }) => {
                    eprintln!("gateway maintenance: {message}");
                    ExitCode::FAILURE
                }
                Ok(other) => {
                    eprintln!("gateway maintenance: unexpected answer: {other:?}");
                    ExitCode::FAILURE
                }
                Err(e) => failed("gateway maintenance", &e),
            }
        }
        cli::Command::Completions { shell } => {
            clap_complete::generate(shell, &mut cli::Cli::command(), "gateway", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        cli::Command::Man => {
            let man = clap_mangen::Man::new(cli::Cli::command());
            match man.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failed("gateway man", &e.into()),
            }
        }
    }
}
