//! Logs: `tracing` to stderr (access lines go to stdout), with Pingora's `log` output bridged
//! in. Pingora reports failed TLS handshakes only as log lines; a layer here counts them.

use prometheus::IntCounter;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

struct HandshakeFailures(IntCounter);

struct MentionsHandshake(bool);

impl Visit for MentionsHandshake {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{value:?}").contains("handshake") {
            self.0 = true;
        }
    }
}

impl<S: Subscriber> Layer<S> for HandshakeFailures {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let m = event.metadata();
        if *m.level() <= Level::WARN && m.target().starts_with("pingora_core::services::listening") {
            let mut v = MentionsHandshake(false);
            event.record(&mut v);
            if v.0 {
                self.0.inc();
            }
        }
    }
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
    let _ = tracing_log::LogTracer::builder().with_max_level(max).init();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true);
    let counting = tracing_subscriber::filter::filter_fn(|m| {
        *m.level() <= Level::WARN && m.target().starts_with("pingora_core::services::listening")
    });
    // Pingora logs a pooled upstream connection lost to a race between its threads
    // ("failed to acquire reusable stream") as an error; a new connection is opened and
    // nothing fails, so it is not shown.
    let quiet = tracing_subscriber::filter::filter_fn(|m| {
        !(m.target() == "pingora_core::connectors" && *m.level() == Level::ERROR)
    });
    let _ = tracing_subscriber::registry()
        .with(HandshakeFailures(handshake_failures).with_filter(counting))
        .with(fmt.with_filter(filter).with_filter(quiet))
        .try_init();
    // `try_init` may reset `log`'s global level; the cap is what keeps Pingora's per-request
    // records from being built at all.
    log::set_max_level(max);
}
