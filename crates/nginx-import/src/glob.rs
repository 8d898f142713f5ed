//! The file patterns of nginx's `include` (glob(3) as `ngx_open_glob` calls it): `*`, `?`
//! and `[...]` classes (`[a-z]`, `[!x]`, `[^x]`) in any path component, matches sorted,
//! names starting with `.` only matched by a pattern that starts with `.`.
//! <https://nginx.org/en/docs/ngx_core_module.html#include>

use std::path::{Component, Path, PathBuf};

/// Whether `s` holds a glob meta character.
pub(crate) fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The regular files matching `pattern`, sorted; none when nothing matches.
pub(crate) fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::new()];
    for comp in pattern.components() {
        match comp {
            Component::Normal(os) => {
                let part = os.to_string_lossy();
                if !has_meta(&part) {
                    for p in &mut paths {
                        p.push(os);
                    }
                    continue;
                }
                let mut next = Vec::new();
                for p in &paths {
                    let dir: &Path = if p.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        p.as_path()
                    };
                    let Ok(entries) = std::fs::read_dir(dir) else {
                        continue;
                    };
                    let mut names: Vec<String> = entries
                        .filter_map(Result::ok)
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| !n.starts_with('.') || part.starts_with('.'))
                        .filter(|n| matches(&part, n))
                        .collect();
                    names.sort();
                    next.extend(names.into_iter().map(|n| p.join(n)));
                }
                paths = next;
            }
            other => {
                for p in &mut paths {
                    p.push(other.as_os_str());
                }
            }
        }
        if paths.is_empty() {
            break;
        }
    }
    paths.retain(|p| p.is_file());
    paths
}

#[derive(Debug)]
enum Tok {
    Star,
    One,
    Lit(char),
    Class {
        ranges: Vec<(char, char)>,
        negated: bool,
    },
}

impl Tok {
    fn single(&self, c: char) -> bool {
        match self {
            Tok::Star => false,
            Tok::One => true,
            Tok::Lit(l) => *l == c,
            Tok::Class { ranges, negated } => ranges.iter().any(|(a, b)| (*a..=*b).contains(&c)) != *negated,
        }
    }
}

fn tokens(pattern: &str) -> Vec<Tok> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        i += 1;
        match c {
            '*' => out.push(Tok::Star),
            '?' => out.push(Tok::One),
            '[' => {
                // A class runs to the next `]` that is not its first character; without one,
                // `[` is a literal.
                let mut j = i;
                let negated = matches!(chars.get(j), Some('!' | '^'));
                if negated {
                    j += 1;
                }
                let body_start = j;
                if chars.get(j) == Some(&']') {
                    j += 1;
                }
                while chars.get(j).is_some_and(|&ch| ch != ']') {
                    j += 1;
                }
                if j >= chars.len() {
                    out.push(Tok::Lit('['));
                    continue;
                }
                let body = &chars[body_start..j];
                let mut ranges = Vec::new();
                let mut k = 0;
                while let Some(&a) = body.get(k) {
                    if body.get(k + 1) == Some(&'-') && k + 2 < body.len() {
                        ranges.push((a, body[k + 2]));
                        k += 3;
                    } else {
                        ranges.push((a, a));
                        k += 1;
                    }
                }
                out.push(Tok::Class { ranges, negated });
                i = j + 1;
            }
            '\\' => {
                let lit = chars.get(i).copied().unwrap_or('\\');
                if chars.get(i).is_some() {
                    i += 1;
                }
                out.push(Tok::Lit(lit));
            }
            other => out.push(Tok::Lit(other)),
        }
    }
    out
}

/// Whether `name` matches the one-component `pattern` (star backtracking, no recursion).
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    let toks = tokens(pattern);
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match toks.get(p) {
            Some(Tok::Star) => {
                star = Some((p, n));
                p += 1;
            }
            Some(t) if t.single(name[n]) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    while matches!(toks.get(p), Some(Tok::Star)) {
        p += 1;
    }
    p == toks.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches("*.conf", "a.conf"));
        assert!(matches("*.conf", ".conf"));
        assert!(!matches("*.conf", "a.conf.bak"));
        assert!(matches("site-?.conf", "site-1.conf"));
        assert!(!matches("site-?.conf", "site-10.conf"));
        assert!(matches("[ab]*", "beta"));
        assert!(!matches("[!ab]*", "beta"));
        assert!(matches("[a-c]x", "bx"));
        assert!(matches("a[b", "a[b"));
        assert!(matches("*", ""));
        assert!(matches("**x*", "abxcd"));
        assert!(!matches("", "a"));
    }

    #[test]
    fn files_sorted() {
        let dir = std::env::temp_dir().join(format!("nginx-import-glob-{}", std::process::id()));
        let sub = dir.join("conf.d");
        let _ = std::fs::create_dir_all(&sub);
        for n in ["b.conf", "a.conf", ".hidden.conf", "c.txt"] {
            let _ = std::fs::write(sub.join(n), "");
        }
        let found = glob(&dir.join("conf.d").join("*.conf"));
        let names: Vec<String> = found
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names, ["a.conf", "b.conf"]);
        assert_eq!(glob(&dir.join("*").join("a.conf")).len(), 1);
        assert!(glob(&dir.join("none").join("*.conf")).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
