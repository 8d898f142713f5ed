//! `gateway check` and `gateway route`: read-only views of a configuration.

use gateway_config::{Config, PathMatch};
use gateway_routing::{Decision, Routable, RouteTable};
use std::path::Path;
use std::process::ExitCode;

/// The validated file, or `None` after printing its errors (and their count) on stderr.
pub(crate) fn load(path: &Path) -> Option<Config> {
    match gateway_config::load(path) {
        Ok(c) => Some(c),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} error(s); configuration refused",
                path.display(),
                errors.0.len()
            );
            None
        }
    }
}

pub fn check(path: &Path) -> ExitCode {
    let Some(cfg) = load(path) else {
        return ExitCode::FAILURE;
    };
    let rows: Vec<[String; 5]> = cfg
        .routes
        .iter()
        .map(|r| {
            let up = cfg
                .upstream(&r.upstream)
                .map(|u| u.authority())
                .unwrap_or_default();
            let rewrite = match (&r.rewrite, &r.path) {
                (None, _) => "(path kept)".to_string(),
                (Some(new), PathMatch::Prefix(p)) => format!("{p} -> {new}"),
                (Some(new), PathMatch::Exact(p)) => format!("{p} -> {new}"),
            };
            [
                r.name.clone(),
                r.host.as_ref().map_or("*".to_string(), |h| h.to_string()),
                r.path.to_string(),
                format!("{} ({up})", r.upstream),
                rewrite,
            ]
        })
        .collect();
    print_table(&["ROUTE", "HOST", "PATH", "UPSTREAM", "REWRITE"], &rows);
    println!(
        "{}: ok ({} routes, {} upstreams; https {}, http {})",
        path.display(),
        cfg.routes.len(),
        cfg.upstreams.len(),
        gateway_config::addr_list(&cfg.listen.https),
        gateway_config::addr_list(&cfg.listen.http),
    );
    ExitCode::SUCCESS
}

fn print_table(header: &[&str; 5], rows: &[[String; 5]]) {
    let mut widths = header.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 5]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(*header);
    for r in rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4]]);
    }
}

/// Splits `https://host:port/path?q` into host and target; a bare `/path` has no host.
pub(crate) fn split_url(url: &str) -> (Option<&str>, &str) {
    let Some((_, rest)) = url.split_once("://") else {
        return (None, url);
    };
    match rest.find('/') {
        Some(i) => (Some(&rest[..i]), &rest[i..]),
        None => (Some(rest), "/"),
    }
}

/// `gateway route --file`: the answer from the file.
pub fn route(path: &Path, url: &str) -> ExitCode {
    let Some(cfg) = load(path) else {
        return ExitCode::FAILURE;
    };
    let (text, ok) = route_text(&cfg, &RouteTable::new(&cfg.routes), url);
    print!("{text}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What `gateway route` prints for `url` under `cfg`, and whether the URL is served (the
/// running gateway answers it from its snapshot through the control socket).
pub fn route_text<P: Routable + AsRef<gateway_config::Route>>(
    cfg: &Config,
    table: &RouteTable<P>,
    url: &str,
) -> (String, bool) {
    let (host, target) = split_url(url);
    match table.decide(host, target) {
        Decision::Forward {
            route, upstream_path, ..
        } => {
            let route: &gateway_config::Route = route.as_ref();
            let up = cfg
                .upstream(&route.upstream)
                .map(|u| u.authority())
                .unwrap_or_default();
            let body = if route.max_body == u64::MAX {
                "no limit".to_owned()
            } else {
                format!("{} bytes", route.max_body)
            };
            let text = format!(
                "route:    {}\nupstream: {} ({up})\npath:     {upstream_path}\nwebsocket {}, max body {body}, read timeout {:?}\n",
                route.name,
                route.upstream,
                if route.websocket { "allowed" } else { "refused" },
                route.timeouts.read
            );
            let mut text = text;
            if !route.policies.is_empty() {
                text.push_str(&format!("policies: {}\n", route.policies.join(", ")));
            }
            if route.maintenance {
                text.push_str("maintenance: on (maintenance = true in the file): 503\n");
            }
            (text, true)
        }
        Decision::Redirect { location } => (format!("301 redirect to {location}\n"), true),
        Decision::NotFound => (format!("404: no route matches {url}\n"), false),
        Decision::BadRequest(why) => (format!("400: rejected: {why}\n"), false),
    }
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls() {
        assert_eq!(split_url("https://x/n8n/a?b"), (Some("x"), "/n8n/a?b"));
        assert_eq!(split_url("https://x:8443"), (Some("x:8443"), "/"));
        assert_eq!(split_url("/health"), (None, "/health"));
    }
}
