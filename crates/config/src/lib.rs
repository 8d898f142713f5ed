//! `proxy.toml`: the file format, `${ENV}` expansion and validation into a typed model.
//!
//! The flow is one way: text → [`file::File`] (serde, `deny_unknown_fields`, spans kept) →
//! [`model::Config`] (no serde, every value checked). Every problem is collected in one
//! pass and reported as `file:line:column: error: reason`, like `nginx -t`.

mod error;
pub mod file;
pub mod model;
mod validate;
pub(crate) mod values;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;

use error::Locator;
use std::path::Path;

/// Reads and validates a configuration file, expanding `${NAME}` from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// Like [`load`], with an explicit environment (tests, `gateway check` of another environment).
pub fn load_with_env(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    parse(&src, path, env)
}

/// Validates configuration text. `path` names the file in messages and anchors relative
/// paths (certificates, webroot) at its directory.
pub fn parse(src: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let loc = Locator::new(path, src);
    let (file, mut errors, blanked) = deserialize(src, &loc);
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    // The rest of the file (without what could not be read) is checked too.
    let Some(file) = file else {
        return Err(ConfigErrors(errors));
    };
    match validate::convert(file, &loc, path, &base, env, &blanked) {
        Ok(cfg) if errors.is_empty() => Ok(cfg),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(more) => {
            errors.extend(more.0);
            errors.sort_by_key(|e| (e.line, e.column));
            errors.dedup();
            Err(ConfigErrors(errors))
        }
    }
}

/// Deserializes, collecting every problem of the file rather than stopping at the first.
///
/// serde stops at the first error. After recording it, the text is read again without the
/// cause, blanked out with spaces (so every other offset stays valid): an unknown key or a
/// value of the wrong type loses its `key = value` pair, a syntax error its line. A key
/// blanked this way is then reported missing only by its own error.
/// Also returns the keys blanked, so that validation does not report them missing again.
fn deserialize(src: &str, loc: &Locator<'_>) -> (Option<file::File>, Vec<ConfigError>, Vec<String>) {
    let mut text = src.to_owned();
    let mut errors = Vec::new();
    let mut blanked: Vec<String> = Vec::new();
    for _ in 0..64 {
        let e = match toml_edit::de::from_str::<file::File>(&text) {
            Ok(file) => return (Some(file), errors, blanked),
            Err(e) => e,
        };
        let msg = e.message();
        if let Some(field) = missing_field(msg) {
            if blanked.iter().any(|b| b == field) {
                break;
            }
        }
        errors.push(loc.error(e.span().map(|s| s.start), describe_de_error(msg)));
        let Some(span) = e.span() else { break };
        let syntax = toml_edit::ImDocument::parse(text.as_str()).is_err();
        let next = if syntax {
            blank_line(&text, span.start)
        } else if msg.starts_with("unknown field") {
            blank_key_value(&text, span)
        } else {
            blank_pair_containing(&text, span.start).map(|(t, key)| {
                blanked.push(key);
                t
            })
        };
        match next {
            Some(t) if t != text => text = t,
            _ => break,
        }
    }
    (None, errors, blanked)
}

/// The field of serde's "missing field `name`".
fn missing_field(msg: &str) -> Option<&str> {
    msg.trim().strip_prefix("missing field `")?.split('`').next()
}

/// The text with the line holding `offset` replaced by spaces.
fn blank_line(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let mut bytes = text.as_bytes().to_vec();
    for b in &mut bytes[start..end] {
        *b = b' ';
    }
    String::from_utf8(bytes).ok()
}

/// The text without the `key = value` pair (of a table, not an inline table) whose value
/// holds `offset`, and the key's name.
fn blank_pair_containing(text: &str, offset: usize) -> Option<(String, String)> {
    let doc = toml_edit::ImDocument::parse(text.to_owned()).ok()?;
    let (start, end, key) = find_pair_containing(doc.as_item(), offset)?;
    let mut bytes = text.as_bytes().to_vec();
    for b in &mut bytes[start..end] {
        *b = b' ';
    }
    Some((String::from_utf8(bytes).ok()?, key))
}

fn find_pair_containing(item: &toml_edit::Item, offset: usize) -> Option<(usize, usize, String)> {
    use toml_edit::Item;
    let in_table = |t: &dyn toml_edit::TableLike| -> Option<(usize, usize, String)> {
        for (k, v) in t.iter() {
            if let Some(found) = find_pair_containing(v, offset) {
                return Some(found);
            }
            if let (Item::Value(val), false) = (v, t.is_dotted()) {
                let key = t.key(k)?;
                let (Some(ks), Some(vs)) = (key.span(), val.span()) else {
                    continue;
                };
                if (vs.start..vs.end.max(vs.start + 1)).contains(&offset) {
                    return Some((ks.start, vs.end, k.to_owned()));
                }
            }
        }
        None
    };
    match item {
        Item::Table(t) => in_table(t),
        Item::ArrayOfTables(a) => a.iter().find_map(|t| in_table(t)),
        Item::Value(_) | Item::None => None,
    }
}

/// Rewrites serde's message into one a person can act on, with a "did you mean".
fn describe_de_error(msg: &str) -> String {
    let msg = msg.trim();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (field, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        let best = expected
            .iter()
            .map(|c| (strsim::jaro_winkler(field, c), *c))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        return match best {
            Some((_, c)) => format!("unknown key `{field}`; did you mean `{c}`?"),
            None if expected.is_empty() => format!("unknown key `{field}`"),
            None => format!("unknown key `{field}`; expected one of: {}", expected.join(", ")),
        };
    }
    msg.replace('\n', " ")
}

/// Blanks the `key = value` whose key starts at `span.start`, if it is a plain pair.
fn blank_key_value(text: &str, span: std::ops::Range<usize>) -> Option<String> {
    let doc = toml_edit::ImDocument::parse(text.to_owned()).ok()?;
    let end = find_value_end(doc.as_item(), span.start)?;
    let mut bytes = text.as_bytes().to_vec();
    for b in &mut bytes[span.start..end] {
        *b = b' ';
    }
    String::from_utf8(bytes).ok()
}

fn find_value_end(item: &toml_edit::Item, key_start: usize) -> Option<usize> {
    use toml_edit::Item;
    let in_table = |t: &dyn toml_edit::TableLike| -> Option<usize> {
        for (k, v) in t.iter() {
            let key = t.key(k)?;
            if key.span().is_some_and(|s| s.start == key_start) {
                // Only plain values can be blanked without breaking the document.
                return match v {
                    Item::Value(val) if !t.is_dotted() => val.span().map(|s| s.end),
                    _ => None,
                };
            }
            if let Some(end) = find_value_end(v, key_start) {
                return Some(end);
            }
        }
        None
    };
    match item {
        Item::Table(t) => in_table(t),
        Item::ArrayOfTables(a) => a.iter().find_map(|t| in_table(t)),
        Item::Value(toml_edit::Value::InlineTable(_)) | Item::Value(_) | Item::None => None,
    }
}
