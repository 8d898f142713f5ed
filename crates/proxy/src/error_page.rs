//! The pages of the error responses the gateway makes itself: built in, or from the
//! `[errors] pages` directory, read when the configuration is loaded (each reload reads it
//! again: [`ErrorPages::load`], called by `Snapshot::new`).
//!
//! Format, from the request's `Accept` (q-values): HTML for a client that prefers
//! `text/html` (or `application/xhtml+xml`), JSON for one that prefers `application/json`
//! (equal q-values: the one listed first), plain text otherwise, `*/*` included (curl). A page
//! names the status, its reason and the request id, nothing else: no upstream name, address
//! or error text.
//!
//! Files of the directory (others are ignored; a `.html` or `.json` file with another name is
//! ignored with a warning):
//!
//! - `NNN.html`, `NNN.json`: the page of status NNN (400 to 599), e.g. `502.html`, `404.json`;
//! - `maintenance.html`, `maintenance.json`: the 503 of a route in maintenance (else `503.*`);
//! - `error.html`, `error.json`: every status without a page of its own.
//!
//! A page may contain `{{status}}`, `{{reason}}` and `{{request_id}}`, replaced with the values
//! escaped for the file's kind (HTML, or a JSON string's content). A file over
//! [`MAX_PAGE_BYTES`], unreadable or not UTF-8 is refused with a warning when the
//! configuration is loaded, and the built-in page is served in its place. Plain text is
//! always built in.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, ACCEPT};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The largest page file read (bigger ones are refused at load with a warning).
pub const MAX_PAGE_BYTES: u64 = 64 << 10;

/// Directory entries looked at, at most (the names that count are a few hundred).
const MAX_ENTRIES: usize = 4096;

/// What the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Json,
    Plain,
}

impl Format {
    /// The format for a request with these headers (every `Accept` field counts).
    pub fn of(headers: &HeaderMap) -> Format {
        Self::negotiate(headers.get_all(ACCEPT).iter().filter_map(|v| v.to_str().ok()))
    }

    /// The format for the `Accept` value Pingora hands over (`None`: no such field).
    pub fn of_accept(accept: Option<&HeaderValue>) -> Format {
        Self::negotiate(accept.and_then(|v| v.to_str().ok()))
    }

    /// The format for a raw HTTP/1.x head, complete or not (a head the edge refused before
    /// it was parsed): the `Accept` fields among its lines, if they arrived.
    pub fn of_raw_head(head: &[u8]) -> Format {
        let mut values = Vec::new();
        for line in head.split(|&b| b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            if line[..colon].eq_ignore_ascii_case(b"accept") {
                if let Ok(v) = std::str::from_utf8(&line[colon + 1..]) {
                    values.push(v);
                }
            }
        }
        Self::negotiate(values)
    }

    /// The client's preferred of HTML and JSON by q-value (a tie: the one listed first),
    /// plain text when it names neither (wildcards do not count) or refuses both (`q=0`).
    pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a str>) -> Format {
        // (q in thousandths, position of first mention) for HTML and JSON.
        let mut html: Option<(u16, usize)> = None;
        let mut json: Option<(u16, usize)> = None;
        let mut position = 0;
        for value in values {
            for range in value.split(',') {
                position += 1;
                let mut params = range.split(';');
                let media = params.next().unwrap_or("").trim();
                let q = params
                    .filter_map(|p| p.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                    .map_or(Some(1000), |(_, v)| qvalue(v.trim()));
                let Some(q) = q else { continue };
                let slot = if media.eq_ignore_ascii_case("text/html")
                    || media.eq_ignore_ascii_case("application/xhtml+xml")
                {
                    &mut html
                } else if media.eq_ignore_ascii_case("application/json") {
                    &mut json
                } else {
                    continue;
                };
                *slot = Some(match *slot {
                    Some((best, first)) => (best.max(q), first),
                    None => (q, position),
                });
            }
        }
        let html = html.filter(|(q, _)| *q > 0);
        let json = json.filter(|(q, _)| *q > 0);
        match (html, json) {
            (Some(h), Some(j)) if j.0 > h.0 || (j.0 == h.0 && j.1 < h.1) => Format::Json,
            (Some(_), _) => Format::Html,
            (None, Some(_)) => Format::Json,
            (None, None) => Format::Plain,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Json => "application/json",
            Format::Plain => "text/plain; charset=utf-8",
        }
    }
}

/// A q-value (RFC 9110 §12.4.2) in thousandths; `None` when malformed (the range is ignored).
fn qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole = match int {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    let mut thousandths = 0u16;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    let q = whole + thousandths;
    (q <= 1000).then_some(q)
}

/// One piece of a page file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Status,
    Reason,
    RequestId,
}

/// A page file, split at its placeholders once, when it is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template(Vec<Part>);

impl Template {
    fn compile(text: &str) -> Template {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let Some(len) = rest[open + 2..].find("}}") else {
                break;
            };
            let var = match rest[open + 2..open + 2 + len].trim() {
                "status" => Some(Part::Status),
                "reason" => Some(Part::Reason),
                "request_id" => Some(Part::RequestId),
                _ => None,
            };
            let end = open + 2 + len + 2;
            match var {
                Some(v) => {
                    literal.push_str(&rest[..open]);
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(v);
                }
                // Not a placeholder: kept as it is.
                None => literal.push_str(&rest[..end]),
            }
            rest = &rest[end..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Template(parts)
    }

    fn render(&self, status: u16, reason: &str, id: &str, format: Format) -> String {
        let escape = |v: &str| match format {
            Format::Json => json_escape(v),
            _ => html_escape(v),
        };
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Status => out.push_str(&status.to_string()),
                Part::Reason => out.push_str(&escape(reason)),
                Part::RequestId => out.push_str(&escape(id)),
            }
        }
        out
    }
}

fn html_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The content of a JSON string (without its quotes).
fn json_escape(v: &str) -> String {
    let quoted = serde_json::Value::String(v.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// Which page a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Name {
    Status(u16),
    Maintenance,
    Any,
}

fn kind_key(format: Format) -> u8 {
    match format {
        Format::Html => 0,
        Format::Json => 1,
        Format::Plain => 2,
    }
}

/// The custom pages of one configuration (empty: the built-in pages only).
#[derive(Debug, Default)]
pub struct ErrorPages {
    pages: BTreeMap<(Name, u8), Template>,
}

/// One rendered page.
pub struct Page {
    pub content_type: &'static str,
    pub body: Bytes,
}

impl ErrorPages {
    /// Reads the pages of `dir` (`[errors] pages`); every file refused is logged as a warning
    /// and leaves the built-in page in its place. Never fails: a directory that cannot be
    /// read (removed since the configuration was checked) gives the built-in pages.
    pub fn load(dir: Option<&Path>) -> ErrorPages {
        let mut pages = ErrorPages::default();
        let Some(dir) = dir else {
            return pages;
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read the error pages directory; the built-in pages are served");
                return pages;
            }
        };
        for entry in entries.flatten().take(MAX_ENTRIES) {
            let file_name = entry.file_name();
            let Some(file) = file_name.to_str() else { continue };
            let Some((stem, ext)) = file.rsplit_once('.') else {
                continue;
            };
            let format = match ext {
                "html" => Format::Html,
                "json" => Format::Json,
                _ => continue,
            };
            let path = entry.path();
            let Some(name) = page_name(stem) else {
                tracing::warn!(file = %path.display(), "not an error page name (NNN.html for a status 400-599, maintenance.html, error.html; .json alike): ignored");
                continue;
            };
            match read_page(&path) {
                Ok(text) => {
                    pages
                        .pages
                        .insert((name, kind_key(format)), Template::compile(&text));
                }
                Err(why) => {
                    tracing::warn!(file = %path.display(), "error page refused: {why}; the built-in page is served instead");
                }
            }
        }
        pages
    }

    /// The number of custom pages loaded.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    fn find(&self, status: u16, maintenance: bool, format: Format) -> Option<&Template> {
        let kind = kind_key(format);
        let maintenance = maintenance.then_some(Name::Maintenance);
        [maintenance, Some(Name::Status(status)), Some(Name::Any)]
            .into_iter()
            .flatten()
            .find_map(|name| self.pages.get(&(name, kind)))
    }
}

fn page_name(stem: &str) -> Option<Name> {
    match stem {
        "maintenance" => Some(Name::Maintenance),
        "error" => Some(Name::Any),
        s if s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u16 = s.parse().ok()?;
            (400..=599).contains(&n).then_some(Name::Status(n))
        }
        _ => None,
    }
}

/// A page file's text, or why it is refused.
fn read_page(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let too_big = |n: u64| format!("{n} bytes, over the limit of {} KiB", MAX_PAGE_BYTES >> 10);
    if meta.len() > MAX_PAGE_BYTES {
        return Err(too_big(meta.len()));
    }
    // Bounded even if the file grows meanwhile.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_PAGE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_PAGE_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())
}

/// A short sentence for the built-in HTML page (none for other statuses).
fn message(status: u16, maintenance: bool) -> &'static str {
    if maintenance {
        return "This service is down for maintenance. Please try again later.";
    }
    match status {
        400 => "The request could not be understood.",
        401 => "This page needs you to sign in.",
        403 => "You do not have access to this page.",
        404 => "There is nothing at this address.",
        405 => "This method is not allowed here.",
        408 => "The request took too long to arrive.",
        413 => "The request body is too large.",
        414 => "The address is too long.",
        429 => "Too many requests. Please wait a moment and try again.",
        431 => "The request headers are too large.",
        500 => "Something went wrong on our side.",
        501 => "This request is not supported.",
        502 => "The service behind this address is not answering. Please try again in a moment.",
        503 => "The service is temporarily unavailable. Please try again later.",
        504 => "The service behind this address took too long to answer.",
        _ => "",
    }
}

/// The page for `status` in `format`: the custom one if `pages` has it, else built in.
pub fn render(
    pages: Option<&ErrorPages>,
    status: u16,
    maintenance: bool,
    format: Format,
    request_id: u128,
) -> Page {
    let reason = crate::respond::reason(status);
    let id = format!("{request_id:032x}");
    let custom = match format {
        Format::Plain => None,
        _ => pages.and_then(|p| p.find(status, maintenance, format)),
    };
    let body = match (custom, format) {
        (Some(t), _) => t.render(status, reason, &id, format),
        (None, Format::Html) => {
            let message = message(status, maintenance);
            let message = if message.is_empty() {
                String::new()
            } else {
                format!("<p>{message}</p>\n")
            };
            format!(
                "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
                 <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
                 <meta name=\"robots\" content=\"noindex\">\n<title>{status} {reason}</title>\n\
                 <style>body{{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;color:#222}}\
                 h1{{font-size:1.5em}}.id{{color:#666;font-size:.85em}}</style>\n</head>\n<body>\n\
                 <h1>{status} {reason}</h1>\n{message}<p class=\"id\">Request ID: <code>{id}</code></p>\n</body>\n</html>\n"
            )
        }
        (None, Format::Json) => format!(
            "{{\"status\":{status},\"error\":\"{}\",\"request_id\":\"{id}\"}}\n",
            json_escape(reason)
        ),
        (None, Format::Plain) => format!("{status} {reason}\nrequest id: {id}\n"),
    };
    Page {
        content_type: format.content_type(),
        body: Bytes::from(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_preferred_of_html_and_json() {
        let n = |v: &str| Format::negotiate([v]);
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        for (accept, want, why) in [
            (browser, Format::Html, ""),
            ("application/json", Format::Json, ""),
            ("application/json, text/plain, */*", Format::Json, ""),
            ("text/html;q=0.5, application/json;q=0.9", Format::Json, ""),
            ("application/json;q=0.5, text/html", Format::Html, ""),
            (
                "application/json, text/html",
                Format::Json,
                "a tie: the first listed",
            ),
            ("text/html, application/json", Format::Html, ""),
            ("*/*", Format::Plain, ""),
            ("text/*", Format::Plain, ""),
            ("", Format::Plain, ""),
            ("text/html;q=0", Format::Plain, ""),
            ("text/html;q=0, application/json;q=0.1", Format::Json, ""),
            ("TEXT/HTML ; Q=0.3", Format::Html, ""),
            ("text/html;q=2", Format::Plain, "a malformed q-value is ignored"),
            ("text/html;q=0.1234", Format::Plain, ""),
        ] {
            assert_eq!(n(accept), want, "{accept:?} {why}");
        }
        assert_eq!(
            Format::negotiate(["text/plain", "application/json"]),
            Format::Json
        );
    }

    #[test]
    fn a_raw_head_is_read_for_its_accept_fields() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nACCEPT: text/html\r\n\r\nAccept: application/json\r\n";
        assert_eq!(Format::of_raw_head(head), Format::Html);
        assert_eq!(Format::of_raw_head(b"GET /aaaaaaaaaaaa"), Format::Plain);
        assert_eq!(
            Format::of_raw_head(b"GET / HTTP/1.1\nAccept:application/json\n"),
            Format::Json
        );
    }

    #[test]
    fn qvalues() {
        assert_eq!(qvalue("1"), Some(1000));
        assert_eq!(qvalue("1.000"), Some(1000));
        assert_eq!(qvalue("1.001"), None);
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("0.05"), Some(50));
        assert_eq!(qvalue("0"), Some(0));
        assert_eq!(qvalue("x"), None);
        assert_eq!(qvalue("0.x"), None);
    }

    #[test]
    fn templates_fill_escaped_values_and_keep_other_braces() {
        let t = Template::compile("<b>{{ status }}</b> {{reason}} {{nope}} {{request_id}} {{open");
        assert_eq!(
            t.render(502, "A<B", "id", Format::Html),
            "<b>502</b> A&lt;B {{nope}} id {{open"
        );
        let t = Template::compile("{\"e\":\"{{reason}}\"}");
        assert_eq!(t.render(400, "a\"b", "x", Format::Json), "{\"e\":\"a\\\"b\"}");
    }

    #[test]
    fn built_in_pages_name_status_reason_and_id_only() {
        let id = 0xabc_u128;
        let html = render(None, 502, false, Format::Html, id);
        let text = std::str::from_utf8(&html.body).unwrap();
        assert!(text.contains("<title>502 Bad Gateway</title>"), "{text}");
        assert!(text.contains("00000000000000000000000000000abc"), "{text}");
        assert_eq!(html.content_type, "text/html; charset=utf-8");
        let json = render(None, 502, false, Format::Json, id);
        let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
        assert_eq!(v["status"], 502);
        assert_eq!(v["error"], "Bad Gateway");
        assert_eq!(v["request_id"], "00000000000000000000000000000abc");
        let plain = render(None, 404, false, Format::Plain, id);
        assert!(plain.body.starts_with(b"404 Not Found\n"));
        let maintenance = render(None, 503, true, Format::Html, id);
        assert!(std::str::from_utf8(&maintenance.body)
            .unwrap()
            .contains("maintenance"));
    }

    #[test]
    fn a_directory_of_pages_is_read_with_its_limits() {
        let dir = std::env::temp_dir().join(format!("gateway-error-pages-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("502.html"), "custom {{status}} {{request_id}}").unwrap();
        std::fs::write(dir.join("maintenance.html"), "down").unwrap();
        std::fs::write(dir.join("error.json"), "{\"s\":{{status}}}").unwrap();
        std::fs::write(dir.join("404.html"), "x".repeat(MAX_PAGE_BYTES as usize + 1)).unwrap();
        std::fs::write(dir.join("600.html"), "no").unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        std::fs::write(dir.join("403.html"), b"\xff\xfe").unwrap();
        let pages = ErrorPages::load(Some(&dir));
        assert_eq!(pages.len(), 3);
        let body = |s, m, f| render(Some(&pages), s, m, f, 1).body;
        assert_eq!(
            &body(502, false, Format::Html)[..],
            b"custom 502 00000000000000000000000000000001"
        );
        assert_eq!(&body(503, true, Format::Html)[..], b"down");
        assert!(body(503, false, Format::Html).starts_with(b"<!DOCTYPE html>"));
        assert!(
            body(404, false, Format::Html).starts_with(b"<!DOCTYPE html>"),
            "too big: built in"
        );
        assert!(
            body(403, false, Format::Html).starts_with(b"<!DOCTYPE html>"),
            "not UTF-8: built in"
        );
        assert_eq!(&body(429, false, Format::Json)[..], b"{\"s\":429}");
        assert!(body(502, false, Format::Plain).starts_with(b"502 Bad Gateway\n"));
        std::fs::remove_dir_all(&dir).unwrap();
        // Gone since it was checked: the built-in pages, no panic.
        assert!(ErrorPages::load(Some(&dir)).is_empty());
        assert!(ErrorPages::load(None).is_empty());
    }
}
