//! Logs: `tracing` to stderr (access lines go to stdout or `access_log_file`), with Pingora's
//! `log` output bridged in. Pingora reports failed TLS handshakes only as log lines; a layer
//! here counts them.
//!
//! Records from libraries are also tidied here: client quirks (rustls' per-connection
//! warnings, clients that went away) and Pingora's start/stop narration ("Bootstrap
//! starting", "Starting service", "Graceful shutdown started!"...: about 50 INFO lines per
//! start and stop) go to debug, and a warning or error that repeats in a tight loop is cut
//! to a few lines per second with a count of what was left out.
//!
//! Under systemd (`JOURNAL_STREAM` names stderr, systemd.exec(5)) every line starts with its
//! syslog priority, `<3>` error, `<4>` warn, `<6>` info, `<7>` debug and trace (sd-daemon(3)),
//! which journald stores as the entry's PRIORITY and strips from the message.
//!
//! `[logging] level` follows reloads ([`apply_reload`], through a `reload` layer around the
//! filter); `format` needs a restart and a reload says so.

use gateway_config::{LogFormat, Logging};
use prometheus::IntCounter;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

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
        {
            let message = record.args().to_string();
            // A connection refused by the PROXY protocol check reaches Pingora as a failed
            // handshake; the gateway already logged and counted it once, with its reason
            // (crates/proxy/src/proxy_protocol.rs).
            if message.contains("PROXY protocol") {
                return;
            }
            if message.contains("handshake") {
                self.handshake_failures.inc();
            }
        }
        // Pingora logs a pooled upstream connection lost to a race in its pool ("failed to
        // acquire reusable stream") as an error; a new connection is opened and nothing
        // fails, so it is not shown.
        if record.level() == log::Level::Error && record.target() == "pingora_core::connectors" {
            return;
        }
        // A client that goes away mid-request is routine (nginx logs "client prematurely
        // closed connection" at info, below its default level); Pingora logs it as an error,
        // one line per connection a load balancer or browser drops. Shown at debug, as is
        // Pingora's start/stop narration (the gateway logs its own start, reload and stop).
        if (record.level() == log::Level::Error && client_went_away(record))
            || client_quirk(record)
            || pingora_narration(record)
        {
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

/// Pingora's INFO lines: its server's start and stop steps, a line per service and runtime
/// ("Bootstrap starting", "Starting service: ...", "Shutting down ...", "Waiting for runtimes
/// to exit!"). Debug detail for whoever runs the gateway: its own lines say what happened.
fn pingora_narration(record: &log::Record<'_>) -> bool {
    record.level() == log::Level::Info && record.target().starts_with("pingora")
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

/// The syslog priority prefix of a level (sd-daemon(3)): `<3>` error, `<4>` warn, `<6>`
/// info, `<7>` debug and trace.
fn priority(level: &Level) -> &'static [u8] {
    match *level {
        Level::ERROR => b"<3>",
        Level::WARN => b"<4>",
        Level::INFO => b"<6>",
        Level::DEBUG | Level::TRACE => b"<7>",
    }
}

/// Whether stderr is the journal stream systemd names in `JOURNAL_STREAM` (`<device>:<inode>`
/// of the socket, systemd.exec(5)): only then is the priority prefix written, so a program
/// started from a unit with its stderr redirected elsewhere writes plain lines.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.trim().parse::<u64>(), ino.trim().parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// stderr, with the priority prefix in front of each event when `journal` is set.
#[derive(Clone, Copy)]
struct Stderr {
    journal: bool,
}

/// One event's writer: the fmt layer writes a formatted line in one `write_all`.
struct StderrLine {
    prefix: Option<&'static [u8]>,
}

impl Write for StderrLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        match self.prefix.take() {
            // One write per line, so lines of several threads never interleave.
            Some(p) => {
                let mut line = Vec::with_capacity(p.len() + buf.len());
                line.extend_from_slice(p);
                line.extend_from_slice(buf);
                err.write_all(&line)?;
            }
            None => err.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = StderrLine;

    fn make_writer(&'a self) -> StderrLine {
        StderrLine { prefix: None }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> StderrLine {
        StderrLine {
            prefix: self.journal.then(|| priority(meta.level())),
        }
    }
}

/// What [`apply_reload`] changes in the running subscriber.
struct Live {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set (and valid): it, not `[logging] level`, filters.
    from_env: bool,
}

static LIVE: OnceLock<Live> = OnceLock::new();

/// `log`'s global cap for a filter: Pingora logs at debug and trace on every request, so
/// only records at the filter's most verbose level (and WARN, for the handshake counter) are
/// built at all.
fn log_cap(filter: &EnvFilter) -> log::LevelFilter {
    match filter.max_level_hint().and_then(|l| l.into_level()) {
        Some(Level::TRACE) => log::LevelFilter::Trace,
        Some(Level::DEBUG) => log::LevelFilter::Debug,
        Some(Level::INFO) | None => log::LevelFilter::Info,
        Some(Level::WARN) | Some(Level::ERROR) => log::LevelFilter::Warn,
    }
}

/// `RUST_LOG` wins over the configured level, so an admin can turn up detail for one run.
///
/// Colours only when stderr is a terminal (not for `docker logs`, journald or a file);
/// `logging.format = "json"` writes one JSON object per line. Fields are written with
/// `Display` (addresses as `127.0.0.1:80`, never Rust's debug form).
pub fn init(logging: &Logging, handshake_failures: IntCounter) {
    let (filter, from_env) = match EnvFilter::try_from_default_env() {
        Ok(f) => (f, true),
        Err(_) => (
            EnvFilter::try_new(&logging.level).unwrap_or_else(|_| EnvFilter::new("info")),
            false,
        ),
    };
    let max = log_cap(&filter);
    let _ = log::set_boxed_logger(Box::new(CountingLogger {
        bridge: tracing_log::LogTracer::new(),
        handshake_failures,
        floods: FloodGuard::default(),
    }));
    let journal = stderr_is_journal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(Stderr { journal })
        .with_ansi(!journal && std::io::stderr().is_terminal())
        .with_target(true);
    let fmt = match logging.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(true).boxed(),
    };
    // The filter applies to every layer (there is one): a `reload` layer around it lets a
    // reload change the level in place.
    let (filter, handle) = reload::Layer::new(filter);
    // `try_init` reports an error after installing the subscriber when `log` already has a
    // logger (ours, above): its result says nothing about the subscriber. A handle whose
    // subscriber was never installed answers reloads with an error, turned into a warning.
    let _ = tracing_subscriber::registry().with(filter).with(fmt).try_init();
    let _ = LIVE.set(Live {
        filter: handle,
        from_env,
    });
    // `try_init` may reset `log`'s global level; the cap is what keeps Pingora's per-request
    // records from being built at all.
    log::set_max_level(max);
}

/// Applies a reloaded `[logging]`; returns a warning for each change that is not applied
/// (the lead logs them with `tracing::warn!`).
///
/// - `level`: applied at once (the filter is swapped, `log`'s cap follows), unless
///   `RUST_LOG` is set, which wins until a restart without it.
/// - `format` (stderr `text`/`json`): needs a restart; named by
///   `Config::restart_only_changes`, not here.
/// - `access_log_file`: access lines go to the new file (or stdout) from now on; a file
///   that cannot be opened keeps the current target.
/// - `access_log` and `[logging.formats]`: nothing to do, each request reads them from the
///   configuration it started with.
pub fn apply_reload(old: &Logging, new: &Logging) -> Vec<String> {
    let mut warnings = Vec::new();
    if old.level != new.level {
        match LIVE.get() {
            Some(live) if live.from_env => warnings.push(format!(
                "logging.level changed to `{}`, but RUST_LOG is set and wins: the new level applies after a restart without RUST_LOG",
                new.level
            )),
            Some(live) => match EnvFilter::try_new(&new.level) {
                Ok(filter) => {
                    let cap = log_cap(&filter);
                    match live.filter.reload(filter) {
                        Ok(()) => log::set_max_level(cap),
                        Err(e) => warnings.push(format!(
                            "logging.level changed: cannot apply it now ({e}): needs a restart"
                        )),
                    }
                }
                Err(e) => warnings.push(format!(
                    "logging.level `{}` is not a filter ({e}): the previous level stays",
                    new.level
                )),
            },
            None => warnings.push("logging.level changed: needs a restart".to_owned()),
        }
    }
    if old.access_log_file != new.access_log_file {
        if let Err(e) = gateway_proxy::access::set_file(new.access_log_file.as_deref()) {
            let shown = |p: &Option<std::path::PathBuf>| {
                p.as_ref()
                    .map_or_else(|| "stdout".to_owned(), |p| p.display().to_string())
            };
            warnings.push(format!(
                "logging.access_log_file: cannot open {}: {e}; access lines still go to {}",
                shown(&new.access_log_file),
                shown(&old.access_log_file)
            ));
        }
    }
    warnings
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
    fn pingora_start_and_stop_lines_are_debug() {
        let r = |level, target: &str| {
            super::pingora_narration(
                &log::Record::builder()
                    .level(level)
                    .target(target)
                    .args(format_args!("Starting service: https"))
                    .build(),
            )
        };
        assert!(r(log::Level::Info, "pingora_core::server"));
        assert!(!r(log::Level::Warn, "pingora_core::server"));
        assert!(!r(log::Level::Info, "gateway::run"));
    }

    #[test]
    fn journal_priorities_follow_sd_daemon() {
        use tracing::Level;
        assert_eq!(super::priority(&Level::ERROR), b"<3>");
        assert_eq!(super::priority(&Level::WARN), b"<4>");
        assert_eq!(super::priority(&Level::INFO), b"<6>");
        assert_eq!(super::priority(&Level::DEBUG), b"<7>");
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
