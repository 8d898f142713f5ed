//! Helpers of the integration tests: imports, and the output read back as TOML.
#![allow(dead_code)]

use gateway_nginx_import::{import_str, Import};
use std::path::Path;
use toml_edit::{DocumentMut, Item, Table};

/// Translates `text` as `/nonexistent/nginx.conf` (no include can match by accident).
pub fn imp(text: &str) -> Import {
    match import_str(text, Path::new("/nonexistent/nginx.conf")) {
        Ok(i) => i,
        Err(e) => panic!("import failed: {e}\n{text}"),
    }
}

/// The output as a TOML document (the test fails when it is not TOML).
pub fn doc(i: &Import) -> DocumentMut {
    match i.toml.parse::<DocumentMut>() {
        Ok(d) => d,
        Err(e) => panic!("not TOML: {e}\n{}", i.toml),
    }
}

/// The item at a key path (`["upstreams", "api", "address"]`).
pub fn item<'d>(doc: &'d DocumentMut, path: &[&str]) -> Option<&'d Item> {
    let (first, rest) = path.split_first()?;
    let mut it = doc.get(first)?;
    for k in rest {
        it = it.get(*k)?;
    }
    Some(it)
}

pub fn str_at<'d>(doc: &'d DocumentMut, path: &[&str]) -> Option<&'d str> {
    item(doc, path)?.as_str()
}

pub fn int_at(doc: &DocumentMut, path: &[&str]) -> Option<i64> {
    item(doc, path)?.as_integer()
}

pub fn bool_at(doc: &DocumentMut, path: &[&str]) -> Option<bool> {
    item(doc, path)?.as_bool()
}

/// The strings of an array item.
pub fn strs(item: Option<&Item>) -> Vec<String> {
    item.and_then(Item::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

pub fn routes(doc: &DocumentMut) -> Vec<&Table> {
    doc.get("routes")
        .and_then(Item::as_array_of_tables)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// The route named `name` (the test fails when there is none).
pub fn route<'d>(doc: &'d DocumentMut, name: &str) -> &'d Table {
    match routes(doc).into_iter().find(|t| get(t, "name") == Some(name)) {
        Some(t) => t,
        None => panic!("no route {name} in\n{doc}"),
    }
}

pub fn get<'t>(t: &'t Table, key: &str) -> Option<&'t str> {
    t.get(key).and_then(Item::as_str)
}

pub fn get_bool(t: &Table, key: &str) -> Option<bool> {
    t.get(key).and_then(Item::as_bool)
}

/// Every note, one per line, as the CLI prints them.
pub fn notes_text(i: &Import) -> String {
    i.notes
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a note is about the directive on `line` that starts with `directive`.
pub fn has_note(i: &Import, line: usize, directive: &str) -> bool {
    i.notes
        .iter()
        .any(|n| n.line == line && n.directive.starts_with(directive))
}

/// An `http { server { listen 443 ssl; ... } }` around `body` (server level).
pub fn https_server(body: &str) -> String {
    format!(
        "http {{\n  server {{\n    listen 443 ssl;\n    ssl_certificate /c/fullchain.pem;\n    ssl_certificate_key /c/privkey.pem;\n{body}\n  }}\n}}\n"
    )
}

/// Lines joined, so that a test reads its line numbers off the array (index + 1).
pub fn conf(lines: &[&str]) -> String {
    lines.join("\n") + "\n"
}
