//! Logs: `tracing` to stderr (access lines go to stdout), with Pingora's `log` output bridged
//! in. Pingora reports failed TLS handshakes only as log lines; a layer here counts them.
//!
//! Records from libraries are also tidied here: client quirks (rustls' per-connection
//! warnings, clients that went away) go to debug, and a warning or error that repeats in a
//! tight loop is cut to a few lines per second with a count of what was left out.

use gateway_config::{LogFormat, Logging};
use prometheus::IntCounter;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};
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
    floods: FloodGuard,
}

/// At most [`FloodGuard::PER_WINDOW`] warnings or errors per source line per
/// [`FloodGuard::WINDOW`]; the next line after a cut says how many were left out. A loop that
/// fails at once (an accept loop on a closing socket) would otherwise write hundreds of
/// megabytes a second.
#[derive(Default)]
struct FloodGuard {
    seen: Mutex<HashMap<Source, (Instant, u64)>>,
}

/// Where a record comes from: target, file and line. Mapped to (window start, lines in it).
type Source = (String, &'static str, u32);

impl FloodGuard {
    const WINDOW: Duration = Duration::from_secs(1);
    const PER_WINDOW: u64 = 5;
    /// Distinct sources remembered; a full table starts over (bounded memory).
    const MAX_SOURCES: usize = 1024;

    /// `None`: drop this record. `Some(n)`: log it, after saying that `n` were left out.
    fn admit(&self, record: &log::Record<'_>) -> Option<u64> {
        let key = (
            record.target().to_owned(),
            record.file_static().unwrap_or(""),
            record.line().unwrap_or(0),
        );
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= Self::MAX_SOURCES && !seen.contains_key(&key) {
            seen.clear();
        }
        let (start, count) = seen.entry(key).or_insert((now, 0));
        if now.duration_since(*start) >= Self::WINDOW {
            let left_out = count.saturating_sub(Self::PER_WINDOW);
            *start = now;
            *count = 1;
            return Some(left_out);
        }
        *count += 1;
        (*count <= Self::PER_WINDOW).then_some(0)
    }
}

impl log::Log for CountingLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.bridge.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() <= log::Level::Warn && !client_quirk(record) {
            match self.floods.admit(record) {
                None => return,
                Some(0) => {}
                Some(n) => self.bridge.log(
                    &log::Record::builder()
                        .level(record.level())
                        .target(record.target())
                        .args(format_args!(
                            "{n} more lines like the next one were left out in the last second"
                        ))
                        .build(),
                ),
            }
        }
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
        if (record.level() == log::Level::Error && client_went_away(record)) || client_quirk(record) {
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

/// rustls' warnings are about one connection's peer (an IP address sent as SNI by `wrk` and
/// some monitors, a duplicate extension, an alert): one line per handshake under load, for a
/// client quirk the gateway cannot fix. Failed handshakes are counted in
/// `gateway_tls_handshake_failures_total`; the records are shown at debug.
fn client_quirk(record: &log::Record<'_>) -> bool {
    record.level() == log::Level::Warn && record.target().starts_with("rustls")
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
///
/// Colours only when stderr is a terminal (not for `docker logs`, journald or a file);
/// `logging.format = "json"` writes one JSON object per line.
pub fn init(logging: &Logging, handshake_failures: IntCounter) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&logging.level))
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
        floods: FloodGuard::default(),
    }));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true);
    let fmt = match logging.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(true).boxed(),
    };
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
    fn a_flood_is_cut_to_a_few_lines_per_second_with_a_count() {
        let guard = super::FloodGuard::default();
        let admit = |line: u32| {
            guard.admit(
                &log::Record::builder()
                    .level(log::Level::Error)
                    .target("pingora_core::services::listening")
                    .file_static(Some("listening.rs"))
                    .line(Some(line))
                    .args(format_args!("Accept() failed"))
                    .build(),
            )
        };
        let admitted = (0..1000).filter(|_| admit(261).is_some()).count() as u64;
        assert_eq!(admitted, super::FloodGuard::PER_WINDOW);
        // Another source line has its own allowance.
        assert_eq!(admit(262), Some(0));
        // After the window, the next line reports how many were left out.
        {
            let mut seen = guard.seen.lock().unwrap();
            for (start, _) in seen.values_mut() {
                *start -= super::FloodGuard::WINDOW;
            }
        }
        assert_eq!(admit(261), Some(1000 - super::FloodGuard::PER_WINDOW));
    }

    #[test]
    fn rustls_client_quirks_are_debug() {
        let r = log::Record::builder()
            .level(log::Level::Warn)
            .target("rustls::msgs::handshake")
            .args(format_args!(
                "Illegal SNI extension: ignoring IP address presented as hostname"
            ))
            .build();
        assert!(super::client_quirk(&r));
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
