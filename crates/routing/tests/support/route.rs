//! The one route builder of the routing crate's unit tests, property tests and benchmark
//! (included by each with `#[path]`): a `Route` whose settings routing never looks at are
//! fixed, so a table is written as names, hosts, paths and rewrites.
#![allow(dead_code)] // each includer uses a part

use gateway_config::{HostMatch, PathMatch, Route, Timeouts};
use std::time::Duration;

/// A route with WebSocket and compression on, a 1 MiB body limit and 60 s timeouts.
pub fn route(
    name: &str,
    host: Option<HostMatch>,
    path: PathMatch,
    upstream: &str,
    rewrite: Option<&str>,
) -> Route {
    Route {
        name: name.into(),
        host,
        path,
        upstream: upstream.into(),
        rewrite: rewrite.map(Into::into),
        websocket: true,
        compress: true,
        max_body: 1 << 20,
        timeouts: timeouts(Duration::from_secs(60)),
        response_headers: vec![],
        policies: vec![],
        maintenance: false,
    }
}

/// The same `t` for connect, read, write and idle.
pub fn timeouts(t: Duration) -> Timeouts {
    Timeouts {
        connect: t,
        read: t,
        write: t,
        idle: t,
    }
}
