//! One access line per request on stdout, in nginx's combined format or as JSON.

use gateway_config::AccessLog;
use pingora_http::RequestHeader;
use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

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
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
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
        header(e.req, "referer").replace('"', "\\\""),
        header(e.req, "user-agent").replace('"', "\\\""),
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
