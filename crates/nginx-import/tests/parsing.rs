//! The grammar as the import reads it: includes (globs, the main file's directory as a
//! fallback, loops), quoting and escapes, comments, and the errors.

mod common;

use common::*;
use gateway_nginx_import::{import, import_str, ImportError};
use std::fs;
use std::path::Path;

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
    fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

#[test]
fn include_globs_relative_to_the_including_file() {
    let dir = tempdir();
    let root = dir.path();
    write(
        &root.join("nginx.conf"),
        "http {\n  include conf.d/*.conf;\n  include missing/*.conf;\n}\n",
    );
    write(
        &root.join("conf.d/b.conf"),
        "server { listen 443 ssl; ssl_certificate /c/b.pem; ssl_certificate_key /c/b.key; server_name b.test;\n  location / { proxy_pass http://b:1; proxy_set_header Host $host; }\n}\n",
    );
    write(
        &root.join("conf.d/a.conf"),
        "server { listen 443 ssl; ssl_certificate /c/a.pem; ssl_certificate_key /c/a.key; server_name a.test;\n  location / { proxy_pass http://a:1; proxy_set_header Host $host; }\n  location ~ x { proxy_pass http://a:1; }\n}\n",
    );
    write(&root.join("conf.d/c.txt"), "not nginx {");
    let i = import(&root.join("nginx.conf")).unwrap_or_else(|e| panic!("{e}"));
    let d = doc(&i);
    // Matches in sorted order.
    let names: Vec<&str> = routes(&d).iter().filter_map(|t| get(t, "name")).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(get(route(&d, "a"), "host"), Some("a.test"));
    // A note names the included file and its line.
    let regex = i.notes.iter().find(|n| n.directive.starts_with("location ~ x"));
    assert_eq!(regex.map(|n| n.line), Some(3), "{}", notes_text(&i));
    assert!(
        regex.is_some_and(|n| n.file.ends_with("conf.d/a.conf")),
        "{}",
        notes_text(&i)
    );
    // A pattern that matches nothing is reported, with where it looked.
    let missing = i.notes.iter().find(|n| n.directive == "include missing/*.conf");
    assert_eq!(missing.map(|n| n.line), Some(3), "{}", notes_text(&i));
    assert!(
        missing.is_some_and(|n| n.why.contains("no file matched")),
        "{}",
        notes_text(&i)
    );
    assert!(
        i.notes
            .iter()
            .any(|n| n.directive.contains("nginx's default server")),
        "{}",
        notes_text(&i)
    );
    assert_eq!(i.notes.len(), 3, "{}", notes_text(&i));
}

#[test]
fn include_falls_back_to_the_main_directory() {
    let dir = tempdir();
    let root = dir.path();
    write(&root.join("nginx.conf"), "http { include sites/app.conf; }\n");
    write(
        &root.join("sites/app.conf"),
        "server {\n  listen 443 ssl; ssl_certificate /c/a.pem; ssl_certificate_key /c/a.key;\n  include snippets/proxy.conf;\n  location / { proxy_pass http://app:1; }\n}\n",
    );
    write(
        &root.join("snippets/proxy.conf"),
        "proxy_set_header Host $host;\nproxy_read_timeout 90s;\n",
    );
    let i = import(&root.join("nginx.conf")).unwrap_or_else(|e| panic!("{e}"));
    assert!(i.notes.is_empty(), "{}", notes_text(&i));
    let d = doc(&i);
    let r = route(&d, "root");
    assert_eq!(get(r, "read_timeout"), Some("90s"));
    assert!(r.get("policies").is_none(), "{}", i.toml);
    assert!(
        i.toml.contains("proxy.conf:2: proxy_read_timeout 90s;"),
        "{}",
        i.toml
    );
}

#[test]
fn import_str_reads_includes_next_to_its_path() {
    let dir = tempdir();
    let root = dir.path();
    write(
        &root.join("upstreams/api.conf"),
        "upstream api { server api-1:3001; server api-2:3001; }\n",
    );
    let text = "http { include upstreams/*.conf; server { listen 443 ssl; ssl_certificate /c/a.pem; ssl_certificate_key /c/a.key;\n  location / { proxy_pass http://api; proxy_set_header Host $host; } } }\n";
    let i = import_str(text, &root.join("nginx.conf")).unwrap_or_else(|e| panic!("{e}"));
    let d = doc(&i);
    assert_eq!(
        strs(item(&d, &["upstreams", "api", "servers"])),
        ["api-1:3001", "api-2:3001"]
    );
    assert!(i.notes.is_empty(), "{}", notes_text(&i));
}

#[test]
fn include_loops_and_unreadable_files_are_errors() {
    let dir = tempdir();
    let root = dir.path();
    write(&root.join("a.conf"), "include b.conf;\n");
    write(&root.join("b.conf"), "include a.conf;\n");
    match import(&root.join("a.conf")) {
        Err(ImportError::Parse { message, .. }) => assert!(message.contains("nested deeper"), "{message}"),
        other => panic!("expected a parse error, got {other:?}"),
    }
    match import(&root.join("none.conf")) {
        Err(e @ ImportError::Read { .. }) => assert!(e.to_string().starts_with("cannot read "), "{e}"),
        other => panic!("expected a read error, got {other:?}"),
    }
}

#[test]
fn grammar_errors_name_the_line() {
    let e = import_str(
        "http {\n  server {\n    listen 80\n  }\n}\n",
        Path::new("/x/nginx.conf"),
    );
    match e {
        Err(e @ ImportError::Parse { line: 4, .. }) => {
            assert_eq!(e.to_string(), "/x/nginx.conf:4: unexpected \"}\"")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        import_str("add_header X \"a;\n", Path::new("/x/nginx.conf")),
        Err(ImportError::Parse { line: 1, .. })
    ));
    assert!(matches!(
        import_str("http {\n", Path::new("/x/nginx.conf")),
        Err(ImportError::Parse { .. })
    ));
    assert!(matches!(
        import_str("a \"b\"c;", Path::new("/x/nginx.conf")),
        Err(ImportError::Parse { .. })
    ));
}

#[test]
fn quotes_escapes_and_comments() {
    let i = imp(&conf(&[
        "http { # a comment { that opens nothing",
        "  server { listen 443 ssl; ssl_certificate /c/a.pem; ssl_certificate_key /c/a.key; # listen 80;",
        "    location '/with space/' { proxy_pass http://app:1; proxy_set_header Host $host;",
        "      add_header X-A 'it\\'s \"q\"' always;",
        "      add_header X-B \"semi;colon#hash\" always;",
        "      add_header X-C a#b always;",
        "      add_header X-D \"tab\\there\" always; }",
        "  }",
        "}",
    ]));
    assert!(i.notes.is_empty(), "{}", notes_text(&i));
    let d = doc(&i);
    let r = route(&d, "with-space");
    assert_eq!(get(r, "prefix"), Some("/with space/"));
    let header = |n: &str| {
        r.get("headers")
            .and_then(|h| h.get(n))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    assert_eq!(header("X-A").as_deref(), Some("it's \"q\""));
    assert_eq!(header("X-B").as_deref(), Some("semi;colon#hash"));
    assert_eq!(header("X-C").as_deref(), Some("a#b"));
    assert_eq!(header("X-D").as_deref(), Some("tab\there"));
    // The commented-out `listen 80;` is no listener: no plain-HTTP server at all.
    assert_eq!(str_at(&d, &["listen", "http"]), Some("off"));
}

#[test]
fn notes_display_as_the_cli_prints_them() {
    let i = imp("http {\n  map $a $b { default 1; }\n}\n");
    assert_eq!(i.notes.len(), 1);
    assert_eq!(
        i.notes[0].to_string(),
        "/nonexistent/nginx.conf:2: not translated: map $a $b (variables computed from tables are not translated)"
    );
    assert!(
        i.toml
            .contains("# Not translated (1): each needs a decision, see why.\n#   nginx.conf:2: map $a $b ("),
        "{}",
        i.toml
    );
}
