//! An nginx configuration read into a tree, what the test needs to know of it ([`Site`]:
//! servers, names, listeners, proxied locations, upstreams), and the tree rewritten for a
//! run on loopback ([`rewrite`]; the rewrites are listed in `equivalence.rs`).
//!
//! The tree keeps every word as written (quotes included), so that `location`,
//! `server_name`, `return` and the URI parts of `proxy_pass` reach nginx unchanged;
//! comments are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;

/// One directive: its words as written and, for a block, its directives.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) words: Vec<String>,
    pub(crate) block: Option<Vec<Node>>,
}

impl Node {
    fn simple(words: &[&str]) -> Node {
        Node {
            words: words.iter().map(|w| (*w).to_string()).collect(),
            block: None,
        }
    }

    fn with_block(words: Vec<String>, block: Vec<Node>) -> Node {
        Node {
            words,
            block: Some(block),
        }
    }

    fn name(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }

    /// Argument `i` without its quotes.
    fn arg(&self, i: usize) -> String {
        self.words
            .get(i + 1)
            .map(|w| unquote(w.as_str()))
            .unwrap_or_default()
    }

    fn children(&self) -> &[Node] {
        self.block.as_deref().unwrap_or(&[])
    }

    fn is_block(&self, name: &str) -> bool {
        self.name() == name && self.block.is_some()
    }
}

enum Tok {
    Word(String),
    Semi,
    Open,
    Close,
}

/// nginx's tokens: words (quoted with `"` or `'`, `\` escapes, `${var}`), `;`, `{`, `}`;
/// `#` starts a comment where a word could start.
fn lex(text: &str) -> Vec<Tok> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let single = match c {
            b';' => Some(Tok::Semi),
            b'{' => Some(Tok::Open),
            b'}' => Some(Tok::Close),
            _ => None,
        };
        if let Some(t) = single {
            out.push(t);
            i += 1;
            continue;
        }
        let start = i;
        if c == b'"' || c == b'\'' {
            i += 1;
            while i < b.len() && b[i] != c {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() && !b";{}".contains(&b[i]) {
                if b[i] == b'\\' {
                    i += 1;
                } else if b[i] == b'$' && b.get(i + 1) == Some(&b'{') {
                    while i < b.len() && b[i] != b'}' {
                        i += 1;
                    }
                }
                i += 1;
            }
        }
        // Every end is an ASCII byte or the end of the text: a character boundary.
        let end = i.min(b.len());
        out.push(Tok::Word(text[start..end].to_string()));
        i = end;
    }
    out
}

/// The directives of a configuration file (nginx's grammar; the test fails on text that
/// is not, as nginx would).
pub(crate) fn parse(text: &str) -> Vec<Node> {
    let toks = lex(text);
    let mut pos = 0;
    block(&toks, &mut pos, false)
}

fn block(toks: &[Tok], pos: &mut usize, inner: bool) -> Vec<Node> {
    let mut out = Vec::new();
    let mut words = Vec::new();
    while let Some(t) = toks.get(*pos) {
        *pos += 1;
        match t {
            Tok::Word(w) => words.push(w.clone()),
            Tok::Semi => out.push(Node {
                words: std::mem::take(&mut words),
                block: None,
            }),
            Tok::Open => {
                let inside = block(toks, pos, true);
                out.push(Node::with_block(std::mem::take(&mut words), inside));
            }
            Tok::Close => {
                assert!(inner && words.is_empty(), "an unexpected `}}`");
                return out;
            }
        }
    }
    assert!(
        !inner && words.is_empty(),
        "the file ends inside a block or a directive"
    );
    out
}

/// A word without its quotes and escapes.
pub(crate) fn unquote(w: &str) -> String {
    let inner = match w.as_bytes() {
        [q @ (b'"' | b'\''), .., last] if last == q => &w[1..w.len() - 1],
        _ => w,
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The configuration as text, four spaces per level.
pub(crate) fn render(nodes: &[Node], depth: usize, out: &mut String) {
    let pad = "    ".repeat(depth);
    for n in nodes {
        out.push_str(&pad);
        out.push_str(&n.words.join(" "));
        match &n.block {
            None => out.push_str(";\n"),
            Some(b) => {
                out.push_str(" {\n");
                render(b, depth + 1, out);
                out.push_str(&pad);
                out.push_str("}\n");
            }
        }
    }
}

/// `location [=|^~] PATH`: the modifier (`""` for none) and the path.
fn location_path(n: &Node) -> Option<(String, String)> {
    let args: Vec<String> = n.words.iter().skip(1).map(|w| unquote(w.as_str())).collect();
    match args.as_slice() {
        [m, p] => Some((m.clone(), p.clone())),
        [p] => {
            // nginx also takes the modifier joined to the path (`=/x`).
            for m in ["^~", "=", "~*", "~"] {
                if let Some(rest) = p.strip_prefix(m).filter(|r| !r.is_empty()) {
                    return Some((m.to_string(), rest.to_string()));
                }
            }
            Some((String::new(), p.clone()))
        }
        _ => None,
    }
}

/// The URI part of a `proxy_pass` URL (`/v1` of `http://backend/v1`; empty when none).
pub(crate) fn uri_part(url: &str) -> &str {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    rest.find(['/', '?']).map_or("", |i| &rest[i..])
}

/// The words of every directive named `name`, in file order, at any depth.
pub(crate) fn collect(nodes: &[Node], name: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for n in nodes {
        if n.name() == name {
            out.push(n.words.clone());
        }
        out.extend(collect(n.children(), name));
    }
    out
}

// ---------------------------------------------------------------------------------------
// What the test knows of the file

/// A `server` block.
#[derive(Debug)]
pub(crate) struct Server {
    /// Its `server_name`s, lower case, as written (`_`, `*.example.com`, `.example.org`).
    pub(crate) names: Vec<String>,
    /// Its listeners after the rewrite: (`ssl`, `default_server`), one of each kind at most;
    /// `default_server` only where nginx takes it (the first server that asks, per port).
    listens: Vec<(bool, bool)>,
    pub(crate) tls: bool,
    pub(crate) plain: bool,
}

impl Server {
    /// Whether nginx picks this server for `host` (a name as nginx's `$host` has it) by
    /// name: an exact name, `*.suffix`, or `.domain` (the domain and every name under it).
    pub(crate) fn lists(&self, host: &str) -> bool {
        self.names.iter().any(|n| {
            if let Some(suffix) = n.strip_prefix('*') {
                suffix.starts_with('.') && host.len() > suffix.len() && host.ends_with(suffix)
            } else if let Some(domain) = n.strip_prefix('.') {
                host == domain || host.ends_with(n.as_str())
            } else {
                n == host
            }
        })
    }

    /// Whether it has a name the importer turns into route hosts (not `_`).
    pub(crate) fn named(&self) -> bool {
        self.names.iter().any(|n| !n.is_empty() && n != "_")
    }

    /// The route hosts the importer makes of its names (`*.example.com` for
    /// `*.example.com`; `example.org` and `*.example.org` for `.example.org`).
    pub(crate) fn route_hosts(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in self.names.iter().filter(|n| !n.is_empty() && *n != "_") {
            match n.strip_prefix('.') {
                Some(domain) => {
                    out.push(domain.to_string());
                    out.push(format!("*{n}"));
                }
                None => out.push(n.clone()),
            }
        }
        out
    }
}

/// A `location` with `proxy_pass`, as the original file has it.
#[derive(Debug)]
pub(crate) struct Loc {
    /// What its `proxy_set_header X-Oracle-Location` sends: `L0`, `L1`... in file order.
    pub(crate) id: String,
    /// Index into [`Site::servers`].
    pub(crate) server: usize,
    pub(crate) exact: bool,
    pub(crate) path: String,
    /// The URI part of `proxy_pass` (`/v1` of `http://backend/v1`); `None`: nginx passes
    /// the client's target on.
    pub(crate) uri: Option<String>,
    /// The recorder it reaches: the `upstream` block's name, else `host:port`.
    pub(crate) upstream: String,
    /// `location /api { proxy_pass http://backend/v1; }`, for messages.
    pub(crate) text: String,
}

impl Loc {
    /// A prefix without a trailing slash (`location /api`): nginx's match does not stop at a
    /// segment boundary.
    pub(crate) fn open_prefix(&self) -> bool {
        !self.exact && !self.path.ends_with('/')
    }
}

/// What the test knows of a configuration file.
#[derive(Debug)]
pub(crate) struct Site {
    pub(crate) servers: Vec<Server>,
    pub(crate) locations: Vec<Loc>,
    /// The `upstream` blocks' names, lower case (nginx's are case-insensitive).
    pub(crate) blocks: BTreeSet<String>,
    /// Every recorder's name: the blocks, then the `host:port` of each other `proxy_pass`.
    pub(crate) recorders: Vec<String>,
    /// nginx's default server of the HTTPS port: the one with `default_server`, else the
    /// first.
    pub(crate) default_tls: Option<usize>,
}

/// The directives of `http` (a file without `http` is a fragment of it, like
/// `conf.d/*.conf`).
fn http_of(tree: &[Node]) -> &[Node] {
    tree.iter()
        .find(|n| n.is_block("http"))
        .map_or(tree, |n| n.children())
}

impl Site {
    pub(crate) fn read(tree: &[Node]) -> Site {
        let http = http_of(tree);
        let blocks: BTreeSet<String> = http
            .iter()
            .filter(|n| n.is_block("upstream"))
            .map(|n| n.arg(0).to_ascii_lowercase())
            .collect();
        let mut site = Site {
            servers: Vec::new(),
            locations: Vec::new(),
            recorders: blocks.iter().cloned().collect(),
            blocks,
            default_tls: None,
        };
        // (explicit default_server, first server) per kind: [plain, tls].
        let mut explicit: [Option<usize>; 2] = [None, None];
        let mut first: [Option<usize>; 2] = [None, None];
        for s in http.iter().filter(|n| n.is_block("server")) {
            let index = site.servers.len();
            let ssl_on = s.children().iter().any(|c| c.name() == "ssl" && c.arg(0) == "on");
            let mut listens: Vec<(bool, bool)> = Vec::new();
            for l in s.children().iter().filter(|c| c.name() == "listen") {
                let params: Vec<String> = l.words.iter().skip(2).map(|w| unquote(w.as_str())).collect();
                let tls = ssl_on || params.iter().any(|p| p == "ssl");
                let default = params.iter().any(|p| p == "default_server" || p == "default");
                match listens.iter_mut().find(|(k, _)| *k == tls) {
                    Some(e) => e.1 |= default,
                    None => listens.push((tls, default)),
                }
            }
            if listens.is_empty() {
                // nginx's `listen *:80`.
                listens.push((false, false));
            }
            for (tls, default) in &mut listens {
                let kind = usize::from(*tls);
                if first[kind].is_none() {
                    first[kind] = Some(index);
                }
                if *default {
                    if explicit[kind].is_some() {
                        // Another server already has this port's default_server.
                        *default = false;
                    } else {
                        explicit[kind] = Some(index);
                    }
                }
            }
            let names: Vec<String> = s
                .children()
                .iter()
                .filter(|c| c.name() == "server_name")
                .flat_map(|c| c.words.iter().skip(1).map(|w| unquote(w).to_ascii_lowercase()))
                .collect();
            site.servers.push(Server {
                names,
                tls: listens.iter().any(|l| l.0),
                plain: listens.iter().any(|l| !l.0),
                listens,
            });
            for l in s.children().iter().filter(|c| c.is_block("location")) {
                site.add_location(index, l);
            }
        }
        site.default_tls = explicit[1].or(first[1]);
        site
    }

    fn add_location(&mut self, server: usize, l: &Node) {
        assert!(
            !l.children().iter().any(|c| c.name() == "location"),
            "nested locations are not handled by this test's rewrite: {:?}",
            l.words
        );
        let Some(pp) = l.children().iter().find(|c| c.name() == "proxy_pass") else {
            return;
        };
        let (modifier, path) =
            location_path(l).unwrap_or_else(|| panic!("not a location this test reads: {:?}", l.words));
        assert!(
            matches!(modifier.as_str(), "" | "=" | "^~") && path.starts_with('/'),
            "only prefix, `=` and `^~` locations are compared (the importer notes the others): {:?}",
            l.words
        );
        assert!(
            !path.contains(|c: char| c.is_whitespace() || "\"';{}".contains(c)),
            "a location path this test's rewrite would have to quote: {path:?}"
        );
        let url = pp.arg(0);
        let rest = url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("proxy_pass {url}: only http:// upstreams are compared"));
        let uri = uri_part(&url);
        let authority = rest[..rest.len() - uri.len()].to_ascii_lowercase();
        let upstream = if self.blocks.contains(&authority) || authority.contains(':') {
            authority
        } else {
            format!("{authority}:80")
        };
        if !self.recorders.contains(&upstream) {
            self.recorders.push(upstream.clone());
        }
        self.locations.push(Loc {
            id: format!("L{}", self.locations.len()),
            server,
            exact: modifier == "=",
            text: format!("{} {{ proxy_pass {url}; }}", l.words.join(" ")),
            path,
            uri: (!uri.is_empty()).then(|| uri.to_string()),
            upstream,
        });
    }

    pub(crate) fn location(&self, id: &str) -> Option<&Loc> {
        self.locations.iter().find(|l| l.id == id)
    }

    /// Whether a server of that kind (HTTPS or plain) lists `host` (nginx's `$host`).
    pub(crate) fn lists(&self, host: &str, tls: bool) -> bool {
        self.servers
            .iter()
            .filter(|s| if tls { s.tls } else { s.plain })
            .any(|s| s.lists(host))
    }

    /// The `Host` values the targets are sent with: each name of the HTTPS servers (a
    /// wildcard as two names under it, `.domain` as the domain and a name under it), then
    /// a name no server lists.
    pub(crate) fn hosts(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in self.servers.iter().filter(|s| s.tls) {
            for n in s
                .names
                .iter()
                .filter(|n| !n.is_empty() && *n != "_" && !n.starts_with('~'))
            {
                let made = match (n.strip_prefix("*."), n.strip_prefix('.')) {
                    (Some(rest), _) => vec![format!("x.{rest}"), format!("a.b.{rest}")],
                    (None, Some(rest)) => vec![rest.to_string(), format!("www.{rest}")],
                    (None, None) => vec![n.clone()],
                };
                for h in made {
                    if !out.contains(&h) {
                        out.push(h);
                    }
                }
            }
        }
        out.push(UNKNOWN_HOST.to_string());
        out
    }

    /// The paths of the proxied locations, sorted, once each.
    pub(crate) fn paths(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.locations.iter().map(|l| l.path.as_str()).collect();
        set.into_iter().map(str::to_string).collect()
    }
}

/// A `Host` no server lists: nginx's default server answers it.
pub(crate) const UNKNOWN_HOST: &str = "unknown.invalid";

/// nginx's `$host` of a `Host` value: lower case, without the port and a trailing dot.
pub(crate) fn host_name(host: &str) -> String {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

// ---------------------------------------------------------------------------------------
// The rewrite

/// Where a rewritten file runs.
pub(crate) struct Env<'a> {
    /// The temporary directory (pid, logs, temp paths).
    pub(crate) dir: &'a Path,
    /// The original file's directory: nginx's prefix, where relative paths were read.
    pub(crate) src_dir: &'a Path,
    pub(crate) http_port: u16,
    pub(crate) https_port: u16,
    pub(crate) recorders: &'a BTreeMap<String, SocketAddr>,
    /// The modules whose temp paths move into `dir`.
    pub(crate) temp_modules: &'a [&'static str],
    /// The normalizing twin (see `equivalence.rs`) instead of the file as written.
    pub(crate) twin: bool,
}

/// Main-context directives the rewrite sets itself.
const MAIN_OWN: &[&str] = &["user", "worker_processes", "pid", "daemon", "master_process"];
/// Directives removed wherever they are (`ssl_*` too).
const REMOVED: &[&str] = &["access_log", "error_log", "ssl", "http2"];

/// The file rewritten to run on loopback in `env.dir`, every upstream a recorder.
pub(crate) fn rewrite(tree: &[Node], site: &Site, env: &Env<'_>) -> String {
    let dir = env.dir.display().to_string();
    let mut top = vec![
        Node::simple(&["daemon", "off"]),
        Node::simple(&["master_process", "off"]),
        Node::simple(&["worker_processes", "1"]),
        Node::simple(&["pid", format!("{dir}/nginx.pid").as_str()]),
        Node::simple(&["error_log", format!("{dir}/error.log").as_str(), "warn"]),
    ];
    if !tree.iter().any(|n| n.is_block("events")) {
        top.push(Node::with_block(
            vec!["events".into()],
            vec![Node::simple(&["worker_connections", "256"])],
        ));
    }
    let mut rw = Rewriter {
        site,
        env,
        next_server: 0,
        next_loc: 0,
    };
    if tree.iter().any(|n| n.is_block("http")) {
        for n in tree.iter().filter(|n| !MAIN_OWN.contains(&n.name())) {
            if n.is_block("http") {
                top.push(Node::with_block(n.words.clone(), rw.http(n.children())));
            } else {
                top.extend(rw.keep(n));
            }
        }
    } else {
        top.push(Node::with_block(vec!["http".into()], rw.http(tree)));
    }
    assert_eq!(rw.next_server, site.servers.len(), "servers rewritten");
    assert_eq!(rw.next_loc, site.locations.len(), "locations rewritten");
    let mut out = String::new();
    render(&top, 0, &mut out);
    out
}

struct Rewriter<'a> {
    site: &'a Site,
    env: &'a Env<'a>,
    next_server: usize,
    next_loc: usize,
}

impl Rewriter<'_> {
    fn http(&mut self, nodes: &[Node]) -> Vec<Node> {
        let dir = self.env.dir.display().to_string();
        let mut out = vec![Node::simple(&["access_log", "off"])];
        for m in self.env.temp_modules {
            let (key, path) = (format!("{m}_temp_path"), format!("{dir}/{m}_temp"));
            out.push(Node::simple(&[key.as_str(), path.as_str()]));
        }
        for n in nodes {
            if n.is_block("upstream") {
                out.push(self.upstream(n));
            } else if n.is_block("server") {
                out.push(self.server(n));
            } else {
                out.extend(self.keep(n));
            }
        }
        out
    }

    /// Any other directive: removed, its path made absolute, or kept; its block likewise.
    fn keep(&self, n: &Node) -> Option<Node> {
        let name = n.name();
        if REMOVED.contains(&name) || name.starts_with("ssl_") {
            return None;
        }
        let mut n = n.clone();
        match name {
            // Only mime.types is read (when the machine has it): another file's directives
            // would escape these rewrites (certbot's options-ssl-nginx.conf holds ssl_*).
            "include" => {
                let path = self.absolute(&n.arg(0));
                if !path.ends_with("mime.types") || !Path::new(&path).is_file() {
                    return None;
                }
                n.words = vec!["include".into(), path];
            }
            "auth_basic_user_file" => {
                n.words = vec![name.to_string(), self.absolute(&n.arg(0))];
            }
            _ => {}
        }
        if let Some(b) = n.block.take() {
            n.block = Some(b.iter().filter_map(|c| self.keep(c)).collect());
        }
        Some(n)
    }

    /// Relative paths are nginx's prefix's: the original file's directory.
    fn absolute(&self, p: &str) -> String {
        if Path::new(p).is_absolute() {
            p.to_string()
        } else {
            self.env.src_dir.join(p).display().to_string()
        }
    }

    fn recorder(&self, name: &str) -> SocketAddr {
        *self
            .env
            .recorders
            .get(name)
            .unwrap_or_else(|| panic!("no recorder for {name}"))
    }

    /// Every `server` line points at the group's recorder; the other parameters stay
    /// (`resolve`, NGINX Plus only in 1.22, goes).
    fn upstream(&self, n: &Node) -> Node {
        let addr = self.recorder(&n.arg(0).to_ascii_lowercase());
        let mut block = Vec::new();
        for c in n.children() {
            if c.name() == "server" {
                let mut words = vec!["server".to_string(), addr.to_string()];
                words.extend(
                    c.words
                        .iter()
                        .skip(2)
                        .filter(|w| w.as_str() != "resolve")
                        .cloned(),
                );
                block.push(Node { words, block: None });
            } else {
                block.extend(self.keep(c));
            }
        }
        Node::with_block(n.words.clone(), block)
    }

    fn server(&mut self, n: &Node) -> Node {
        let site: &Site = self.site;
        let info = &site.servers[self.next_server];
        self.next_server += 1;
        let mut block = Vec::new();
        for &(tls, default) in &info.listens {
            let port = if tls {
                self.env.https_port
            } else {
                self.env.http_port
            };
            let mut words = vec!["listen".to_string(), format!("127.0.0.1:{port}")];
            if default {
                words.push("default_server".into());
            }
            block.push(Node { words, block: None });
        }
        let existing: Vec<(String, String)> = n
            .children()
            .iter()
            .filter(|c| c.is_block("location"))
            .filter_map(location_path)
            .collect();
        for c in n.children() {
            if c.name() == "listen" {
                continue;
            }
            if c.is_block("location") {
                block.extend(self.location(c, &existing));
            } else {
                block.extend(self.keep(c));
            }
        }
        Node::with_block(n.words.clone(), block)
    }

    /// A proxied location pointed at its recorder, with `X-Oracle-Location`; in the twin, a
    /// URI part where it had none, and a prefix without trailing slash split in two.
    fn location(&mut self, n: &Node, existing: &[(String, String)]) -> Vec<Node> {
        let kept: Vec<Node> = n.children().iter().filter_map(|c| self.keep(c)).collect();
        if !n.children().iter().any(|c| c.name() == "proxy_pass") {
            return vec![Node::with_block(n.words.clone(), kept)];
        }
        let site: &Site = self.site;
        let loc = &site.locations[self.next_loc];
        self.next_loc += 1;
        assert_eq!(
            location_path(n).map(|(_, p)| p).as_deref(),
            Some(loc.path.as_str()),
            "the rewrite reads the locations in the order Site::read did"
        );
        let base = if site.blocks.contains(&loc.upstream) {
            format!("http://{}", loc.upstream)
        } else {
            format!("http://{}", self.recorder(&loc.upstream))
        };
        let body = |uri: &str| -> Vec<Node> {
            let mut out = Vec::new();
            for c in &kept {
                if c.name() == "proxy_pass" {
                    let pass = format!("{base}{uri}");
                    out.push(Node::simple(&["proxy_pass", pass.as_str()]));
                    out.push(Node::simple(&[
                        "proxy_set_header",
                        "X-Oracle-Location",
                        loc.id.as_str(),
                    ]));
                } else {
                    out.push(c.clone());
                }
            }
            out
        };
        if !self.env.twin {
            return vec![Node::with_block(
                n.words.clone(),
                body(loc.uri.as_deref().unwrap_or("")),
            )];
        }
        // The twin: nginx re-escapes its normalized `$uri` only for a proxy_pass with a URI
        // part, and the URI equal to the location's path changes nothing else.
        let uri = loc.uri.clone().unwrap_or_else(|| loc.path.clone());
        if !loc.open_prefix() {
            return vec![Node::with_block(n.words.clone(), body(uri.as_str()))];
        }
        // `location /api` as the gateway's prefix: `= /api` and `/api/` (with `/` appended
        // to the URI part, so that `/api/x` still becomes URI + `/x`), each only where the
        // server has no such location already.
        let (modifier, path) = location_path(n).unwrap_or_default();
        let mut out = Vec::new();
        if !existing.iter().any(|(m, p)| m == "=" && *p == path) {
            let words = vec!["location".into(), "=".into(), path.clone()];
            out.push(Node::with_block(words, body(uri.as_str())));
        }
        let slashed = format!("{path}/");
        if !existing.iter().any(|(m, p)| m != "=" && *p == slashed) {
            let mut words = vec!["location".to_string()];
            if modifier == "^~" {
                words.push(modifier);
            }
            words.push(slashed);
            out.push(Node::with_block(words, body(format!("{uri}/").as_str())));
        }
        out
    }
}
