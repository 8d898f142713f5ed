//! `gateway import-nginx FILE`: an nginx configuration in, a `proxy.toml` out, and the exact
//! list of what was not translated.
//!
//! ```text
//! nginx.conf (+ its includes) ──lexer──▶ tokens ──parse──▶ directive tree ──translate──▶ Import
//!                                                                                ├─ toml: proxy.toml text
//!                                                                                └─ notes: file:line: not translated: ...
//! ```
//!
//! The grammar is nginx's (<https://nginx.org/en/docs/beginners_guide.html#conf_structure>):
//! directives ended by `;`, blocks in `{ }`, single and double quotes with `\` escapes, `#`
//! comments, `$variables` kept as text, and `include` with glob patterns
//! (<https://nginx.org/en/docs/ngx_core_module.html#include>) relative to the including file,
//! then to the main file's directory (nginx's prefix).
//!
//! Each directive is translated (a key, its source line in a comment), dropped (built in or
//! not needed, listed at the top of the file), or reported in [`Import::notes`] with why and
//! what to do. `map`, `if`, regular-expression locations and the like are reported with their
//! file and line, never guessed. The mapping follows docs/migrating-from-nginx.md; the keys
//! are those of docs/configuration.md.
//!
//! ```no_run
//! let import = gateway_nginx_import::import(std::path::Path::new("/etc/nginx/nginx.conf"))?;
//! std::fs::write("proxy.toml", &import.toml)?;
//! for note in &import.notes {
//!     eprintln!("{note}"); // nginx.conf:42: not translated: if ($host = x) (conditions are ...)
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod emit;
mod glob;
mod lexer;
mod parse;
mod translate;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// The result of an import: the `proxy.toml` text and what it leaves out.
///
/// `toml` is readable TOML in a fixed order (`[listen]`, `[server]`, `[tls]`, certificates,
/// `[acme]`, `[limits]`, `[compression]`, `[security]`, `[forwarding]`, `[logging]`, policies,
/// upstreams, routes), every translated key commented with its nginx line. `notes` is empty
/// exactly when every directive was translated or needs nothing (the CLI exits 0 then, 2
/// otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub toml: String,
    pub notes: Vec<Note>,
}

/// One directive not translated, where it is, and why (with what to do instead).
///
/// Displayed as `file:line: not translated: directive (why)`, e.g.
/// `nginx.conf:57: not translated: location ~ \.php$ (a regular-expression location: ...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub file: PathBuf,
    pub line: usize,
    /// The directive as written (`name args`, at most 120 characters).
    pub directive: String,
    pub why: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: not translated: {} ({})",
            self.file.display(),
            self.line,
            self.directive,
            self.why
        )
    }
}

/// Why no translation could be made: a file that cannot be read, or text that is not
/// nginx's grammar (the message in nginx's words, with the line).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The main file, or a file an `include` matched, cannot be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not nginx's grammar: an unclosed quote or block, a stray `;` or `}`, includes or
    /// blocks nested too deep.
    #[error("{}:{line}: {message}", .file.display())]
    Parse {
        file: PathBuf,
        line: usize,
        message: String,
    },
}

/// Reads `path` and the files its `include`s match, and translates them.
///
/// Relative includes are looked up next to the including file, then next to `path`.
/// Non-UTF-8 bytes are read as U+FFFD (nginx's files are bytes; names and paths are ASCII
/// in practice).
pub fn import(path: &Path) -> Result<Import, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    import_str(&text, path)
}

/// Translates `text` as if it were the file `path` (which names it in notes and anchors
/// relative includes and paths; it need not exist).
pub fn import_str(text: &str, path: &Path) -> Result<Import, ImportError> {
    let tree = parse::parse_main(text, path)?;
    Ok(translate::translate(&tree, path))
}
