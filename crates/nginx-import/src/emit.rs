//! The `proxy.toml` text: sections of keys in a fixed order, each key with an optional
//! trailing comment naming the nginx line it came from, and comment lines above sections
//! and keys where the translation is approximate. Written by hand with TOML 1.0's escaping
//! (basic strings, literal strings where they read better, quoted keys where needed), so
//! that the layout and the comments are exactly as intended.

use std::fmt::Write as _;

/// A TOML value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Val {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<Val>),
    /// An inline table, keys in this order.
    Inline(Vec<(String, Val)>),
}

/// `key = value`, commented out when `disabled`.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: String,
    pub val: Val,
    /// Trailing comment: the nginx source (`nginx.conf:42: proxy_read_timeout 300s;`).
    pub src: Option<String>,
    /// Comment lines above the key.
    pub above: Vec<String>,
    pub disabled: bool,
}

/// `[header]` (or `[[header]]` when `array`) and its keys.
#[derive(Debug, Clone, Default)]
pub(crate) struct Section {
    /// The dotted key path between the brackets, already quoted where needed.
    pub header: String,
    pub array: bool,
    pub comments: Vec<String>,
    pub entries: Vec<Entry>,
}

impl Section {
    pub fn new(header: impl Into<String>) -> Self {
        Section {
            header: header.into(),
            ..Section::default()
        }
    }

    pub fn array(header: impl Into<String>) -> Self {
        Section {
            header: header.into(),
            array: true,
            ..Section::default()
        }
    }

    /// A comment line above the section (once).
    pub fn comment(&mut self, text: impl Into<String>) {
        let text = text.into();
        if !self.comments.contains(&text) {
            self.comments.push(text);
        }
    }

    /// Sets `key` (replacing an earlier value) and returns its entry.
    pub fn set(&mut self, key: &str, val: Val, src: Option<String>) -> &mut Entry {
        let i = match self.entries.iter().position(|e| e.key == key) {
            Some(i) => {
                self.entries[i].val = val;
                self.entries[i].src = src;
                self.entries[i].disabled = false;
                i
            }
            None => {
                self.entries.push(Entry {
                    key: key.to_owned(),
                    val,
                    src,
                    above: Vec::new(),
                    disabled: false,
                });
                self.entries.len() - 1
            }
        };
        &mut self.entries[i]
    }

    /// A commented-out `# key = value` line, for a setting the user may want.
    pub fn suggest(&mut self, key: &str, val: Val, why: &str) {
        let e = self.set(key, val, None);
        e.disabled = true;
        e.above.push(why.to_owned());
    }

    pub fn get(&self, key: &str) -> Option<&Val> {
        self.entries
            .iter()
            .find(|e| e.key == key && !e.disabled)
            .map(|e| &e.val)
    }

    /// The keys and values alone (comments left out), to compare two sections' content.
    pub fn content(&self) -> String {
        let mut s = String::new();
        for e in self.entries.iter().filter(|e| !e.disabled) {
            let _ = writeln!(s, "{} = {}", key(&e.key), value(&e.val));
        }
        s
    }
}

impl Entry {
    /// A comment line above the key (once).
    pub fn note(&mut self, text: impl Into<String>) -> &mut Self {
        let text = text.into();
        if !self.above.contains(&text) {
            self.above.push(text);
        }
        self
    }
}

/// Appends `s`: a blank line, its comments, its header, its keys.
pub(crate) fn render(out: &mut String, s: &Section) {
    if !out.is_empty() {
        out.push('\n');
    }
    for c in &s.comments {
        comment_line(out, "", c);
    }
    if !s.header.is_empty() {
        if s.array {
            let _ = writeln!(out, "[[{}]]", s.header);
        } else {
            let _ = writeln!(out, "[{}]", s.header);
        }
    }
    for e in &s.entries {
        for a in &e.above {
            comment_line(out, "", a);
        }
        let prefix = if e.disabled { "# " } else { "" };
        // A commented-out value stays on one line (every line of it must be a comment).
        let v = if e.disabled {
            value(&e.val)
        } else {
            value_at(&e.val, e.key.len() + 3)
        };
        let line = format!("{prefix}{} = {v}", key(&e.key));
        out.push_str(&line);
        if let Some(src) = &e.src {
            let src = clean(src);
            if !line.contains('\n') && line.chars().count() + src.chars().count() <= 110 {
                let _ = write!(out, "  # {src}");
            } else {
                out.push('\n');
                let _ = write!(out, "# ^ {src}");
            }
        }
        out.push('\n');
    }
}

/// `# text`, one line per line of `text`, control characters blanked.
pub(crate) fn comment_line(out: &mut String, indent: &str, text: &str) {
    for l in text.split('\n') {
        let l = clean(l);
        if l.is_empty() {
            let _ = writeln!(out, "{indent}#");
        } else {
            let _ = writeln!(out, "{indent}# {l}");
        }
    }
}

/// A comment's text: no control characters (TOML allows only tab in comments).
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect::<String>()
        .trim_end()
        .to_owned()
}

/// A key: bare when it can be, else a quoted string.
pub(crate) fn key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_owned()
    } else {
        basic(k)
    }
}

/// A value on one line.
pub(crate) fn value(v: &Val) -> String {
    match v {
        Val::Str(s) => string(s),
        Val::Int(i) => i.to_string(),
        Val::Bool(b) => b.to_string(),
        Val::List(items) => {
            let parts: Vec<String> = items.iter().map(value).collect();
            format!("[{}]", parts.join(", "))
        }
        Val::Inline(pairs) => {
            if pairs.is_empty() {
                return "{}".into();
            }
            let parts: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{} = {}", key(k), value(v)))
                .collect();
            format!("{{ {} }}", parts.join(", "))
        }
    }
}

/// A value for a key of `indent` characters: long lists of scalars wrap, two spaces in.
fn value_at(v: &Val, indent: usize) -> String {
    let one = value(v);
    let Val::List(items) = v else { return one };
    if indent + one.len() <= 100 {
        return one;
    }
    let mut s = String::from("[\n");
    let mut line = String::new();
    for item in items {
        let part = format!("{},", value(item));
        if !line.is_empty() && line.len() + 1 + part.len() > 96 {
            let _ = writeln!(s, "  {line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&part);
    }
    if !line.is_empty() {
        let _ = writeln!(s, "  {line}");
    }
    s.push(']');
    s
}

/// A string: literal (`'...'`) when it holds `"` or `\` and can be one, else basic.
pub(crate) fn string(s: &str) -> String {
    let literal_ok = !s.contains('\'') && !s.chars().any(|c| c.is_control() && c != '\t');
    if literal_ok && (s.contains('"') || s.contains('\\')) {
        format!("'{s}'")
    } else {
        basic(s)
    }
}

/// A basic string with TOML's escapes.
pub(crate) fn basic(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_keys() {
        assert_eq!(basic("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        assert_eq!(string("say \"hi\""), "'say \"hi\"'");
        assert_eq!(string("it's \"x\""), "\"it's \\\"x\\\"\"");
        assert_eq!(key("api"), "api");
        assert_eq!(key("X-Frame-Options"), "X-Frame-Options");
        assert_eq!(key("my.backend"), "\"my.backend\"");
        assert_eq!(key(""), "\"\"");
    }

    #[test]
    fn sections() {
        let mut s = Section::array("routes");
        s.comment("nginx.conf:12: location /api/");
        s.set("prefix", Val::Str("/api/".into()), Some("here".into()));
        s.set("websocket", Val::Bool(true), None).note("approximate");
        s.suggest("maintenance", Val::Bool(false), "at run time");
        let mut out = String::new();
        render(&mut out, &s);
        assert_eq!(
            out,
            "# nginx.conf:12: location /api/\n[[routes]]\nprefix = \"/api/\"  # here\n# approximate\nwebsocket = true\n# at run time\n# maintenance = false\n"
        );
        assert_eq!(s.get("maintenance"), None);
        assert_eq!(s.content(), "prefix = \"/api/\"\nwebsocket = true\n");
    }

    #[test]
    fn long_lists_wrap() {
        let items: Vec<Val> = (0..30).map(|i| Val::Str(format!("text/type-{i}"))).collect();
        let mut s = Section::new("compression");
        s.set("types", Val::List(items), None);
        let mut out = String::new();
        render(&mut out, &s);
        assert!(
            out.starts_with("[compression]\ntypes = [\n  \"text/type-0\","),
            "{out}"
        );
        assert!(out.lines().all(|l| l.len() <= 100), "{out}");
        assert!(out.ends_with("]\n"), "{out}");
    }
}
