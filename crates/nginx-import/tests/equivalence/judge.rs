//! The comparison of one request: nginx against its normalizing twin, then the twin against
//! the gateway's decision; and the tally of a file (see `equivalence.rs` for the rules and
//! the exceptions).

use crate::conf::{host_name, Loc, Site};
use crate::support::Response;
use gateway_config::{Config, HostMatch, PathMatch, Route};
use gateway_routing::Decision;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What nginx did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Proxied: the recorder's name, the location's id (`X-Oracle-Location`), and the
    /// request-target the recorder received.
    Forwarded {
        upstream: String,
        location: String,
        target: Vec<u8>,
    },
    /// 301 or 302, and `Location` as nginx sent it.
    Redirect { status: u16, location: String },
    /// Answered by nginx itself: 400, 404...
    Status(u16),
}

pub(crate) fn answer(r: &Response) -> Answer {
    let text = |name: &str| {
        r.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| panic!("nginx answered {} without {name}", r.status))
    };
    match r.status {
        200 => Answer::Forwarded {
            upstream: text("x-upstream"),
            location: text("x-oracle-location"),
            target: r.body.clone(),
        },
        301 | 302 => Answer::Redirect {
            status: r.status,
            location: text("location"),
        },
        s => Answer::Status(s),
    }
}

/// `http://app.example.net:41719/app/?a` → `/app/?a` (nginx's slash redirect is absolute,
/// with the port it listens on).
fn path_of_location(location: &str) -> &str {
    let Some(i) = location.find("://") else {
        return location;
    };
    let rest = &location[i + 3..];
    rest.find('/').map_or("/", |j| &rest[j..])
}

/// nginx and its twin answered alike (a redirect's port is each one's own).
fn same_answer(a: &Answer, b: &Answer) -> bool {
    match (a, b) {
        (
            Answer::Redirect {
                status: s1,
                location: l1,
            },
            Answer::Redirect {
                status: s2,
                location: l2,
            },
        ) => s1 == s2 && path_of_location(l1) == path_of_location(l2),
        _ => a == b,
    }
}

/// The known differences, each counted, reported and bounded (see `equivalence.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Exception {
    RawTarget,
    Escaping,
    SegmentBoundary,
    EmptyQuery,
    DoubleSlash,
    DefaultServer,
    PlainHttpRefusal,
}

impl Exception {
    pub(crate) const ALL: [Exception; 7] = [
        Exception::RawTarget,
        Exception::Escaping,
        Exception::SegmentBoundary,
        Exception::EmptyQuery,
        Exception::DoubleSlash,
        Exception::DefaultServer,
        Exception::PlainHttpRefusal,
    ];

    /// The largest share of a file's requests (of its plain-HTTP requests for
    /// `PlainHttpRefusal`) an exception may explain: one that starts explaining more than
    /// its kind of request hides something else. Seen with seeds 1 to 6 and 400 generated
    /// targets per file: RawTarget up to 54 % (nginx-cloud.conf, where no location has a
    /// URI part), Escaping about 9 %, SegmentBoundary 16 % (upstreams.conf), EmptyQuery
    /// 0.5 %, DoubleSlash 1 %, DefaultServer at most 21 % (upstreams.conf: one name, and the
    /// unknown one), PlainHttpRefusal 24 % of the plain-HTTP requests.
    pub(crate) fn max_share(self) -> f64 {
        match self {
            Exception::RawTarget => 0.70,
            Exception::Escaping => 0.25,
            Exception::SegmentBoundary => 0.30,
            Exception::EmptyQuery => 0.02,
            Exception::DoubleSlash => 0.10,
            Exception::DefaultServer => 0.30,
            Exception::PlainHttpRefusal => 0.40,
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Exception::RawTarget => "no URI part in proxy_pass: nginx forwards the raw target",
            Exception::Escaping => "same bytes, escaped differently",
            Exception::SegmentBoundary => "nginx's `location /api` also matches `/apix`",
            Exception::EmptyQuery => "`?#`: nginx drops the empty query, the gateway keeps `?`",
            Exception::DoubleSlash => "`location /old` to `http://up/new/`: nginx sends `/new//x`",
            Exception::DefaultServer => "a name no server lists: nginx's named default server took it",
            Exception::PlainHttpRefusal => {
                "plain HTTP: nginx refuses a bad target, the gateway redirects it to HTTPS"
            }
        }
    }

    /// Explains a difference between the gateway and the twin (the others: between nginx
    /// and its twin, or on the plain-HTTP port).
    fn gateway_side(self) -> bool {
        matches!(
            self,
            Exception::Escaping | Exception::EmptyQuery | Exception::DoubleSlash | Exception::DefaultServer
        )
    }
}

/// One request over HTTPS and what nginx and its twin answered.
pub(crate) struct Case<'a> {
    /// As sent.
    pub(crate) host: &'a str,
    pub(crate) target: &'a str,
    pub(crate) nginx: &'a Answer,
    pub(crate) twin: &'a Answer,
}

/// What the comparison knows: the original file and the imported configuration.
pub(crate) struct Ctx<'a> {
    pub(crate) site: &'a Site,
    pub(crate) cfg: &'a Config,
}

impl Ctx<'_> {
    fn loc(&self, id: &str) -> Result<&Loc, String> {
        self.site
            .location(id)
            .ok_or_else(|| format!("nginx answered through an unknown location {id:?}"))
    }

    /// An answer, with the location's text for its id.
    pub(crate) fn show(&self, a: &Answer) -> String {
        match a {
            Answer::Forwarded {
                upstream,
                location,
                target,
            } => {
                let text = self
                    .site
                    .location(location)
                    .map_or(location.as_str(), |l| l.text.as_str());
                format!("{text} -> {upstream} {:?}", String::from_utf8_lossy(target))
            }
            Answer::Redirect { status, location } => format!("{status} {location:?}"),
            Answer::Status(s) => s.to_string(),
        }
    }

    /// Ok with the exceptions that explain the differences, or why nothing does.
    pub(crate) fn judge(
        &self,
        c: &Case<'_>,
        d: &Decision<'_>,
        ex: &mut Vec<Exception>,
    ) -> Result<(), String> {
        self.twin_explains(c, ex)?;
        let mut strict = Vec::new();
        match self.against_gateway(c, d, &mut strict) {
            Ok(()) => {
                ex.extend(strict);
                Ok(())
            }
            Err(_) if self.default_server(c, d) => {
                ex.push(Exception::DefaultServer);
                Ok(())
            }
            Err(why) => Err(why),
        }
    }

    /// nginx and its twin differ only where the twin was changed: the target of a
    /// location without URI part, or the location of a path past an open prefix.
    fn twin_explains(&self, c: &Case<'_>, ex: &mut Vec<Exception>) -> Result<(), String> {
        if same_answer(c.nginx, c.twin) {
            return Ok(());
        }
        match (c.nginx, c.twin) {
            (
                Answer::Forwarded {
                    upstream: u1,
                    location: l1,
                    ..
                },
                Answer::Forwarded {
                    upstream: u2,
                    location: l2,
                    ..
                },
            ) if l1 == l2 && u1 == u2 => {
                let loc = self.loc(l1)?;
                if loc.uri.is_some() {
                    return Err(format!(
                        "nginx and its twin differ on {}, which the twin has unchanged",
                        loc.text
                    ));
                }
                ex.push(Exception::RawTarget);
                Ok(())
            }
            (Answer::Forwarded { location, .. }, _)
                if self.site.location(location).is_some_and(Loc::open_prefix) =>
            {
                ex.push(Exception::SegmentBoundary);
                Ok(())
            }
            _ => Err(format!(
                "nginx and its twin differ: {} / {}",
                self.show(c.nginx),
                self.show(c.twin)
            )),
        }
    }

    /// The twin against the gateway.
    fn against_gateway(&self, c: &Case<'_>, d: &Decision<'_>, ex: &mut Vec<Exception>) -> Result<(), String> {
        match (c.twin, d) {
            (Answer::Status(400), Decision::BadRequest(_)) | (Answer::Status(404), Decision::NotFound) => {
                Ok(())
            }
            (Answer::Redirect { location: theirs, .. }, Decision::Redirect { location }) => {
                same_target(c.target, path_of_location(theirs).as_bytes(), location, None, ex)
            }
            (
                Answer::Forwarded {
                    upstream,
                    location: id,
                    target,
                },
                Decision::Forward {
                    route, upstream_path, ..
                },
            ) => {
                let loc = self.loc(id)?;
                if !self.translates(route, loc) {
                    return Err(format!(
                        "nginx: {} -> {upstream}; gateway: route {} ({}{}) -> {} {upstream_path:?}",
                        loc.text,
                        route.name,
                        route.host.as_ref().map(|h| format!("{h} ")).unwrap_or_default(),
                        route.path,
                        route.upstream
                    ));
                }
                let ours = self.upstream_of(&route.upstream);
                if ours != *upstream {
                    return Err(format!(
                        "{}: nginx reaches {upstream}, the gateway's route {} {ours}",
                        loc.text, route.name
                    ));
                }
                // `location /old` with `proxy_pass http://legacy/new/`: rewrite = "/new/".
                let joined = route.rewrite.as_deref().filter(|r| {
                    r.ends_with('/') && matches!(&route.path, PathMatch::Prefix(p) if !p.ends_with('/'))
                });
                same_target(c.target, target, upstream_path, joined, ex)
            }
            (twin, d) => Err(format!(
                "nginx: {}; gateway: {}",
                self.show(twin),
                show_decision(d)
            )),
        }
    }

    /// Whether `route` is the importer's translation of `loc`: the same path match, and a
    /// host made of the location's server's names (none for `server_name _`).
    fn translates(&self, route: &Route, loc: &Loc) -> bool {
        let path = if loc.exact {
            PathMatch::Exact(loc.path.clone())
        } else {
            PathMatch::Prefix(loc.path.clone())
        };
        let hosts = self.site.servers[loc.server].route_hosts();
        let host = match &route.host {
            None => hosts.is_empty(),
            Some(HostMatch::Exact(h)) => hosts.contains(h),
            Some(HostMatch::Suffix(s)) => hosts.contains(&format!("*{s}")),
        };
        route.path == path && host
    }

    /// The recorder a gateway upstream stands for: nginx's block of that name (the importer
    /// keeps block names), else the address of a `proxy_pass http://host:port`.
    fn upstream_of(&self, name: &str) -> String {
        let lower = name.to_ascii_lowercase();
        if self.site.blocks.contains(&lower) {
            return lower;
        }
        self.cfg.upstream(name).map_or_else(
            || format!("(no upstream {name})"),
            |u| u.authority().to_ascii_lowercase(),
        )
    }

    /// nginx's default server, which has names, took a name no server lists; the gateway
    /// has no default server: such a name gets the host-less routes or 404 (never a
    /// refusal nginx did not make).
    fn default_server(&self, c: &Case<'_>, d: &Decision<'_>) -> bool {
        let Some(default) = self.site.default_tls else {
            return false;
        };
        if self.site.lists(&host_name(c.host), true) || !self.site.servers[default].named() {
            return false;
        }
        let by_default = match c.twin {
            Answer::Forwarded { location, .. } => {
                self.site.location(location).is_some_and(|l| l.server == default)
            }
            Answer::Redirect { .. } => true,
            Answer::Status(_) => false,
        };
        let routed = match d {
            Decision::NotFound | Decision::Redirect { .. } => true,
            Decision::Forward { route, .. } => route.host.is_none(),
            Decision::BadRequest(_) => false,
        };
        by_default && routed
    }

    /// The plain-HTTP port: nginx's `return 301 https://$host$request_uri` against the
    /// gateway's `:80` listener, which redirects every request but ACME challenges to
    /// `https://` + the host without port + the target as received (`location` in
    /// crates/proxy/src/redirect.rs, written out here: gateway-proxy is not a dependency).
    pub(crate) fn judge_plain(
        &self,
        host: &str,
        target: &str,
        nginx: &Answer,
        d: &Decision<'_>,
        ex: &mut Vec<Exception>,
    ) -> Result<(), String> {
        if self.cfg.listen.http.is_empty() {
            return Err("nginx serves plain HTTP; the import has [listen] http = \"off\"".into());
        }
        let name = gateway_routing::normalize_host(host);
        let port = self.cfg.listen.public_https_port;
        let want = if port == 443 {
            format!("https://{name}{target}")
        } else {
            format!("https://{name}:{port}{target}")
        };
        match nginx {
            Answer::Redirect {
                status: 301,
                location,
            } if *location == want => Ok(()),
            Answer::Status(400) if matches!(d, Decision::BadRequest(_)) => {
                ex.push(Exception::PlainHttpRefusal);
                Ok(())
            }
            other => Err(format!(
                "nginx: {}; the gateway's :80 listener: 301 {want:?}",
                self.show(other)
            )),
        }
    }
}

/// A decision, short.
pub(crate) fn show_decision(d: &Decision<'_>) -> String {
    match d {
        Decision::Forward {
            route, upstream_path, ..
        } => format!(
            "route {} ({}{}) -> {} {upstream_path:?}",
            route.name,
            route.host.as_ref().map(|h| format!("{h} ")).unwrap_or_default(),
            route.path,
            route.upstream
        ),
        Decision::Redirect { location } => format!("301 {location:?}"),
        Decision::NotFound => "404".into(),
        Decision::BadRequest(why) => format!("400 ({why})"),
    }
}

/// nginx's forwarded target (or redirect) against the gateway's. `joined`: the route's
/// rewrite, when it ends in `/` on a prefix that does not (see `DoubleSlash`).
fn same_target(
    target: &str,
    nginx: &[u8],
    ours: &str,
    joined: Option<&str>,
    ex: &mut Vec<Exception>,
) -> Result<(), String> {
    let mut mine = ours.as_bytes();
    if empty_query_before_fragment(target) && mine.ends_with(b"?") && !nginx.ends_with(b"?") {
        mine = &mine[..mine.len() - 1];
        ex.push(Exception::EmptyQuery);
    }
    let mut theirs: Cow<'_, [u8]> = Cow::Borrowed(nginx);
    if let Some(u) = joined {
        // nginx sent `/old/x` as `/new/` + `/x`; the gateway as `/new/x`.
        let doubled = format!("{u}/");
        if nginx.starts_with(doubled.as_bytes()) && !mine.starts_with(doubled.as_bytes()) {
            let mut v = nginx[..u.len()].to_vec();
            v.extend_from_slice(&nginx[u.len() + 1..]);
            theirs = Cow::Owned(v);
            ex.push(Exception::DoubleSlash);
        }
    }
    if *theirs == *mine {
        return Ok(());
    }
    let (np, nq) = split_query(&theirs);
    let (mp, mq) = split_query(mine);
    if nq == mq && decode_except_slash(np) == decode_except_slash(mp) {
        ex.push(Exception::Escaping);
        return Ok(());
    }
    Err(format!(
        "nginx sends {:?}, the gateway {ours:?}",
        String::from_utf8_lossy(nginx)
    ))
}

/// `/a?#f`: nginx's `$args` is empty, not absent.
fn empty_query_before_fragment(target: &str) -> bool {
    match (target.find('?'), target.find('#')) {
        (Some(q), Some(h)) => h == q + 1,
        _ => false,
    }
}

fn split_query(t: &[u8]) -> (&[u8], Option<&[u8]>) {
    match t.iter().position(|&b| b == b'?') {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    }
}

/// Percent-decodes a path, except `%2F`: an encoded slash is not a slash.
fn decode_except_slash(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                let b = (h * 16 + l) as u8;
                if b != b'/' {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// The results of one file.
#[derive(Default)]
pub(crate) struct Tally {
    /// Requests over HTTPS.
    pub(crate) cases: usize,
    /// No exception at all.
    pub(crate) exact: usize,
    /// The twin and the gateway agree byte for byte (nginx and its twin may differ).
    pub(crate) gateway_exact: usize,
    pub(crate) refused: usize,
    pub(crate) redirected: usize,
    /// Agreements per location id (through the location nginx's twin chose).
    pub(crate) forwarded: BTreeMap<String, usize>,
    /// Count and first example.
    pub(crate) exceptions: BTreeMap<Exception, (usize, String)>,
    pub(crate) failures: Vec<String>,
    /// nginx's 200s per recorder, every port and both processes.
    pub(crate) answered: BTreeMap<String, usize>,
    /// Requests to the plain-HTTP port, and those answered as the gateway would.
    pub(crate) plain: usize,
    pub(crate) plain_exact: usize,
}

impl Tally {
    fn count_forwarded(&mut self, a: &Answer) {
        if let Answer::Forwarded { upstream, .. } = a {
            *self.answered.entry(upstream.clone()).or_default() += 1;
        }
    }

    fn note(&mut self, e: Exception, example: &str) {
        let first = || (0, example.to_string());
        self.exceptions.entry(e).or_insert_with(first).0 += 1;
    }

    pub(crate) fn record(&mut self, ctx: &Ctx<'_>, c: &Case<'_>, d: &Decision<'_>) {
        self.cases += 1;
        self.count_forwarded(c.nginx);
        self.count_forwarded(c.twin);
        let mut ex = Vec::new();
        match ctx.judge(c, d, &mut ex) {
            Ok(()) => {
                ex.sort();
                ex.dedup();
                if ex.is_empty() {
                    self.exact += 1;
                }
                if !ex.iter().any(|e| e.gateway_side()) {
                    self.gateway_exact += 1;
                }
                let compared = !ex.contains(&Exception::DefaultServer);
                match c.twin {
                    Answer::Forwarded { location, .. } if compared => {
                        *self.forwarded.entry(location.clone()).or_default() += 1;
                    }
                    Answer::Redirect { .. } if compared => self.redirected += 1,
                    Answer::Status(400) => self.refused += 1,
                    _ => {}
                }
                let example = format!("Host {:?} {:?}", c.host, c.target);
                for e in ex {
                    self.note(e, &example);
                }
            }
            Err(why) => self.failures.push(format!(
                "Host {:?} {:?}: {why}\n      nginx: {}\n      twin: {}\n      gateway: {}",
                c.host,
                c.target,
                ctx.show(c.nginx),
                ctx.show(c.twin),
                show_decision(d)
            )),
        }
    }

    pub(crate) fn record_plain(
        &mut self,
        ctx: &Ctx<'_>,
        host: &str,
        target: &str,
        nginx: &Answer,
        d: &Decision<'_>,
    ) {
        self.plain += 1;
        self.count_forwarded(nginx);
        let mut ex = Vec::new();
        match ctx.judge_plain(host, target, nginx, d, &mut ex) {
            Ok(()) => {
                if ex.is_empty() {
                    self.plain_exact += 1;
                }
                let example = format!("plain HTTP, Host {host:?} {target:?}");
                for e in ex {
                    self.note(e, &example);
                }
            }
            Err(why) => self
                .failures
                .push(format!("plain HTTP, Host {host:?} {target:?}: {why}")),
        }
    }

    pub(crate) fn count(&self, e: Exception) -> usize {
        self.exceptions.get(&e).map_or(0, |(n, _)| *n)
    }

    /// The share of the requests `e` is counted against.
    pub(crate) fn share(&self, e: Exception) -> f64 {
        let of = if e == Exception::PlainHttpRefusal {
            self.plain
        } else {
            self.cases
        };
        self.count(e) as f64 / of.max(1) as f64
    }

    pub(crate) fn report(&self) -> String {
        let pct = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
        let mut s = String::new();
        let (n, p) = (self.cases, self.plain);
        let _ = writeln!(s, "  HTTPS requests: {n}");
        let _ = writeln!(
            s,
            "    agree byte for byte: {} ({:.1} %)",
            self.exact,
            pct(self.exact, n)
        );
        let _ = writeln!(
            s,
            "    the gateway agrees with nginx's twin byte for byte: {} ({:.1} %)",
            self.gateway_exact,
            pct(self.gateway_exact, n)
        );
        let _ = writeln!(s, "    forwarded alike, per location: {:?}", self.forwarded);
        let _ = writeln!(s, "    refused with 400 by both: {}", self.refused);
        let _ = writeln!(s, "    redirected alike: {}", self.redirected);
        let _ = writeln!(
            s,
            "  plain-HTTP requests: {p}, redirected alike: {} ({:.1} %)",
            self.plain_exact,
            pct(self.plain_exact, p)
        );
        for e in Exception::ALL {
            let example = match self.exceptions.get(&e) {
                Some((_, t)) => format!(", e.g. {t}"),
                None => String::new(),
            };
            let _ = writeln!(
                s,
                "  exception {e:?} ({}): {}, {:.2} % (at most {:.0} %){example}",
                e.describe(),
                self.count(e),
                100.0 * self.share(e),
                100.0 * e.max_share(),
            );
        }
        let _ = writeln!(s, "  unexplained: {}", self.failures.len());
        for f in self.failures.iter().take(25) {
            let _ = writeln!(s, "    {f}");
        }
        s
    }
}
