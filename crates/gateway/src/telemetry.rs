//! Logs: `tracing` to stderr (access lines go to stdout), with Pingora's `log` output bridged in.

use tracing_subscriber::EnvFilter;

/// `RUST_LOG` wins over the configured level, so an admin can turn up detail for one run.
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_log::LogTracer::init();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true)
        .try_init();
}
