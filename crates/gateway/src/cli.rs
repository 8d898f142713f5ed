//! Command-line interface.
//!
//! `--config` and `--run-dir` may come from the environment (`GATEWAY_CONFIG`,
//! `GATEWAY_RUN_DIR`), so that a host install needs neither on every command.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// `0.1.0 (commit 0123456789ab, built 2026-12-07)`, from build.rs.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("GATEWAY_COMMIT"),
    ", built ",
    env!("GATEWAY_BUILD_DATE"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "gateway",
    version = VERSION,
    about = "Reverse proxy and TLS edge configured by proxy.toml"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `--config FILE` [env GATEWAY_CONFIG, default ./proxy.toml].
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArg {
    /// The configuration file.
    #[arg(short, long, env = "GATEWAY_CONFIG", default_value = "proxy.toml")]
    pub config: PathBuf,
}

/// `--run-dir DIR` [env GATEWAY_RUN_DIR].
#[derive(clap::Args, Debug, Clone)]
pub struct RunDirArg {
    /// Where the running gateway keeps its pid file, control socket and upgrade socket
    /// (created 0700) [default: $XDG_RUNTIME_DIR/gateway, /run/gateway for root, else
    /// /tmp/gateway-<uid>]
    #[arg(long, env = "GATEWAY_RUN_DIR")]
    pub run_dir: Option<PathBuf>,
}

/// Where a view command (`route`, `certs`, `upstreams`) looks: the running gateway's view
/// when one runs with the same configuration file, else the file.
#[derive(clap::Args, Debug, Clone)]
pub struct ViewArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub run_dir: RunDirArg,
    /// Read the file even when a gateway runs.
    #[arg(long)]
    pub file: bool,
}

impl RunDirArg {
    pub fn get(&self) -> PathBuf {
        self.run_dir
            .clone()
            .unwrap_or_else(crate::preflight::default_run_dir)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve: HTTPS with the configured routes, HTTP redirects, metrics.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Take the listening sockets over from a running gateway (zero-downtime upgrade;
        /// `gateway upgrade` starts such a process from the running gateway itself).
        #[arg(long)]
        upgrade: bool,
        #[command(flatten)]
        run_dir: RunDirArg,
    },
    /// Validate the configuration and print the route table (exit 1 on any error), like `nginx -t`.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// A pre-flight and health report: the configuration, the listeners, DNS of the ACME
    /// names (A/AAAA, CAA), the CA and the clock, each upstream and the app behind each
    /// route, the certificates. Lines `OK|WARN|FAIL check: finding (what to do)`; exit 1 on
    /// any FAIL.
    Doctor {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        run_dir: RunDirArg,
        /// The address clients reach this host at: every ACME name must resolve to it.
        #[arg(long)]
        public_ip: Option<std::net::IpAddr>,
        /// One JSON array of `{level, check, finding, fix}` instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Translate an nginx configuration into a proxy.toml and list, as
    /// `file:line: not translated: directive (why)`, what could not be translated. Exit 0
    /// when everything was translated, 2 when something was left out, 1 on an unreadable
    /// or unparsable file (or, with `--check`, a result `gateway check` refuses).
    ImportNginx {
        /// The nginx.conf to read (with its `include`s).
        file: PathBuf,
        /// Where to write the proxy.toml [default: standard output].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Run `gateway check` on the result too.
        #[arg(long)]
        check: bool,
    },
    /// Show which route, upstream and upstream path a URL gets, or why it is rejected: the
    /// running gateway's answer when one runs, else from the file.
    Route {
        #[command(flatten)]
        view: ViewArgs,
        /// For example `https://example.com/n8n/rest/push`.
        url: String,
    },
    /// Zero-downtime replacement of the running gateway: it starts its successor itself (a
    /// new binary, or the same one to pick up listener changes) with its own environment,
    /// arguments and user; the successor takes the listening sockets over, the old process
    /// drains and exits. Waits for the handover and reports it.
    Upgrade {
        /// Accepted for older scripts; the running gateway uses its own configuration file.
        #[arg(short, long, hide = true)]
        config: Option<PathBuf>,
        #[command(flatten)]
        run_dir: RunDirArg,
        /// The new binary [default: the path the running gateway was started from].
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Accepted for older scripts; the successor writes where the running gateway does.
        #[arg(long, hide = true)]
        log: Option<PathBuf>,
    },
    /// Exit 0 when the running gateway answers (container healthcheck): asks the process
    /// through its run directory, then probes `/healthz` on its metrics listener.
    Healthcheck {
        /// Accepted for older compose files; the running process is asked, not the file.
        #[arg(short, long, hide = true)]
        config: Option<PathBuf>,
        #[command(flatten)]
        run_dir: RunDirArg,
    },
    /// List certificates: names, issuer, expiry, next renewal, last error (the running
    /// gateway's view when one runs, else from the files).
    Certs {
        #[command(flatten)]
        view: ViewArgs,
    },
    /// List each upstream's servers: state (up, down and why), source (list or DNS),
    /// requests in flight, failures, the last health check (the running gateway's view; from
    /// the file, only what is configured).
    Upstreams {
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Reload proxy.toml and its certificates in the running gateway; waits for the outcome
    /// and exits 1 with the errors when the file is refused (the gateway keeps serving).
    Reload {
        #[command(flatten)]
        run_dir: RunDirArg,
    },
    /// Switch a route's maintenance mode in the running gateway (503 with Retry-After and the
    /// maintenance page; other routes keep serving). Kept across reloads until switched off.
    Maintenance {
        /// `on` or `off`.
        state: OnOff,
        /// The route's name (`gateway check` lists them).
        route: String,
        #[command(flatten)]
        run_dir: RunDirArg,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff): `gateway man > /usr/local/share/man/man1/gateway.1`.
    Man,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}
