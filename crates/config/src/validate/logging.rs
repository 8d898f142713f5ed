//! `[logging]`: the access log (format, named formats, file) and the stderr log (level, format).

use super::{closest, Ctx};
use crate::file::{self, S};
use crate::model::{AccessFormat, AccessLog, LogFormat, Logging};
use std::collections::BTreeMap;

/// Names `access_log` gives to the built-in choices; a `[logging.formats]` key may not take one.
const BUILT_IN: [&str; 3] = ["combined", "json", "off"];

pub(super) fn logging(cx: &mut Ctx<'_>, l: &file::Logging) -> Logging {
    let formats = formats(cx, l.formats.as_ref());
    let access_log = match &l.access_log {
        None => AccessLog::Combined,
        Some(s) => match cx.text(s) {
            None => AccessLog::Combined,
            Some(t) => match t.as_str() {
                "json" => AccessLog::Json,
                "combined" => AccessLog::Combined,
                "off" => AccessLog::Off,
                other => match formats.iter().find(|f| f.name == other) {
                    Some(f) => AccessLog::Custom(f.clone()),
                    // A named format with errors was reported already.
                    None if l.formats.as_ref().is_some_and(|m| m.contains_key(other)) => AccessLog::Combined,
                    None => {
                        let names = BUILT_IN
                            .iter()
                            .copied()
                            .chain(formats.iter().map(|f| f.name.as_str()));
                        let hint = closest(other, names.clone())
                            .map(|c| format!("; did you mean `{c}`?"))
                            .unwrap_or_default();
                        let all: Vec<&str> = names.collect();
                        cx.err(
                            s.span().start,
                            format!(
                                "access_log is `combined`, `json`, `off` or a name from [logging.formats], not `{other}` (known: {}){hint}",
                                all.join(", ")
                            ),
                        )
                        .unwrap_or(AccessLog::Combined)
                    }
                },
            },
        },
    };
    let access_log_file = l.access_log_file.as_ref().and_then(|s| cx.path(s));
    let level = match &l.level {
        None => "info".to_owned(),
        Some(s) => match cx.text(s) {
            None => "info".to_owned(),
            Some(t) => match check_level(&t) {
                Ok(()) => t,
                Err(msg) => cx.err(s.span().start, msg).unwrap_or_else(|| "info".to_owned()),
            },
        },
    };
    let format = match &l.format {
        None => LogFormat::Text,
        Some(s) => match cx.text(s).as_deref() {
            Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => cx
                .err(
                    s.span().start,
                    format!("format is `text` or `json`, not `{other}`"),
                )
                .unwrap_or(LogFormat::Text),
            None => LogFormat::Text,
        },
    };
    Logging {
        access_log,
        access_log_file,
        level,
        format,
    }
}

/// `[logging.formats]`: each compiled (nginx `log_format` syntax, no `${ENV}` expansion:
/// `${name}` is nginx's braced variable there). Errors point into the format text when it
/// is written without escapes, else at its start.
fn formats(cx: &mut Ctx<'_>, map: Option<&BTreeMap<String, S>>) -> Vec<AccessFormat> {
    let mut out = Vec::new();
    for (name, text) in map.into_iter().flatten() {
        let span = text.span();
        if BUILT_IN.contains(&name.as_str()) || name.is_empty() {
            cx.err::<()>(
                span.start,
                format!("`{name}` cannot name a format: combined, json and off are built in"),
            );
            continue;
        }
        let raw = text.get_ref();
        // `'...'` or `"..."` without escapes: the text starts one byte after the span.
        let exact = span.end - span.start == raw.len() + 2;
        match AccessFormat::compile(name, raw) {
            Ok(f) => out.push(f),
            Err(errors) => {
                for e in errors {
                    let at = if exact {
                        span.start + 1 + e.offset
                    } else {
                        span.start
                    };
                    cx.err::<()>(at, format!("[logging.formats] {name}: {}", e.message));
                }
            }
        }
    }
    out
}

/// `level`: a `tracing` filter (what `RUST_LOG` takes), with one rule stricter than its
/// parser: a directive without `=` or `[` must be a level. `tracing` would read a bare word
/// such as `inf0` as a target name at `trace` and show nothing else at all.
pub(crate) fn check_level(text: &str) -> Result<(), String> {
    use std::str::FromStr;
    use tracing_subscriber::filter::{Directive, LevelFilter};
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    if text.trim().is_empty() {
        return Err("level is empty; write trace, debug, info, warn, error or off".into());
    }
    for d in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !d.contains('=') && !d.contains('[');
        if bare && LevelFilter::from_str(d).is_err() {
            let hint = closest(&d.to_ascii_lowercase(), LEVELS.iter().copied())
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            return Err(format!(
                "`{d}` is not a log level: write trace, debug, info, warn, error or off, optionally with per-module directives such as `info,gateway=debug` (for one module: `{d}=debug`){hint}"
            ));
        }
        if Directive::from_str(d).is_err() {
            return Err(format!(
                "`{d}` is not a log directive: write a level (trace, debug, info, warn, error, off) or `module=level` such as `gateway=debug`"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_level;

    #[test]
    fn levels_and_directives_are_checked() {
        for ok in [
            "info",
            "WARN",
            "debug,pingora_core=warn",
            "info,gateway=debug",
            "off",
            "gateway_proxy=trace",
        ] {
            assert_eq!(check_level(ok), Ok(()), "{ok}");
        }
        let e = check_level("inf0").unwrap_err();
        assert!(e.contains("did you mean `info`"), "{e}");
        assert!(check_level("info,gateway=loud").is_err());
        assert!(check_level("").is_err());
        assert!(check_level("gateway").is_err());
    }
}
