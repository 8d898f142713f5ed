//! Property tests: matching is a function of the normalized path, a normalized path survives
//! re-encoding, and what is forwarded never holds a dot-segment.
//!
//! `decide` normalizes with `url-parse-nginx`, so that parser is no oracle here: it only names
//! the normalized path. Agreement with nginx is checked against nginx itself in
//! `nginx_oracle.rs`.

use gateway_config::{PathMatch, Route};
use gateway_routing::{Decision, RouteTable};
use proptest::prelude::*;
use std::time::Duration;

#[path = "support/route.rs"]
mod support;

fn table() -> RouteTable {
    let mk = |name: &str, path: PathMatch, rewrite: Option<&str>| Route {
        websocket: false,
        compress: false,
        max_body: 0,
        timeouts: support::timeouts(Duration::from_secs(1)),
        ..support::route(name, None, path, "u", rewrite)
    };
    RouteTable::new(&[
        mk("root", PathMatch::Prefix("/".into()), None),
        mk("a", PathMatch::Prefix("/a/".into()), Some("/")),
        mk("ab", PathMatch::Prefix("/a/b".into()), Some("/x/")),
        mk("c", PathMatch::Exact("/c".into()), Some("/cc")),
        mk("dots", PathMatch::Prefix("/d.d/".into()), None),
    ])
}

/// Raw targets built from pieces that exercise nginx's normalizer.
fn target() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("c".to_string()),
        Just("d.d".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E%2e".to_string()),
        Just("".to_string()),
        Just("%61".to_string()),
        Just("x%20y".to_string()),
        Just("%2F".to_string()),
        Just("..%2f".to_string()),
        Just("%25".to_string()),
        "[a-z.%0-9]{1,4}".prop_map(|s| s),
    ];
    (
        proptest::collection::vec(piece, 0..8),
        any::<bool>(),
        proptest::option::of("[a-z=&]{0,5}"),
    )
        .prop_map(|(pieces, trailing, q)| {
            let mut s = String::from("/");
            s.push_str(&pieces.join("/"));
            if trailing {
                s.push('/');
            }
            if let Some(q) = q {
                s.push('?');
                s.push_str(&q);
            }
            s
        })
}

fn has_dot_segment(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or("");
    path.split('/').any(|seg| seg == "." || seg == "..")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn route_is_the_route_of_the_normalized_path(t in target()) {
        let table = table();
        let Ok(parsed) = url_parse_nginx::parse_origin_form(t.as_bytes(), true) else {
            return Ok(());
        };
        let d = table.decide(None, &t);
        let by_normalized = table.match_normalized(None, &parsed.path);
        let chosen = match &d {
            Decision::Forward { index, .. } => Some(*index),
            Decision::Redirect { .. } => by_normalized,
            _ => None,
        };
        prop_assert_eq!(chosen, by_normalized);
        // Deciding again on the normalized, re-encoded path gives the same answer.
        let again = gateway_routing::encode_path(&parsed.path);
        let d2 = table.decide(None, &again);
        match (&d, &d2) {
            (Decision::Forward { index: a, .. }, Decision::Forward { index: b, .. }) => prop_assert_eq!(a, b),
            (Decision::Redirect { .. }, Decision::Redirect { .. }) => {}
            _ => prop_assert!(false, "{t} -> {d:?} but {again} -> {d2:?}"),
        }
    }

    #[test]
    fn re_encoding_a_normalized_path_round_trips(t in target()) {
        let Ok(parsed) = url_parse_nginx::parse_origin_form(t.as_bytes(), true) else {
            return Ok(());
        };
        // What the gateway sends upstream normalizes back to the path it routed on.
        let encoded = gateway_routing::encode_path(&parsed.path);
        let Ok(back) = url_parse_nginx::parse_origin_form(encoded.as_bytes(), true) else {
            return Err(TestCaseError::fail(format!("{t}: {encoded} is refused")));
        };
        prop_assert_eq!(&*back.path, &*parsed.path, "{} -> {}", t, encoded);
        prop_assert!(back.args.is_none(), "{t}: {encoded} has a query");
    }

    #[test]
    fn forwarded_paths_hold_no_dot_segment(t in target()) {
        if let Decision::Forward { upstream_path, .. } = table().decide(None, &t) {
            prop_assert!(!has_dot_segment(&upstream_path), "{t} -> {upstream_path}");
            prop_assert!(upstream_path.starts_with('/'));
            prop_assert!(!upstream_path.split('?').next().unwrap().contains("//"), "{t} -> {upstream_path}");
        }
    }
}
