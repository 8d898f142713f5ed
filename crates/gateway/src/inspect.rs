//! `gateway check` and `gateway route`: read-only views of a configuration.

use gateway_config::{Config, PathMatch};
use gateway_routing::{Decision, RouteTable};
use std::path::Path;
use std::process::ExitCode;

fn load(path: &Path) -> Option<Config> {
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
        cfg.listen.https,
        cfg.listen.http.map_or("off".into(), |a| a.to_string()),
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
fn split_url(url: &str) -> (Option<&str>, &str) {
    let Some((_, rest)) = url.split_once("://") else {
        return (None, url);
    };
    match rest.find('/') {
        Some(i) => (Some(&rest[..i]), &rest[i..]),
        None => (Some(rest), "/"),
    }
}

pub fn route(path: &Path, url: &str) -> ExitCode {
    let Some(cfg) = load(path) else {
        return ExitCode::FAILURE;
    };
    let table = RouteTable::new(&cfg.routes);
    let (host, target) = split_url(url);
    match table.decide(host, target) {
        Decision::Forward {
            route, upstream_path, ..
        } => {
            let up = cfg
                .upstream(&route.upstream)
                .map(|u| u.authority())
                .unwrap_or_default();
            println!("route:    {}", route.name);
            println!("upstream: {} ({up})", route.upstream);
            println!("path:     {upstream_path}");
            println!(
                "websocket {}, max body {} bytes, read timeout {:?}",
                if route.websocket { "allowed" } else { "refused" },
                route.max_body,
                route.timeouts.read
            );
            ExitCode::SUCCESS
        }
        Decision::Redirect { location } => {
            println!("301 redirect to {location}");
            ExitCode::SUCCESS
        }
        Decision::NotFound => {
            println!("404: no route matches {url}");
            ExitCode::FAILURE
        }
        Decision::BadRequest(why) => {
            println!("400: rejected: {why}");
            ExitCode::FAILURE
        }
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
