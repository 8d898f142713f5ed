//! Logs: `tracing` to stderr (access lines go to stdout), with Pingora's `log` output bridged
//! in. Pingora reports failed TLS handshakes only as log lines; a layer here counts them.

use prometheus::IntCounter;
use tracing::Level;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Pingora's `log` output, counted where it reports a failed TLS handshake, then handed to
/// tracing. Counting here, before the bridge, sees the record's real target (bridged records
/// share one callsite per level whose target is "log", which per-callsite filters cannot tell
/// apart).
struct CountingLogger {
    bridge: tracing_log::LogTracer,
    handshake_failures: IntCounter,
}

impl log::Log for CountingLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.bridge.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() <= log::Level::Warn
            && record.target().starts_with("pingora_core::services::listening")
            && record.args().to_string().contains("handshake")
        {
            self.handshake_failures.inc();
        }
        // Pingora logs a pooled upstream connection lost to a race in its pool ("failed to
        // acquire reusable stream") as an error; a new connection is opened and nothing
        // fails, so it is not shown.
        if record.level() == log::Level::Error && record.target() == "pingora_core::connectors" {
            return;
        }
        // A client that goes away mid-request is routine (nginx logs "client prematurely
        // closed connection" at info, below its default level); Pingora logs it as an error,
        // one line per connection a load balancer or browser drops. Shown at debug.
        if record.level() == log::Level::Error && client_went_away(record) {
            if log::max_level() >= log::Level::Debug {
                self.bridge.log(
                    &log::Record::builder()
                        .level(log::Level::Debug)
                        .target(record.target())
                        .args(*record.args())
                        .build(),
                );
            }
            return;
        }
        self.bridge.log(record);
    }

    fn flush(&self) {}
}

/// Pingora's report of a request that failed on the client's side of the connection
/// (closed, reset, timed out while the gateway read or wrote), not a fault of the gateway or
/// an upstream.
/// The target is checked first: only those records' messages are formatted.
fn client_went_away(record: &log::Record<'_>) -> bool {
    if !record.target().starts_with("pingora_proxy") {
        return false;
    }
    let message = record.args().to_string();
    [
        "Fail to proxy: Downstream ReadError",
        "Fail to proxy: Downstream WriteError",
        "Fail to proxy: Downstream ConnectionClosed",
        "Fail to proxy: Downstream H2Error",
    ]
    .iter()
    .any(|p| message.starts_with(p))
}

/// `RUST_LOG` wins over the configured level, so an admin can turn up detail for one run.
pub fn init(level: &str, handshake_failures: IntCounter) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Pingora logs at debug and trace on every request: only records at the configured level
    // (and WARN, for the handshake counter) are turned into events at all.
    let max = match filter.max_level_hint().and_then(|l| l.into_level()) {
        Some(Level::TRACE) => log::LevelFilter::Trace,
        Some(Level::DEBUG) => log::LevelFilter::Debug,
        Some(Level::INFO) | None => log::LevelFilter::Info,
        Some(Level::WARN) | Some(Level::ERROR) => log::LevelFilter::Warn,
    };
    let _ = log::set_boxed_logger(Box::new(CountingLogger {
        bridge: tracing_log::LogTracer::new(),
        handshake_failures,
    }));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true);
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .try_init();
    // `try_init` may reset `log`'s global level; the cap is what keeps Pingora's per-request
    // records from being built at all.
    log::set_max_level(max);
}

#[cfg(test)]
mod tests {
    /// `client_went_away` on a record with this target and message.
    fn client_went_away(target: &str, message: &str) -> bool {
        super::client_went_away(
            &log::Record::builder()
                .level(log::Level::Error)
                .target(target)
                .args(format_args!("{message}"))
                .build(),
        )
    }

    #[test]
    fn client_side_failures_are_told_apart() {
        let gone = "Fail to proxy: Downstream ReadError context: Peer: addr: 127.0.0.1:1, scheme: HTTP cause:  context: during HTTP body-or-idle state cause: peer closed connection without sending TLS close_notify";
        assert!(client_went_away("pingora_proxy", gone));
        assert!(client_went_away(
            "pingora_proxy",
            "Fail to proxy: Downstream WriteError context: while writing body cause: Broken pipe (os error 32)"
        ));
        assert!(!client_went_away(
            "pingora_proxy",
            "Fail to proxy: Upstream ConnectRefused context: Peer: addr: 127.0.0.1:9"
        ));
        assert!(!client_went_away("pingora_core::connectors", gone));
    }
}
