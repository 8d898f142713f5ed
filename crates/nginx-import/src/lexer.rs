//! The tokenizer of nginx's configuration grammar, after `ngx_conf_read_token`
//! (src/core/ngx_conf_file.c): words separated by whitespace, `;`, `{` and `}`.
//!
//! - A word ends at whitespace, `;` or `{`; `}` ends nothing inside a word (nginx reads
//!   `ok}` as one word), and `{` right after `$` belongs to the word (`${var}`).
//! - `"..."` and `'...'` are one word each, across lines; after the closing quote comes
//!   whitespace, `;`, `{` or `)` (`if ($a = "b")`).
//! - `\` makes the next character literal for the word's boundaries; in the value, `\"`,
//!   `\'` and `\\` become the character, `\t`, `\r`, `\n` the control character, and any
//!   other `\x` stays as written (nginx keeps regex escapes such as `\.`).
//! - `#` at the start of a word starts a comment to the end of the line; inside a word it is
//!   a character (`a#b`).
//!
//! Every token carries the line it starts on.

/// One token and the line (1-based) where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Kind,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A word (quoted or not), its escapes resolved.
    Word(String),
    Open,
    Close,
    Semi,
}

/// Splits `src` into tokens. The error is the line and a message in nginx's words.
pub(crate) fn lex(src: &str) -> Result<Vec<Token>, (usize, String)> {
    // A UTF-8 byte order mark (editors on Windows) is no part of the first directive.
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while let Some(&c) = chars.get(i) {
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            ' ' | '\t' | '\r' => i += 1,
            '#' => {
                while chars.get(i).is_some_and(|&ch| ch != '\n') {
                    i += 1;
                }
            }
            ';' | '{' | '}' => {
                let kind = match c {
                    ';' => Kind::Semi,
                    '{' => Kind::Open,
                    _ => Kind::Close,
                };
                out.push(Token { kind, line });
                i += 1;
            }
            '"' | '\'' => {
                let start = line;
                i += 1;
                let mut raw = String::new();
                let mut closed = false;
                while let Some(&ch) = chars.get(i) {
                    if take_escape(&chars, &mut i, &mut raw, &mut line) {
                        continue;
                    }
                    i += 1;
                    if ch == c {
                        closed = true;
                        break;
                    }
                    if ch == '\n' {
                        line += 1;
                    }
                    raw.push(ch);
                }
                if !closed {
                    return Err((
                        start,
                        format!(
                            "unexpected end of file: the string opened with {c} on this line is not closed"
                        ),
                    ));
                }
                if let Some(&next) = chars.get(i) {
                    if !matches!(next, ' ' | '\t' | '\r' | '\n' | ';' | '{' | ')') {
                        return Err((line, format!("unexpected \"{next}\" after a quoted string")));
                    }
                }
                out.push(Token {
                    kind: Kind::Word(unescape(&raw)),
                    line: start,
                });
            }
            _ => {
                let start = line;
                let mut raw = String::new();
                let mut after_dollar = false;
                while let Some(&ch) = chars.get(i) {
                    if take_escape(&chars, &mut i, &mut raw, &mut line) {
                        after_dollar = false;
                        continue;
                    }
                    if ch == '{' && after_dollar {
                        raw.push(ch);
                        i += 1;
                        after_dollar = false;
                        continue;
                    }
                    if matches!(ch, ' ' | '\t' | '\r' | '\n' | ';' | '{') {
                        break;
                    }
                    after_dollar = ch == '$';
                    raw.push(ch);
                    i += 1;
                }
                out.push(Token {
                    kind: Kind::Word(unescape(&raw)),
                    line: start,
                });
            }
        }
    }
    Ok(out)
}

/// A backslash at `chars[i]` and the character after it, kept as written in `raw` (the word's
/// value is unescaped afterwards, [`unescape`]); an escaped newline counts as a line. `false`
/// (nothing consumed) when `chars[i]` is no backslash or the file ends after it.
fn take_escape(chars: &[char], i: &mut usize, raw: &mut String, line: &mut usize) -> bool {
    let (Some('\\'), Some(&next)) = (chars.get(*i).copied(), chars.get(*i + 1)) else {
        return false;
    };
    raw.push('\\');
    raw.push(next);
    if next == '\n' {
        *line += 1;
    }
    *i += 2;
    true
}

/// nginx's escapes in a word's value (the copy loop at the end of `ngx_conf_read_token`).
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.peek().copied() {
                Some(n @ ('"' | '\'' | '\\')) => {
                    out.push(n);
                    it.next();
                    continue;
                }
                Some('t') => {
                    out.push('\t');
                    it.next();
                    continue;
                }
                Some('r') => {
                    out.push('\r');
                    it.next();
                    continue;
                }
                Some('n') => {
                    out.push('\n');
                    it.next();
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(src: &str) -> Vec<String> {
        lex(src)
            .unwrap_or_default()
            .into_iter()
            .map(|t| match t.kind {
                Kind::Word(text) => text,
                Kind::Open => "{".into(),
                Kind::Close => "}".into(),
                Kind::Semi => ";".into(),
            })
            .collect()
    }

    #[test]
    fn words_and_punctuation() {
        assert_eq!(words("listen 443 ssl;"), ["listen", "443", "ssl", ";"]);
        assert_eq!(
            words("location / { return 301 x; }"),
            ["location", "/", "{", "return", "301", "x", ";", "}"]
        );
        // `}` inside a word is part of it, as in nginx.
        assert_eq!(words("return 200 ok}"), ["return", "200", "ok}"]);
        assert_eq!(words("set $a ${b}c;"), ["set", "$a", "${b}c", ";"]);
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(
            words(r#"add_header X "a b" always;"#),
            ["add_header", "X", "a b", "always", ";"]
        );
        assert_eq!(words(r"add_header X 'it\'s';"), ["add_header", "X", "it's", ";"]);
        assert_eq!(words(r#"a "q\"x\\y";"#), ["a", "q\"x\\y", ";"]);
        assert_eq!(words(r#"a "t\tn\n";"#), ["a", "t\tn\n", ";"]);
        // Regex escapes stay as written.
        assert_eq!(words(r"location ~ \.php$ {"), ["location", "~", r"\.php$", "{"]);
        // An escaped space does not end the word, and nginx keeps the backslash (it
        // unescapes only `"`, `'`, `\\`, `t`, `r`, `n`: ngx_conf_read_token).
        assert_eq!(words(r"a b\ c;"), ["a", r"b\ c", ";"]);
        assert_eq!(words(r#"a "";"#), ["a", "", ";"]);
        assert_eq!(words(r#"if ($a = "b") {"#), ["if", "($a", "=", "b", ")", "{"]);
    }

    #[test]
    fn comments() {
        assert_eq!(words("a 1; # b 2;\nc 3;"), ["a", "1", ";", "c", "3", ";"]);
        assert_eq!(words("a b#c;"), ["a", "b#c", ";"]);
        assert_eq!(words("a \"#not\";"), ["a", "#not", ";"]);
    }

    #[test]
    fn lines() {
        let toks = lex("a\n'x\ny'\n  b;").unwrap_or_default();
        let lines: Vec<usize> = toks.iter().map(|t| t.line).collect();
        assert_eq!(lines, [1, 2, 4, 4]);
    }

    #[test]
    fn byte_order_mark() {
        assert_eq!(words("\u{feff}a 1;"), ["a", "1", ";"]);
    }

    #[test]
    fn errors() {
        assert_eq!(lex("a \"open;").unwrap_err().0, 1);
        assert!(lex("a \"x\"y;").unwrap_err().1.contains("after a quoted string"));
        assert!(lex("a \\").is_ok());
    }
}
