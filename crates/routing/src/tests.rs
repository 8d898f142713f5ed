use super::*;
use gateway_config::{HostMatch, PathMatch};

#[path = "../tests/support/route.rs"]
mod support;
pub(crate) use support::route;

fn p(s: &str) -> PathMatch {
    PathMatch::Prefix(s.into())
}

/// A route for `host`: that host exactly, or with a leading dot its subdomains.
fn on_host(name: &str, host: &str, path: PathMatch, upstream: &str) -> gateway_config::Route {
    let host = if host.starts_with('.') {
        HostMatch::Suffix(host.into())
    } else {
        HostMatch::Exact(host.into())
    };
    route(name, Some(host), path, upstream, None)
}

/// The routes of the reference nginx.conf.
fn reference() -> RouteTable {
    RouteTable::new(&[
        route("frontend", None, p("/"), "api", None),
        route("api", None, p("/api/"), "api", None),
        route("docs", None, p("/docs/"), "api", None),
        route("n8n", None, p("/n8n/"), "n8n", Some("/")),
        route("webhook", None, p("/webhook/"), "n8n", None),
        route("ai", None, p("/ai/"), "openwebui", Some("/")),
        route("health", None, p("/health"), "api", Some("/api/health")),
        route(
            "exact",
            None,
            PathMatch::Exact("/exact".into()),
            "api",
            Some("/other"),
        ),
        route("exact-prefix", None, p("/exact"), "n8n", None),
    ])
}

fn fwd(t: &RouteTable, host: Option<&str>, target: &str) -> (String, String) {
    match t.decide(host, target) {
        Decision::Forward {
            route, upstream_path, ..
        } => (route.name.clone(), upstream_path),
        other => panic!("{target}: expected a forward, got {other:?}"),
    }
}

#[test]
fn reference_routes() {
    let t = reference();
    assert_eq!(
        fwd(&t, None, "/n8n/rest/push"),
        ("n8n".into(), "/rest/push".into())
    );
    assert_eq!(fwd(&t, None, "/health"), ("health".into(), "/api/health".into()));
    assert_eq!(
        fwd(&t, None, "/health/deep"),
        ("health".into(), "/api/health/deep".into())
    );
    assert_eq!(fwd(&t, None, "/healthz"), ("frontend".into(), "/healthz".into()));
    assert_eq!(fwd(&t, None, "/api/../n8n/x"), ("n8n".into(), "/x".into()));
    assert_eq!(
        fwd(&t, None, "/api/v1/items?a=1&b=%20"),
        ("api".into(), "/api/v1/items?a=1&b=%20".into())
    );
    assert_eq!(fwd(&t, None, "/"), ("frontend".into(), "/".into()));
    assert_eq!(fwd(&t, None, "/ai/"), ("ai".into(), "/".into()));
    assert_eq!(fwd(&t, None, "/n8n//a/./b"), ("n8n".into(), "/a/b".into()));
    assert_eq!(fwd(&t, None, "/%6e8n/x"), ("n8n".into(), "/x".into()));
}

#[test]
fn exact_beats_prefix_and_longest_prefix_wins() {
    let t = reference();
    assert_eq!(fwd(&t, None, "/exact"), ("exact".into(), "/other".into()));
    assert_eq!(
        fwd(&t, None, "/exact/more"),
        ("exact-prefix".into(), "/exact/more".into())
    );
    assert_eq!(
        fwd(&t, None, "/webhook/abc"),
        ("webhook".into(), "/webhook/abc".into())
    );
}

#[test]
fn slash_redirect_like_nginx() {
    let t = reference();
    assert_eq!(
        t.decide(None, "/n8n"),
        Decision::Redirect {
            location: "/n8n/".into()
        }
    );
    assert_eq!(
        t.decide(None, "/n8n?x=1"),
        Decision::Redirect {
            location: "/n8n/?x=1".into()
        }
    );
    assert_eq!(
        t.decide(None, "/n8n/../ai"),
        Decision::Redirect {
            location: "/ai/".into()
        }
    );
}

#[test]
fn rejected_targets() {
    let t = reference();
    for bad in ["/../x", "/%00", "/a/%2e%2e/%2e%2e/x", "x", "*"] {
        assert!(matches!(t.decide(None, bad), Decision::BadRequest(_)), "{bad}");
    }
}

#[test]
fn no_route_is_not_found() {
    let t = RouteTable::new(&[route("a", None, p("/a/"), "api", None)]);
    assert_eq!(t.decide(None, "/b"), Decision::NotFound);
}

#[test]
fn host_specific_routes_beat_host_less_ones() {
    let t = RouteTable::new(&[
        route("any", None, p("/"), "api", None),
        route("any-x", None, p("/x/"), "api", None),
        on_host("n8n", "n8n.example.com", p("/"), "n8n"),
        on_host("wild", ".example.com", p("/"), "w"),
        on_host("deep", ".eu.example.com", p("/"), "d"),
    ]);
    assert_eq!(fwd(&t, Some("N8N.example.com:8443"), "/x/1").0, "n8n");
    assert_eq!(fwd(&t, Some("n8n.example.com."), "/").0, "n8n");
    assert_eq!(fwd(&t, Some("ai.example.com"), "/").0, "wild");
    assert_eq!(fwd(&t, Some("a.eu.example.com"), "/").0, "deep");
    assert_eq!(fwd(&t, Some("example.com"), "/").0, "any");
    assert_eq!(fwd(&t, Some("other.org"), "/x/1").0, "any-x");
    assert_eq!(fwd(&t, None, "/").0, "any");
    assert_eq!(fwd(&t, Some("[::1]:443"), "/").0, "any");
}

#[test]
fn host_group_without_a_matching_path_falls_back() {
    let t = RouteTable::new(&[
        route("any", None, p("/"), "api", None),
        on_host("h", "h.com", p("/only/"), "n8n"),
    ]);
    assert_eq!(fwd(&t, Some("h.com"), "/only/x").0, "h");
    assert_eq!(fwd(&t, Some("h.com"), "/else").0, "any");
}
