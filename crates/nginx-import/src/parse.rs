//! nginx's block grammar over the tokens of [`crate::lexer`], with `include` expanded in
//! place: a directive is words ended by `;`, or words and a `{ ... }` block of directives.
//! <https://nginx.org/en/docs/beginners_guide.html#conf_structure>
//!
//! `include PATTERN;` (<https://nginx.org/en/docs/ngx_core_module.html#include>) is kept in
//! the tree, followed by the directives of the files it matched, in sorted order. A relative
//! pattern is looked up next to the including file, then next to the main file (nginx's
//! prefix, where `nginx.conf` lives). A pattern matching nothing is recorded, not an error:
//! the translation reports it. `mime.types` is not read (a proxy passes `Content-Type` on).

use crate::glob;
use crate::lexer::{self, Kind, Token};
use crate::ImportError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Includes within includes, at most (nginx has no limit; a file including itself loops).
const MAX_INCLUDE_DEPTH: usize = 32;
/// Blocks within blocks in one file, at most.
const MAX_NESTING: usize = 64;

/// One directive: `name args...;` or `name args... { block }`.
#[derive(Debug, Clone)]
pub(crate) struct Directive {
    /// Position in reading order, over all files (notes are sorted by it).
    pub id: usize,
    pub name: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Directive>>,
    pub file: Arc<PathBuf>,
    /// The line of the directive's name.
    pub line: usize,
    /// For `include`: what it read.
    pub include: Option<Include>,
}

/// What an `include` read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Include {
    /// These files, whose directives follow the `include` in the same block.
    Files(Vec<PathBuf>),
    /// Nothing matched; the paths tried.
    Missing(Vec<PathBuf>),
    /// `mime.types`, not read.
    MimeTypes,
}

impl Directive {
    /// Argument `i`, or `""`.
    pub fn arg(&self, i: usize) -> &str {
        self.args.get(i).map(String::as_str).unwrap_or("")
    }

    /// The block's directives (none for a simple directive).
    pub fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }

    /// `name arg arg`, arguments quoted where nginx needs it, at most 120 characters.
    pub fn text(&self) -> String {
        let mut s = self.name.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(&quote_arg(a));
        }
        if s.chars().count() > 120 {
            s = s.chars().take(117).collect::<String>() + "...";
        }
        s
    }
}

/// An argument as it would be written in nginx.conf.
pub(crate) fn quote_arg(a: &str) -> String {
    let needs = a.is_empty()
        || a.starts_with('#')
        || a.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ';' | '{' | '"' | '\''));
    if !needs {
        return a.to_owned();
    }
    let mut s = String::from("\"");
    for c in a.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            '\r' => s.push_str("\\r"),
            c if c.is_control() => s.push(' '),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Parses the main file's text; `path` names it and anchors relative includes.
pub(crate) fn parse_main(text: &str, path: &Path) -> Result<Vec<Directive>, ImportError> {
    let main_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut p = Parser { next_id: 0, main_dir };
    p.parse_text(text, path, 0)
}

struct Parser {
    next_id: usize,
    main_dir: PathBuf,
}

fn last_line(toks: &[Token]) -> usize {
    toks.last().map_or(1, |t| t.line)
}

impl Parser {
    fn parse_text(&mut self, text: &str, path: &Path, depth: usize) -> Result<Vec<Directive>, ImportError> {
        let toks = lexer::lex(text).map_err(|(line, message)| ImportError::Parse {
            file: path.to_path_buf(),
            line,
            message,
        })?;
        let file = Arc::new(path.to_path_buf());
        let mut pos = 0;
        self.block(&toks, &mut pos, &file, depth, 0, None)
    }

    /// The directives up to the `}` of the block opened on line `open`, or to the end of
    /// the file when `open` is `None`.
    fn block(
        &mut self,
        toks: &[Token],
        pos: &mut usize,
        file: &Arc<PathBuf>,
        depth: usize,
        nesting: usize,
        open: Option<usize>,
    ) -> Result<Vec<Directive>, ImportError> {
        let err = |line: usize, message: String| ImportError::Parse {
            file: file.to_path_buf(),
            line,
            message,
        };
        let mut out = Vec::new();
        loop {
            let Some(tok) = toks.get(*pos) else {
                return match open {
                    None => Ok(out),
                    Some(l) => Err(err(
                        last_line(toks),
                        format!(
                            "unexpected end of file, expecting \"}}\" (for the block opened on line {l})"
                        ),
                    )),
                };
            };
            match tok.kind {
                Kind::Close => {
                    *pos += 1;
                    return match open {
                        Some(_) => Ok(out),
                        None => Err(err(tok.line, "unexpected \"}\"".into())),
                    };
                }
                Kind::Semi => return Err(err(tok.line, "unexpected \";\"".into())),
                Kind::Open => return Err(err(tok.line, "unexpected \"{\"".into())),
                Kind::Word(_) => {}
            }
            let line = tok.line;
            let mut words: Vec<String> = Vec::new();
            let opens = loop {
                match toks.get(*pos) {
                    Some(Token {
                        kind: Kind::Word(w), ..
                    }) => {
                        words.push(w.clone());
                        *pos += 1;
                    }
                    Some(Token { kind: Kind::Semi, .. }) => {
                        *pos += 1;
                        break false;
                    }
                    Some(Token { kind: Kind::Open, .. }) => {
                        *pos += 1;
                        break true;
                    }
                    Some(Token {
                        kind: Kind::Close,
                        line: l,
                    }) => {
                        return Err(err(*l, "unexpected \"}\"".into()));
                    }
                    None => {
                        return Err(err(
                            last_line(toks),
                            "unexpected end of file, expecting \";\" or \"}\"".into(),
                        ));
                    }
                }
            };
            let mut it = words.into_iter();
            let name = it.next().unwrap_or_default();
            let args: Vec<String> = it.collect();
            let id = self.next_id;
            self.next_id += 1;
            let mut d = Directive {
                id,
                name,
                args,
                block: None,
                file: Arc::clone(file),
                line,
                include: None,
            };
            if opens {
                if nesting >= MAX_NESTING {
                    return Err(err(
                        line,
                        format!("blocks nested deeper than {MAX_NESTING} levels"),
                    ));
                }
                d.block = Some(self.block(toks, pos, file, depth, nesting + 1, Some(line))?);
                out.push(d);
            } else if d.name == "include" && d.args.len() == 1 {
                let (status, included) = self.include(&d, file.as_path(), depth)?;
                d.include = Some(status);
                out.push(d);
                out.extend(included);
            } else {
                out.push(d);
            }
        }
    }

    /// Reads what `include` names: next to `file`, then next to the main file.
    fn include(
        &mut self,
        d: &Directive,
        file: &Path,
        depth: usize,
    ) -> Result<(Include, Vec<Directive>), ImportError> {
        let arg = d.arg(0);
        let pattern = Path::new(arg);
        if pattern.file_name().is_some_and(|n| n == "mime.types") {
            return Ok((Include::MimeTypes, Vec::new()));
        }
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(ImportError::Parse {
                file: file.to_path_buf(),
                line: d.line,
                message: format!(
                    "includes nested deeper than {MAX_INCLUDE_DEPTH} levels (does a file include itself?)"
                ),
            });
        }
        let candidates: Vec<PathBuf> = if pattern.is_absolute() {
            vec![pattern.to_path_buf()]
        } else {
            let here = file
                .parent()
                .map_or_else(|| pattern.to_path_buf(), |dir| dir.join(pattern));
            let main = self.main_dir.join(pattern);
            if here == main {
                vec![here]
            } else {
                vec![here, main]
            }
        };
        let mut tried = Vec::new();
        for c in candidates {
            let files = if glob::has_meta(arg) {
                glob::glob(&c)
            } else if c.is_file() {
                vec![c.clone()]
            } else {
                Vec::new()
            };
            if files.is_empty() {
                tried.push(c);
                continue;
            }
            let mut out = Vec::new();
            for f in &files {
                let bytes = std::fs::read(f).map_err(|source| ImportError::Read {
                    path: f.clone(),
                    source,
                })?;
                let text = String::from_utf8_lossy(&bytes);
                out.extend(self.parse_text(&text, f, depth + 1)?);
            }
            return Ok((Include::Files(files), out));
        }
        Ok((Include::Missing(tried), Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Vec<Directive>, ImportError> {
        parse_main(src, Path::new("/nonexistent/nginx.conf"))
    }

    #[test]
    fn blocks_and_lines() {
        let tree = parse("http {\n  server {\n    listen 443 ssl;\n  }\n}\n").unwrap_or_default();
        assert_eq!(tree.len(), 1);
        let server = &tree[0].children()[0];
        assert_eq!((server.name.as_str(), server.line), ("server", 2));
        let listen = &server.children()[0];
        assert_eq!(
            (listen.name.as_str(), listen.line, listen.args.clone()),
            ("listen", 3, vec!["443".to_string(), "ssl".to_string()])
        );
        assert_eq!(listen.text(), "listen 443 ssl");
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("http {\n  a 1;\n").unwrap_err();
        assert!(matches!(e, ImportError::Parse { line: 2, .. }), "{e}");
        let e = parse("a 1;\n}\n").unwrap_err();
        assert!(matches!(e, ImportError::Parse { line: 2, .. }), "{e}");
        assert!(parse("a 1").is_err());
        assert!(parse(";").is_err());
        assert!(parse("a { b }").is_err());
        assert!(parse(&"a {".repeat(100)).is_err());
    }

    #[test]
    fn includes_recorded() {
        let tree = parse("include /nonexistent/x/*.conf;\ninclude mime.types;\n").unwrap_or_default();
        assert!(matches!(tree[0].include, Some(Include::Missing(_))));
        assert_eq!(tree[1].include, Some(Include::MimeTypes));
    }

    #[test]
    fn quoting_for_text() {
        assert_eq!(quote_arg("a b"), "\"a b\"");
        assert_eq!(quote_arg(""), "\"\"");
        assert_eq!(quote_arg(r"\.php$"), r"\.php$");
        assert_eq!(quote_arg("say \"hi\""), "\"say \\\"hi\\\"\"");
    }
}
