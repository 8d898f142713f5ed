//! nginx directives → `proxy.toml` sections.
//!
//! The walk follows nginx's contexts: the main context (`worker_*`, `events`), `http`
//! (upstreams, zones, formats, globals), each `server` (listeners, names, certificates) and
//! each `location` under it (one `[[routes]]` table per location and server name). A
//! directive in a location inherits as nginx inherits: the innermost of location, server and
//! http that has any directive of that name supplies all of them (array directives such as
//! `proxy_set_header`, `add_header`, `allow`/`deny` are replaced as a whole, not merged).
//!
//! Every directive ends in exactly one of three places: translated (a key, with a comment
//! naming its line), dropped (built in or not needed: listed at the top of the file), or a
//! [`Note`] (not translated, with why and what to do). The final sweep puts every directive
//! the translation did not use into one of the last two.

mod global;
mod headers;
mod policy;
mod route;
mod server;
mod tables;
mod upstream;
pub(crate) mod values;

use crate::emit::{self, Section};
use crate::parse::Directive;
use crate::{Import, Note};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The directives named `names` in effect for a scope chain (outermost first): those of the
/// innermost scope that has any, with that scope's index.
pub(crate) fn eff<'a>(chain: &[&'a [Directive]], names: &[&str]) -> Option<(usize, Vec<&'a Directive>)> {
    for (level, &scope) in chain.iter().enumerate().rev() {
        let found: Vec<&'a Directive> = scope
            .iter()
            .filter(|d| names.contains(&d.name.as_str()))
            .collect();
        if !found.is_empty() {
            return Some((level, found));
        }
    }
    None
}

/// All the directives of [`eff`], or none.
pub(crate) fn eff_all<'a>(chain: &[&'a [Directive]], names: &[&str]) -> Vec<&'a Directive> {
    eff(chain, names).map(|(_, v)| v).unwrap_or_default()
}

/// The one directive of that name in effect (the last, if a scope repeats it).
pub(crate) fn eff1<'a>(chain: &[&'a [Directive]], name: &str) -> Option<&'a Directive> {
    eff(chain, &[name]).and_then(|(_, v)| v.last().copied())
}

/// `nginx.conf:42`: the file's name and the line.
pub(crate) fn at(d: &Directive) -> String {
    let file = d
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| d.file.display().to_string());
    format!("{file}:{}", d.line)
}

/// `nginx.conf:42: proxy_read_timeout 300s;`: the comment naming a key's source.
pub(crate) fn src(d: &Directive) -> String {
    if d.block.is_some() {
        format!("{}: {}", at(d), d.text())
    } else {
        format!("{}: {};", at(d), d.text())
    }
}

/// The translation's state: the sections being filled and what happened to each directive.
pub(crate) struct Tr<'a> {
    /// The main file's directory (absolute where it can be): nginx's prefix, against which
    /// relative paths (certificates, htpasswd files) are read.
    main_dir: PathBuf,
    main_name: String,
    handled: HashSet<usize>,
    /// Blocks summed up by a note or a drop: the sweep does not look inside.
    covered: HashSet<usize>,
    /// Locations whose own directives are summed up by a note (their `proxy_pass` does not
    /// translate): the sweep only looks at their nested locations.
    partly: HashSet<usize>,
    noted: HashSet<(usize, String)>,
    notes: Vec<(usize, Note)>,
    /// (id, directive text, where, why).
    dropped: Vec<(usize, String, String, String)>,
    listen: Section,
    server: Section,
    tls: Section,
    tls_certs: Vec<Section>,
    acme: Option<Section>,
    acme_certs: Vec<Section>,
    limits: Section,
    compression: Section,
    security: Section,
    forwarding: Section,
    logging: Section,
    formats: Section,
    policies: Vec<(String, Section)>,
    policy_names: HashSet<String>,
    ups: Vec<upstream::Up>,
    up_names: HashSet<String>,
    routes: Vec<route::RouteOut>,
    route_names: HashSet<String>,
    /// (host, exact, path) → where the first such location is.
    route_keys: HashMap<(Option<String>, bool, String), String>,
    /// Locations answered by `auth_request` (a `forward_auth`), not routes.
    auth_locations: HashSet<usize>,
    /// ACME challenge locations and their `root`/`alias`, decided once certificates are.
    acme_roots: Vec<(&'a Directive, &'a Directive)>,
    zones: HashMap<String, &'a Directive>,
    /// `log_format` names and whether each was translated.
    log_formats: HashMap<String, bool>,
    host_votes: Vec<(route::HostMode, &'a Directive)>,
    /// Request headers the gateway sets itself, by name, with the first line that asked.
    builtin: BTreeMap<String, String>,
    certs: Vec<server::Cert<'a>>,
    /// `[limits] max_body` as written (`1M`, nginx's default, when http sets none).
    global_max_body: String,
    http_gzip: Option<&'a Directive>,
}

/// Translates a parsed tree; `path` is the main file.
pub(crate) fn translate(tree: &[Directive], path: &Path) -> Import {
    let mut t = Tr::new(path);
    t.run(tree);
    t.finish(tree)
}

impl<'a> Tr<'a> {
    fn new(path: &Path) -> Self {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let main_dir = std::path::absolute(&dir).unwrap_or(dir);
        let main_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Tr {
            main_dir,
            main_name,
            handled: HashSet::new(),
            covered: HashSet::new(),
            partly: HashSet::new(),
            noted: HashSet::new(),
            notes: Vec::new(),
            dropped: Vec::new(),
            listen: Section::new("listen"),
            server: Section::new("server"),
            tls: Section::new("tls"),
            tls_certs: Vec::new(),
            acme: None,
            acme_certs: Vec::new(),
            limits: Section::new("limits"),
            compression: Section::new("compression"),
            security: Section::new("security"),
            forwarding: Section::new("forwarding"),
            logging: Section::new("logging"),
            formats: Section::new("logging.formats"),
            policies: Vec::new(),
            policy_names: HashSet::new(),
            ups: Vec::new(),
            up_names: HashSet::new(),
            routes: Vec::new(),
            route_names: HashSet::new(),
            route_keys: HashMap::new(),
            auth_locations: HashSet::new(),
            acme_roots: Vec::new(),
            zones: HashMap::new(),
            log_formats: HashMap::new(),
            host_votes: Vec::new(),
            builtin: BTreeMap::new(),
            certs: Vec::new(),
            global_max_body: "1M".into(),
            http_gzip: None,
        }
    }

    fn run(&mut self, tree: &'a [Directive]) {
        let blocks: Vec<&'a Directive> = tree
            .iter()
            .filter(|d| d.name == "http" && d.block.is_some())
            .collect();
        // A file without `http` is a fragment of it (conf.d/*.conf): its top level is http.
        let http: &'a [Directive] = match blocks.first() {
            Some(h) => {
                self.mark(h);
                h.children()
            }
            None => tree,
        };
        for extra in blocks.iter().skip(1) {
            self.note(extra, "a second http block (nginx refuses it): not translated");
            self.covered.insert(extra.id);
        }
        self.main_context(tree);
        self.upstream_blocks(http);
        self.zones_and_formats(http);
        let servers = self.servers(http);
        self.listeners(&servers);
        self.http_globals(tree, http, &servers);
        self.tls_settings(http, &servers);
        self.security_headers(http, &servers);
        for s in &servers {
            self.server_routes(http, s);
        }
        self.certificates(http, &servers);
        self.default_server(&servers);
        self.finish_routes();
    }

    /// nginx answers a name no `server_name` lists with the port's default server (the one
    /// with `default_server`, else the first); the gateway has no default server: a request
    /// for a name no route lists is a 404 (the equivalence test's `DefaultServer`). Noted when
    /// every HTTPS server has names (no route without `host` is made).
    fn default_server(&mut self, servers: &[server::ServerInfo<'a>]) {
        let https: Vec<&server::ServerInfo<'a>> = servers.iter().filter(|s| s.https && !s.skip).collect();
        if https.is_empty() || https.iter().any(|s| s.hosts.is_empty()) {
            return;
        }
        let Some(d) = https
            .iter()
            .find(|s| s.default_server)
            .or_else(|| https.first())
            .map(|s| s.d)
        else {
            return;
        };
        self.note_as(
            d,
            "server (nginx's default server for HTTPS)".into(),
            "nginx answers requests for names no server_name lists (and clients without SNI) with this server; the gateway answers them 404: to keep that, add this server's routes once more without `host`",
        );
    }

    /// The directive is translated (or deliberately consumed).
    fn mark(&mut self, d: &Directive) {
        self.handled.insert(d.id);
    }

    /// Not translated: a note (once per directive and reason).
    fn note(&mut self, d: &Directive, why: impl Into<String>) {
        self.note_as(d, d.text(), why);
    }

    fn note_as(&mut self, d: &Directive, directive: String, why: impl Into<String>) {
        let why = why.into();
        self.handled.insert(d.id);
        if self.noted.insert((d.id, why.clone())) {
            self.notes.push((
                d.id,
                Note {
                    file: d.file.to_path_buf(),
                    line: d.line,
                    directive,
                    why,
                },
            ));
        }
    }

    /// Built in or not needed: listed at the top of the file.
    fn drop(&mut self, d: &Directive, why: impl Into<String>) {
        self.handled.insert(d.id);
        if !self.dropped.iter().any(|x| x.0 == d.id) {
            let text = if d.block.is_some() {
                format!("{} {{ ... }}", d.text())
            } else {
                format!("{};", d.text())
            };
            self.dropped.push((d.id, text, at(d), why.into()));
        }
    }

    /// A path from nginx.conf, absolute: relative ones are nginx's prefix's (the main
    /// file's directory).
    fn abs(&self, p: &str) -> String {
        if Path::new(p).is_absolute() {
            p.to_owned()
        } else {
            self.main_dir.join(p).display().to_string()
        }
    }

    /// Every directive not used: dropped or noted. Blocks not handled are noted whole.
    /// `only_locations`: look at nested locations only (see `partly`).
    fn sweep(&mut self, dirs: &'a [Directive], only_locations: bool) {
        for d in dirs {
            if only_locations && d.name != "location" {
                continue;
            }
            if !self.handled.contains(&d.id) {
                match tables::dropped(d) {
                    Some(why) => self.drop(d, why),
                    None => {
                        let why = tables::why(d);
                        self.note(d, why);
                    }
                }
                continue;
            }
            if d.block.is_some() && !self.covered.contains(&d.id) {
                let partly = self.partly.contains(&d.id);
                self.sweep(d.children(), partly);
            }
        }
    }

    fn finish(mut self, tree: &'a [Directive]) -> Import {
        self.sweep(tree, false);
        self.notes.sort_by_key(|(id, _)| *id);
        let notes: Vec<Note> = self.notes.iter().map(|(_, n)| n.clone()).collect();
        let mut out = String::new();
        let mut head = Section::default();
        let c = &mut head.comments;
        c.push(format!(
            "proxy.toml translated from {} by `gateway import-nginx`.",
            self.main_name
        ));
        c.push("Check it with `gateway check`; try URLs with `gateway route https://HOST/PATH`.".into());
        if !notes.is_empty() {
            c.push(String::new());
            c.push(format!(
                "Not translated ({}): each needs a decision, see why.",
                notes.len()
            ));
            for n in &notes {
                let file = n
                    .file
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                c.push(format!("  {file}:{}: {} ({})", n.line, n.directive, n.why));
            }
        }
        if !self.dropped.is_empty() {
            c.push(String::new());
            c.push("Built in or not needed here (nothing to write):".into());
            // One line per directive text and reason, with how often it appears.
            let mut lines: Vec<(String, String, String, usize)> = Vec::new();
            let mut dropped = self.dropped.clone();
            dropped.sort_by_key(|(id, ..)| *id);
            for (_, text, where_, why) in dropped {
                match lines.iter_mut().find(|(t, w, ..)| *t == text && *w == why) {
                    Some(l) => l.3 += 1,
                    None => lines.push((text, why, where_, 1)),
                }
            }
            for (text, why, where_, n) in lines {
                let more = if n > 1 {
                    format!(" (and {} more)", n - 1)
                } else {
                    String::new()
                };
                c.push(format!("  {where_}{more}: {text} -> {why}"));
            }
        }
        emit::render(&mut out, &head);
        let mut sections: Vec<&Section> = vec![&self.listen, &self.server, &self.tls];
        sections.extend(self.tls_certs.iter());
        if let Some(a) = &self.acme {
            sections.push(a);
        }
        sections.extend(self.acme_certs.iter());
        sections.extend([
            &self.limits,
            &self.compression,
            &self.security,
            &self.forwarding,
            &self.logging,
            &self.formats,
        ]);
        sections.extend(self.policies.iter().map(|(_, s)| s));
        sections.extend(self.ups.iter().filter(|u| u.valid).map(|u| &u.section));
        sections.extend(self.routes.iter().map(|r| &r.section));
        for s in sections {
            // `[acme]` stays even when empty: its certificates need it.
            if !s.entries.is_empty()
                || (!s.comments.is_empty() && s.header != "logging.formats")
                || s.header == "acme"
            {
                emit::render(&mut out, s);
            }
        }
        Import { toml: out, notes }
    }
}
