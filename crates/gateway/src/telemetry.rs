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
    let _ = tracing_log::LogTracer::init();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true);
    // The counting layer sees every event, whatever the log level shows.
    let _ = tracing_subscriber::registry()
        .with(HandshakeFailures(handshake_failures))
        .with(fmt.with_filter(filter))
        .try_init();
}
