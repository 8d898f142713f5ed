//! `proxy.toml`: the file format, `${ENV}` expansion and validation into a typed model.
//!
//! The flow is one way: text → [`file::File`] (serde, `deny_unknown_fields`, spans kept) →
//! [`model::Config`] (no serde, every value checked). Every problem is collected in one
//! pass and reported as `file:line:column: error: reason`, like `nginx -t`.

mod error;
pub mod file;
pub mod model;
mod validate;
pub mod values;

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
    let file = deserialize(src, &loc)?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    validate::convert(file, &loc, path, &base, env)
}

/// Deserializes, collecting every unknown key rather than stopping at the first.
///
/// serde stops at the first unknown field; after recording it, the `key = value` pair is
/// blanked out (spaces keep every other offset valid) and the text is read again.
fn deserialize(src: &str, loc: &Locator<'_>) -> Result<file::File, ConfigErrors> {
    let mut text = src.to_owned();
    let mut errors = Vec::new();
    for _ in 0..64 {
        match toml_edit::de::from_str::<file::File>(&text) {
            Ok(file) if errors.is_empty() => return Ok(file),
            Ok(_) => break,
            Err(e) => {
                let start = e.span().map(|s| s.start);
                errors.push(loc.error(start, describe_de_error(e.message())));
                let blanked = e
                    .span()
                    .filter(|_| e.message().starts_with("unknown field"))
                    .and_then(|span| blank_key_value(&text, span));
                match blanked {
                    Some(t) => text = t,
                    None => break,
                }
            }
        }
    }
    Err(ConfigErrors(errors))
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
