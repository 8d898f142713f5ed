//! One access line per request, in nginx's combined format, as JSON, or in a format of
//! `[logging.formats]` (nginx's `log_format`, compiled when the configuration is read), on
//! stdout or appended to `access_log_file`.
//!
//! Lines are handed to a writer thread through a bounded queue (`tracing-appender`'s
//! non-blocking writer): a slow reader of stdout (a full pipe, `docker logs` behind) or a
//! slow disk never stalls a request, and no worker thread ever opens or writes the file.
//! When the queue is full the line is dropped and counted in
//! `gateway_access_log_dropped_total` ([`dropped_lines`]), where nginx's `access_log ...
//! buffer=` drops nothing but blocks the worker instead.
//!
//! The file: [`start_writer`] opens it (an error stops the start), [`set_file`] switches to
//! another one on reload, and [`reopen`] (SIGUSR1, logrotate's convention, nginx's
//! `-s reopen`) makes the writer thread open the same path again, so lines after a rename
//! go to a new file. The thread acts on the next line or the wake-up that `reopen` sends.

use gateway_config::{AccessFormat, AccessLog, LogPart, LogVar};
use pingora_http::RequestHeader;
use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

static WRITER: OnceLock<NonBlocking> = OnceLock::new();

/// Lines queued for the writer thread before new ones are dropped (about 25 MB at 200 bytes
/// a line).
const QUEUED_LINES: usize = 128 * 1024;

/// Where the writer thread should write, set by [`set_file`] and read by the thread when
/// [`CHANGED`] is set.
struct Control {
    path: Option<PathBuf>,
    /// Opened by [`set_file`] (so a reload reports an unopenable file); taken by the thread.
    replacement: Option<Out>,
}

static CONTROL: Mutex<Control> = Mutex::new(Control {
    path: None,
    replacement: None,
});
/// Set by [`set_file`] and [`reopen`]; the writer thread clears it and follows.
static CHANGED: AtomicBool = AtomicBool::new(false);

fn control() -> std::sync::MutexGuard<'static, Control> {
    CONTROL.lock().unwrap_or_else(|p| p.into_inner())
}

enum Out {
    Stdout(std::io::Stdout),
    /// Buffered; flushed when the writer thread has emptied its queue.
    File(BufWriter<File>),
}

fn open(path: &Path) -> std::io::Result<Out> {
    let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    Ok(Out::File(BufWriter::with_capacity(64 << 10, f)))
}

fn out_for(path: Option<&Path>) -> std::io::Result<Out> {
    match path {
        Some(p) => open(p),
        None => Ok(Out::Stdout(std::io::stdout())),
    }
}

/// What the writer thread writes to; runs on that thread only.
struct Target {
    out: Out,
}

impl Target {
    fn current(&mut self) -> &mut dyn Write {
        match &mut self.out {
            Out::Stdout(s) => s as &mut dyn Write,
            Out::File(f) => f as &mut dyn Write,
        }
    }

    /// Switches to the file (or stdout) [`set_file`] asked for, or opens the same path again
    /// after [`reopen`]. A path that cannot be opened keeps the current file (logged).
    fn follow(&mut self) {
        if !CHANGED.swap(false, Ordering::AcqRel) {
            return;
        }
        let (path, replacement) = {
            let mut c = control();
            (c.path.clone(), c.replacement.take())
        };
        let next = match replacement {
            Some(out) => out,
            None => match out_for(path.as_deref()) {
                Ok(out) => out,
                Err(e) => {
                    tracing::error!(
                        file = %path.as_deref().unwrap_or(Path::new("-")).display(),
                        error = %e,
                        "cannot reopen the access log file; access lines still go to the previous one"
                    );
                    return;
                }
            },
        };
        let _ = self.current().flush();
        self.out = next;
    }
}

impl Write for Target {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.follow();
        self.current().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.follow();
        self.current().write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.follow();
        self.current().flush()
    }
}

/// Starts the writer thread, writing to `file` (appended, created if missing) or stdout.
/// Keep the guard until the process ends: dropping it writes out what is queued.
pub fn start_writer(file: Option<&Path>) -> std::io::Result<WorkerGuard> {
    let out = out_for(file)?;
    control().path = file.map(Path::to_path_buf);
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .lossy(true)
        .thread_name("access-log")
        .finish(Target { out });
    let _ = WRITER.set(writer);
    Ok(guard)
}

/// Sends access lines to `file` (or stdout for `None`) from now on; a reload calls it with
/// `[logging] access_log_file`. The file is opened here, so an error is the caller's to
/// report; the previous target is kept then. Nothing happens when the path is unchanged.
pub fn set_file(file: Option<&Path>) -> std::io::Result<()> {
    let mut c = control();
    if c.path.as_deref() == file {
        return Ok(());
    }
    c.replacement = Some(out_for(file)?);
    c.path = file.map(Path::to_path_buf);
    drop(c);
    CHANGED.store(true, Ordering::Release);
    wake();
    Ok(())
}

/// Reopens the access log file by its path (SIGUSR1: after logrotate renamed it, lines go
/// to a new file of that name). Returns at once; the writer thread opens the file.
pub fn reopen() {
    CHANGED.store(true, Ordering::Release);
    wake();
}

/// An empty message: the writer thread wakes up and follows [`CHANGED`].
fn wake() {
    if let Some(w) = WRITER.get() {
        let _ = w.clone().write(b"");
    }
}

/// Access lines dropped so far because the queue was full.
pub fn dropped_lines() -> u64 {
    WRITER
        .get()
        .map_or(0, |w| w.error_counter().dropped_lines() as u64)
}

/// What one request logs.
pub struct Entry<'a> {
    /// The TCP peer.
    pub client: Option<SocketAddr>,
    pub req: &'a RequestHeader,
    /// `https` or `http` (`$scheme`).
    pub scheme: &'static str,
    /// The final status sent (never an interim 1xx).
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    pub duration: Duration,
    pub route: &'a str,
    pub upstream: &'a str,
    pub upstream_addr: Option<SocketAddr>,
    /// The user a policy verified (basic auth). `None`: `$remote_user` is the user name of
    /// the request's `Authorization: Basic` credentials, unverified, as nginx logs it
    /// without `auth_basic`.
    pub remote_user: Option<&'a str>,
    /// `$request_id` (formatted as 32 hex digits).
    pub request_id: u128,
    /// The connection's TLS parameters (`None` on plain HTTP).
    pub tls: Option<&'a pingora_core::protocols::tls::SslDigest>,
}

/// Writes the access line of `e` in `format` (nothing for `off`).
pub fn log(format: &AccessLog, e: &Entry<'_>) {
    static COMBINED: OnceLock<AccessFormat> = OnceLock::new();
    let parts = match format {
        AccessLog::Off => return,
        AccessLog::Combined => &COMBINED.get_or_init(AccessFormat::combined).parts,
        AccessLog::Custom(f) => &f.parts,
        AccessLog::Json => return write_line(json(e).as_bytes()),
    };
    // Rendered into this thread's buffer: the queue's copy is the line's one allocation.
    LINE.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        render_into(&mut buf, parts, e);
        write_line(buf.as_bytes());
        if buf.capacity() > LINE_BUFFER_KEPT {
            *buf = String::new();
        }
    });
}

thread_local! {
    /// The line [`log`] renders a text format into, reused by each request of this thread.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A line buffer that grew past this (a request with huge logged fields) is not kept.
const LINE_BUFFER_KEPT: usize = 16 << 10;

fn write_line(line: &[u8]) {
    match WRITER.get() {
        // The non-blocking writer copies the line into its queue.
        Some(w) => {
            let _ = w.clone().write_all(line);
        }
        // Before `start_writer` (tests, benchmarks): straight to stdout.
        None => {
            let _ = std::io::stdout().lock().write_all(line);
        }
    }
}

/// [`push_escaped`] into a new string.
#[cfg(test)]
fn escape(v: &str) -> String {
    let mut out = String::new();
    push_escaped(&mut out, v);
    out
}

/// Appends `v` to `out` with nginx's escaping of logged variables (`log_format ...
/// escape=default`): `"`, `\`, control bytes and bytes above 0x7E as `\xHH`, so a quoted
/// field always ends at its own quote.
fn push_escaped(out: &mut String, v: &str) {
    let plain = |b: u8| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
    if v.bytes().all(plain) {
        out.push_str(v);
        return;
    }
    for b in v.bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
}

/// `$server_protocol`.
fn protocol(v: http::Version) -> &'static str {
    if v == http::Version::HTTP_2 {
        "HTTP/2.0"
    } else if v == http::Version::HTTP_11 {
        "HTTP/1.1"
    } else if v == http::Version::HTTP_10 {
        "HTTP/1.0"
    } else if v == http::Version::HTTP_09 {
        "HTTP/0.9"
    } else if v == http::Version::HTTP_3 {
        "HTTP/3.0"
    } else {
        "-"
    }
}

/// The target in origin form (`/path?q`), as nginx's `$request_uri` and `$request` show it
/// for every HTTP version; HTTP/2 requests carry the scheme and authority in their URI.
fn origin_form(req: &RequestHeader) -> Cow<'_, str> {
    match req.uri.path_and_query() {
        Some(p) => Cow::Borrowed(p.as_str()),
        None => Cow::Owned(req.uri.to_string()),
    }
}

/// The user name of `Authorization: Basic` credentials (RFC 7617: base64 of `user:pass`),
/// not verified; `None` without such credentials, as nginx's `$remote_user`.
fn basic_user(req: &RequestHeader) -> Option<String> {
    use base64::Engine as _;
    let v = req.headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .ok()?;
    let colon = raw.iter().position(|b| *b == b':')?;
    let user = &raw[..colon];
    (!user.is_empty()).then(|| String::from_utf8_lossy(user).into_owned())
}

/// Local time (after `TZ`) as `$time_local` and `$time_iso8601` show it, computed once a
/// second per thread.
struct Clock {
    second: u64,
    local: String,
    iso: String,
}

thread_local! {
    static CLOCK: RefCell<Clock> = const {
        RefCell::new(Clock { second: u64::MAX, local: String::new(), iso: String::new() })
    };
}

/// `(time_local, time_iso8601)` of `now`, e.g. `07/Dec/2026:14:09:18 +0800` and
/// `2026-12-07T14:09:18+08:00`. chrono reads `TZ` (a zone name from /usr/share/zoneinfo or a
/// POSIX rule), else /etc/localtime, as libc's `localtime` does for nginx.
fn with_time<R>(now: SystemTime, f: impl FnOnce(&str, &str) -> R) -> R {
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CLOCK.with(|c| {
        let mut c = c.borrow_mut();
        if c.second != second {
            let t = chrono::DateTime::<chrono::Local>::from(now);
            c.local = t.format("%d/%b/%Y:%H:%M:%S %z").to_string();
            c.iso = t.format("%Y-%m-%dT%H:%M:%S%:z").to_string();
            c.second = second;
        }
        f(&c.local, &c.iso)
    })
}

#[cfg(test)]
fn render(parts: &[LogPart], e: &Entry<'_>) -> String {
    let mut out = String::new();
    render_into(&mut out, parts, e);
    out
}

/// Appends the line of `e` in `parts`, with its newline, to `out`: each variable escaped
/// ([`push_escaped`]), an empty one as `-` (nginx's `log_format`).
fn render_into(out: &mut String, parts: &[LogPart], e: &Entry<'_>) {
    let now = SystemTime::now();
    for part in parts {
        match part {
            LogPart::Text(t) => out.push_str(t),
            LogPart::Var(v) => {
                let start = out.len();
                write_var(out, v, e, now);
                if out.len() == start {
                    out.push('-');
                }
            }
        }
    }
    out.push('\n');
}

/// Appends one variable, escaped, to `out` (nothing when it is empty). The variables of the
/// combined format are written in place (their only definition: [`value`] renders them
/// here); the others go through [`value`].
fn write_var(out: &mut String, v: &LogVar, e: &Entry<'_>, now: SystemTime) {
    let req = e.req;
    // Numbers, addresses and the time need no escaping.
    let _ = match v {
        LogVar::RemoteAddr => match e.client {
            Some(c) => write!(out, "{}", c.ip()),
            None => Ok(()),
        },
        LogVar::TimeLocal => {
            with_time(now, |local, _| out.push_str(local));
            Ok(())
        }
        LogVar::Request => {
            push_escaped(out, req.method.as_str());
            out.push(' ');
            push_escaped(out, &origin_form(req));
            out.push(' ');
            out.push_str(protocol(req.version));
            Ok(())
        }
        LogVar::Status => write!(out, "{}", e.status),
        LogVar::BodyBytesSent => write!(out, "{}", e.bytes),
        LogVar::RequestTime => write!(out, "{:.3}", e.duration.as_secs_f64()),
        _ => {
            push_escaped(out, &value(v, e, now));
            Ok(())
        }
    };
}

/// The value of one variable; empty is written as `-`.
fn value<'a>(v: &LogVar, e: &Entry<'a>, now: SystemTime) -> Cow<'a, str> {
    let req = e.req;
    match v {
        // Written in place by `write_var`, which never asks `value` for them; as it writes
        // them, so the request line comes escaped.
        LogVar::RemoteAddr
        | LogVar::TimeLocal
        | LogVar::Request
        | LogVar::Status
        | LogVar::BodyBytesSent
        | LogVar::RequestTime => {
            let mut out = String::new();
            write_var(&mut out, v, e, now);
            out.into()
        }
        LogVar::RemotePort => e.client.map_or("".into(), |c| c.port().to_string().into()),
        LogVar::RemoteUser => match e.remote_user {
            Some(u) => u.into(),
            None => basic_user(req).map_or("".into(), Cow::Owned),
        },
        LogVar::TimeIso8601 => with_time(now, |_, iso| iso.to_owned()).into(),
        LogVar::Msec => {
            let d = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            format!("{}.{:03}", d.as_secs(), d.subsec_millis()).into()
        }
        LogVar::RequestMethod => req.method.as_str().into(),
        LogVar::RequestUri => origin_form(req),
        LogVar::Uri => req.uri.path().into(),
        LogVar::Args => req.uri.query().unwrap_or("").into(),
        LogVar::IsArgs => (if req.uri.query().is_some() { "?" } else { "" }).into(),
        LogVar::ServerProtocol => protocol(req.version).into(),
        LogVar::Host => crate::headers::request_host(req).map_or("".into(), gateway_routing::normalize_host),
        LogVar::Scheme => e.scheme.into(),
        LogVar::Http(name) => header(req, name),
        LogVar::Route => e.route.into(),
        LogVar::Upstream => e.upstream.into(),
        LogVar::UpstreamAddr => e.upstream_addr.map_or("".into(), |a| a.to_string().into()),
        LogVar::RequestId => format!("{:032x}", e.request_id).into(),
        LogVar::SslProtocol => e.tls.map_or("".into(), crate::tls_names::protocol),
        LogVar::SslCipher => e.tls.map_or("".into(), crate::tls_names::cipher),
        LogVar::SslCurve => e
            .tls
            .map_or("".into(), |d| crate::tls_names::group(d).to_owned().into()),
    }
}

/// A request header's value; several fields of the name joined with `, ` (RFC 9110 §5.3).
fn header<'a>(req: &'a RequestHeader, name: &str) -> Cow<'a, str> {
    // A value that is not UTF-8 is still logged (its odd bytes as U+FFFD, then escaped),
    // never blanked: a client could otherwise hide its User-Agent from the log.
    let mut values = req
        .headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
    let Some(first) = values.next() else {
        return "".into();
    };
    match values.next() {
        None => first,
        Some(second) => {
            let mut all = format!("{first}, {second}");
            for v in values {
                all.push_str(", ");
                all.push_str(&v);
            }
            all.into()
        }
    }
}

/// A JSON field's value: `null` when empty.
fn some(c: Cow<'_, str>) -> Option<String> {
    (!c.is_empty()).then(|| c.into_owned())
}

fn json(e: &Entry<'_>) -> String {
    let now = SystemTime::now();
    let time = chrono::DateTime::<chrono::Local>::from(now)
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string();
    let v = serde_json::json!({
        "time": time,
        "client": e.client.map(|c| c.ip().to_string()),
        "remote_user": some(value(&LogVar::RemoteUser, e, now)),
        "method": e.req.method.as_str(),
        "uri": origin_form(e.req),
        "version": protocol(e.req.version),
        "host": some(value(&LogVar::Host, e, now)),
        "scheme": e.scheme,
        "status": e.status,
        "bytes": e.bytes,
        "duration_ms": e.duration.as_secs_f64() * 1000.0,
        "route": e.route,
        "upstream": e.upstream,
        "referer": some(header(e.req, "referer")).unwrap_or_else(|| "-".into()),
        "user_agent": some(header(e.req, "user-agent")).unwrap_or_else(|| "-".into()),
        "x_forwarded_for": some(header(e.req, "x-forwarded-for")),
        "request_id": format!("{:032x}", e.request_id),
        "tls_version": e.tls.map(crate::tls_names::protocol),
        "tls_cipher": e.tls.map(crate::tls_names::cipher),
        "tls_group": e.tls.map(crate::tls_names::group).filter(|g| !g.is_empty()),
    });
    format!("{v}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(req: &RequestHeader) -> Entry<'_> {
        Entry {
            client: Some("192.0.2.7:5151".parse().unwrap()),
            req,
            scheme: "https",
            status: 200,
            bytes: 12,
            duration: Duration::from_millis(3),
            route: "app",
            upstream: "backend",
            upstream_addr: None,
            remote_user: None,
            request_id: 0xfeed,
            tls: None,
        }
    }

    #[test]
    fn a_header_that_is_not_utf8_is_logged_not_blanked() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("user-agent", http::HeaderValue::from_bytes(b"ua\xe9z").unwrap())
            .unwrap();
        assert_eq!(escape(&header(&req, "user-agent")), "ua\\xEF\\xBF\\xBDz");
    }

    #[test]
    fn logged_fields_are_escaped_like_nginx() {
        assert_eq!(escape("Mozilla/5.0"), "Mozilla/5.0");
        assert_eq!(escape("r\"ef\\"), "r\\x22ef\\x5C");
        assert_eq!(escape("a\tb\u{e9}"), "a\\x09b\\xC3\\xA9");
    }

    #[test]
    fn the_request_line_is_in_origin_form_for_http2() {
        // As Pingora's h2 server builds it: the target in absolute form (`:authority`).
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.set_uri(http::Uri::from_static("https://example.com:8443/a/b?q=1"));
        req.set_version(http::Version::HTTP_2);
        let f = AccessFormat::compile("t", "\"$request\" $request_uri $uri $args $host").unwrap();
        assert_eq!(
            render(&f.parts, &entry(&req)),
            "\"GET /a/b?q=1 HTTP/2.0\" /a/b?q=1 /a/b q=1 example.com\n"
        );
    }

    #[test]
    fn remote_user_comes_from_basic_credentials_unless_verified() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        // alice:secret
        req.insert_header("authorization", "Basic YWxpY2U6c2VjcmV0")
            .unwrap();
        let f = AccessFormat::compile("t", "$remote_user").unwrap();
        assert_eq!(render(&f.parts, &entry(&req)), "alice\n");
        let mut verified = entry(&req);
        verified.remote_user = Some("bob");
        assert_eq!(render(&f.parts, &verified), "bob\n");
        req.insert_header("authorization", "Bearer abc").unwrap();
        assert_eq!(render(&f.parts, &entry(&req)), "-\n");
        req.insert_header("authorization", "Basic bm9jb2xvbg==").unwrap(); // "nocolon"
        assert_eq!(render(&f.parts, &entry(&req)), "-\n");
    }

    #[test]
    fn request_id_is_32_hex_digits_in_lines_and_json() {
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        let f = AccessFormat::compile("t", "id=$request_id").unwrap();
        assert_eq!(
            render(&f.parts, &entry(&req)),
            "id=0000000000000000000000000000feed\n"
        );
        let v: serde_json::Value = serde_json::from_str(&json(&entry(&req))).unwrap();
        assert_eq!(v["request_id"], "0000000000000000000000000000feed");
    }

    #[test]
    fn headers_are_joined_and_missing_values_are_dashes() {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        req.append_header("x-forwarded-for", "10.0.0.1").unwrap();
        req.append_header("x-forwarded-for", "10.0.0.2").unwrap();
        let f = AccessFormat::compile("t", "$http_x_forwarded_for|$http_referer|$args|$is_args").unwrap();
        assert_eq!(render(&f.parts, &entry(&req)), "10.0.0.1, 10.0.0.2|-|-|-\n");
    }
}
