//! The route table: nginx `location` semantics as pure functions, no sockets, no Pingora.
//!
//! A request target is normalized exactly as nginx normalizes `$uri` (percent-decoding,
//! `.`/`..` resolution, merged slashes; the parser is a faithful port of nginx's), then
//! matched:
//! - routes for the request's host are tried first (exact host, then the longest
//!   `*.suffix`), then routes without a host;
//! - within those, an exact path beats any prefix and the longest prefix wins;
//! - prefixes match at segment boundaries: `/api/` matches `/api/x`, and `/health`
//!   matches `/health` and `/health/x` but not `/healthz`;
//! - a request for `/n8n` when only the prefix `/n8n/` exists gets a 301 to `/n8n/`.
//!
//! The path sent upstream is the normalized one with the route's rewrite applied, then
//! percent-encoded again where needed, so it never holds a dot-segment.

mod encode;

use gateway_config::{HostMatch, PathMatch, Route};
use rustc_hash::FxHashMap;
use std::borrow::Cow;

pub use encode::encode_path;

/// What the table needs of a route: where it matches and how its path is rewritten. The
/// table holds any payload that says so (linkerd2-proxy's `Route<P>` shape): the config's
/// [`Route`], or the proxy's compiled route with its upstream, headers and filters.
pub trait Routable {
    fn host(&self) -> Option<&HostMatch>;
    fn path(&self) -> &PathMatch;
    /// Replacement for the matched part of the path (nginx `proxy_pass http://up/new/;`).
    fn rewrite(&self) -> Option<&str>;
}

impl Routable for Route {
    fn host(&self) -> Option<&HostMatch> {
        self.host.as_ref()
    }
    fn path(&self) -> &PathMatch {
        &self.path
    }
    fn rewrite(&self) -> Option<&str> {
        self.rewrite.as_deref()
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a, P = Route> {
    /// Proxy to the route's upstream with this path (and query).
    Forward {
        route: &'a P,
        index: usize,
        upstream_path: String,
    },
    /// Answer `301` with this `Location` (nginx's slash redirect).
    Redirect { location: String },
    /// No route: `404`.
    NotFound,
    /// The target is malformed or escapes the root: `400`.
    BadRequest(&'static str),
}

#[derive(Default, Debug)]
struct Group {
    exact: FxHashMap<Box<[u8]>, usize>,
    prefix: FxHashMap<Box<[u8]>, usize>,
    /// `/n8n` → the route of `/n8n/`, for the slash redirect.
    redirect: FxHashMap<Box<[u8]>, usize>,
}

impl Group {
    fn add(&mut self, index: usize, path: &PathMatch) {
        match path {
            PathMatch::Exact(p) => {
                self.exact.insert(p.as_bytes().into(), index);
            }
            PathMatch::Prefix(p) => {
                self.prefix.insert(p.as_bytes().into(), index);
                if p.len() > 1 && p.ends_with('/') {
                    self.redirect.insert(p.as_bytes()[..p.len() - 1].into(), index);
                }
            }
        }
    }

    fn lookup(&self, path: &[u8]) -> Option<Hit> {
        if let Some(&i) = self.exact.get(path) {
            return Some(Hit::Route(i, path.len()));
        }
        if let Some(&i) = self.prefix.get(path) {
            return Some(Hit::Route(i, path.len()));
        }
        if let Some(&i) = self.redirect.get(path) {
            return Some(Hit::Redirect(i));
        }
        // Shorter candidates end at a segment boundary: `/a/b/` then `/a/b` for `/a/b/c`.
        let mut end = path.len();
        while let Some(slash) = path[..end].iter().rposition(|&b| b == b'/') {
            if slash + 1 < path.len() {
                if let Some(&i) = self.prefix.get(&path[..=slash]) {
                    return Some(Hit::Route(i, slash + 1));
                }
            }
            if slash > 0 {
                if let Some(&i) = self.prefix.get(&path[..slash]) {
                    return Some(Hit::Route(i, slash));
                }
            }
            end = slash;
        }
        None
    }
}

enum Hit {
    /// Route index and the length of the matched prefix.
    Route(usize, usize),
    Redirect(usize),
}

/// An immutable, compiled route table over routes of type `P`.
#[derive(Debug)]
pub struct RouteTable<P = Route> {
    routes: Vec<P>,
    exact_hosts: FxHashMap<Box<str>, Group>,
    /// `.example.com` suffixes, longest first.
    suffix_hosts: Vec<(Box<str>, Group)>,
    any_host: Group,
}

impl RouteTable<Route> {
    /// Compiles validated routes (the config crate already refused duplicates).
    pub fn new(routes: &[Route]) -> Self {
        Self::from_routes(routes.to_vec())
    }
}

impl<P: Routable> RouteTable<P> {
    /// Compiles routes of any payload (the config crate already refused duplicates); a
    /// route's index is its position in `routes`.
    pub fn from_routes(routes: Vec<P>) -> Self {
        let mut t = RouteTable {
            routes,
            exact_hosts: FxHashMap::default(),
            suffix_hosts: Vec::new(),
            any_host: Group::default(),
        };
        for (i, r) in t.routes.iter().enumerate() {
            let group = match r.host() {
                None => &mut t.any_host,
                Some(HostMatch::Exact(h)) => t.exact_hosts.entry(h.as_str().into()).or_default(),
                Some(HostMatch::Suffix(s)) => {
                    let pos = match t.suffix_hosts.iter().position(|(k, _)| **k == **s) {
                        Some(p) => p,
                        None => {
                            t.suffix_hosts.push((s.as_str().into(), Group::default()));
                            t.suffix_hosts.len() - 1
                        }
                    };
                    &mut t.suffix_hosts[pos].1
                }
            };
            group.add(i, r.path());
        }
        t.suffix_hosts.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        t
    }

    pub fn routes(&self) -> &[P] {
        &self.routes
    }

    /// Decides what to do with a request for `target` (`/path?query`, origin form) on `host`
    /// (the `Host` header or `:authority`, port allowed).
    pub fn decide(&self, host: Option<&str>, target: &str) -> Decision<'_, P> {
        if !target.starts_with('/') {
            return Decision::BadRequest("the request target is not a path");
        }
        let parsed = match url_parse_nginx::parse_origin_form(target.as_bytes(), true) {
            Ok(p) => p,
            Err(_) => return Decision::BadRequest("the path is malformed or escapes the root"),
        };
        let path: &[u8] = &parsed.path;
        let host = host.map(normalize_host);
        let hit = self.find(host.as_deref(), path);
        let args = parsed.args;
        match hit {
            None => Decision::NotFound,
            Some(Hit::Redirect(i)) => {
                let PathMatch::Prefix(p) = self.routes[i].path() else {
                    return Decision::NotFound;
                };
                let mut location = encode_path(p.as_bytes());
                if let Some(a) = args {
                    location.push('?');
                    location.push_str(&String::from_utf8_lossy(a));
                }
                Decision::Redirect { location }
            }
            Some(Hit::Route(i, matched)) => {
                let route = &self.routes[i];
                let rewritten: Cow<'_, [u8]> = match route.rewrite() {
                    None => Cow::Borrowed(path),
                    Some(new) => {
                        let rest = match route.path() {
                            PathMatch::Exact(_) => &[][..],
                            PathMatch::Prefix(_) => &path[matched..],
                        };
                        let mut v = Vec::with_capacity(new.len() + rest.len());
                        v.extend_from_slice(new.as_bytes());
                        // `/health` rewritten to `/api/health/` must not give `//x`.
                        if new.ends_with('/') && rest.first() == Some(&b'/') {
                            v.extend_from_slice(&rest[1..]);
                        } else {
                            v.extend_from_slice(rest);
                        }
                        Cow::Owned(v)
                    }
                };
                let mut upstream_path = encode_path(&rewritten);
                if let Some(a) = args {
                    upstream_path.push('?');
                    upstream_path.push_str(&String::from_utf8_lossy(a));
                }
                Decision::Forward {
                    route,
                    index: i,
                    upstream_path,
                }
            }
        }
    }

    /// The route for an already-normalized path, for callers that only need the name.
    pub fn match_normalized(&self, host: Option<&str>, path: &[u8]) -> Option<usize> {
        let host = host.map(normalize_host);
        match self.find(host.as_deref(), path) {
            Some(Hit::Route(i, _)) | Some(Hit::Redirect(i)) => Some(i),
            None => None,
        }
    }

    fn find(&self, host: Option<&str>, path: &[u8]) -> Option<Hit> {
        if let Some(h) = host {
            if let Some(hit) = self.exact_hosts.get(h).and_then(|g| g.lookup(path)) {
                return Some(hit);
            }
            for (suffix, g) in &self.suffix_hosts {
                if h.len() > suffix.len() && h.ends_with(&**suffix) {
                    if let Some(hit) = g.lookup(path) {
                        return Some(hit);
                    }
                }
            }
        }
        self.any_host.lookup(path)
    }
}

/// The host name of a `Host` value: no port, no trailing dot, lower case.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let name = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests;
