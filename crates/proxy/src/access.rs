//! One access line per request on stdout, in nginx's combined format or as JSON.
//!
//! Lines are handed to a writer thread through a bounded queue (`tracing-appender`'s
//! non-blocking writer): a slow reader of stdout (a full pipe, `docker logs` behind) never
//! stalls a request. When the queue is full the line is dropped and counted in
//! `gateway_access_log_dropped_total`, like nginx's `access_log ... buffer=` drops nothing
//! but blocks the worker instead.

use gateway_config::AccessLog;
use pingora_http::RequestHeader;
use std::io::Write;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

static WRITER: OnceLock<NonBlocking> = OnceLock::new();

/// Lines queued for the writer thread before new ones are dropped (about 25 MB at 200 bytes
/// a line).
const QUEUED_LINES: usize = 128 * 1024;

/// Starts the writer thread for stdout. Keep the guard until the process ends: dropping it
/// writes out what is queued.
pub fn start_writer() -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .lossy(true)
        .thread_name("access-log")
        .finish(std::io::stdout());
    let _ = WRITER.set(writer);
    guard
}

/// Access lines dropped so far because the queue was full.
pub fn dropped_lines() -> u64 {
    WRITER
        .get()
        .map_or(0, |w| w.error_counter().dropped_lines() as u64)
}

pub struct Entry<'a> {
    pub client: Option<IpAddr>,
    pub req: &'a RequestHeader,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    pub route: &'a str,
    pub upstream: &'a str,
}

fn header<'a>(req: &'a RequestHeader, name: &str) -> &'a str {
    req.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-")
}

pub fn log(format: AccessLog, e: &Entry<'_>) {
    let line = match format {
        AccessLog::Off => return,
        AccessLog::Combined => combined(e),
        AccessLog::Json => json(e),
    };
    match WRITER.get() {
        Some(w) => {
            let _ = w.clone().write_all(line.as_bytes());
        }
        // Before `start_writer` (tests, benchmarks): straight to stdout.
        None => {
            let _ = std::io::stdout().lock().write_all(line.as_bytes());
        }
    }
}

/// nginx's escaping of logged variables (`log_format ... escape=default`): `"`, `\`, control
/// bytes and bytes above 0x7E as `\xHH`, so a quoted field always ends at its own quote.
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    let plain = |b: u8| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
    if v.bytes().all(plain) {
        return v.into();
    }
    let mut out = String::with_capacity(v.len() + 8);
    for b in v.bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out.into()
}

fn combined(e: &Entry<'_>) -> String {
    let now = time::OffsetDateTime::now_utc();
    let ts = now
        .format(time::macros::format_description!(
            "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
        ))
        .unwrap_or_default();
    format!(
        "{} - - [{ts}] \"{} {} {:?}\" {} {} \"{}\" \"{}\" route={} upstream={} duration={:.3}\n",
        e.client.map_or_else(|| "-".into(), |c| c.to_string()),
        e.req.method,
        e.req.uri,
        e.req.version,
        e.status,
        e.bytes,
        escape(header(e.req, "referer")),
        escape(header(e.req, "user-agent")),
        e.route,
        e.upstream,
        e.duration.as_secs_f64(),
    )
}

fn json(e: &Entry<'_>) -> String {
    let v = serde_json::json!({
        "time": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "client": e.client.map(|c| c.to_string()),
        "method": e.req.method.as_str(),
        "uri": e.req.uri.to_string(),
        "version": format!("{:?}", e.req.version),
        "status": e.status,
        "bytes": e.bytes,
        "duration_ms": e.duration.as_secs_f64() * 1000.0,
        "route": e.route,
        "upstream": e.upstream,
        "referer": header(e.req, "referer"),
        "user_agent": header(e.req, "user-agent"),
    });
    format!("{v}\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn logged_fields_are_escaped_like_nginx() {
        assert_eq!(super::escape("Mozilla/5.0"), "Mozilla/5.0");
        assert_eq!(super::escape("r\"ef\\"), "r\\x22ef\\x5C");
        assert_eq!(super::escape("a\tb\u{e9}"), "a\\x09b\\xC3\\xA9");
    }
}
