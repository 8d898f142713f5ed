//! Which app is behind each route, and whether the route's prefix suits it. Found from what
//! the app serves at the path the route sends (`GET`, the first 64 KiB):
//!
//! - Open WebUI cannot run under a sub-path: its HTML asks for `/_app/` and `/static/` at
//!   the site root, so `/ai/` renders an empty page (with nginx as with the gateway): FAIL,
//!   with the fix (a host route, `ai.example.com`).
//! - Grafana under a prefix needs `root_url` ending in the prefix (its HTML's `appSubUrl`),
//!   and `serve_from_sub_path` consistent with the route's `strip_prefix`.
//! - n8n serves its files and API at `/` whatever `N8N_PATH` says; `N8N_PATH` is only the
//!   path its pages link to (`<prefix>static/base-path.js`, `window.BASE_PATH`). Under a
//!   prefix it needs `N8N_PATH` equal to the prefix and a route that strips it; the URLs it
//!   announces (webhooks, the editor: `WEBHOOK_URL`, `N8N_EDITOR_BASE_URL`, read back from
//!   the public `/rest/settings`) must be `https://` and end in the prefix.
//! - Node-RED's editor must be where the route sends the prefix: its `httpAdminRoot`
//!   equal to the prefix when the route keeps it, `/` when the route strips it. An app that
//!   answers nothing at the route's path is looked for at `/` to name the mismatch.
//!
//! Other apps are reported as found, without a verdict.

use super::{status_of, Level, Report};
use gateway_config::{Config, PathMatch, Route};
use std::net::SocketAddr;

pub(super) async fn check(r: &mut Report, cfg: &Config) {
    for route in &cfg.routes {
        let PathMatch::Prefix(prefix) = &route.path else {
            continue;
        };
        let Some(u) = cfg.upstream(&route.upstream) else {
            continue;
        };
        let Some(s) = u.servers.first() else { continue };
        let Ok(mut addrs) = tokio::net::lookup_host(format!("{}:{}", s.host, s.port)).await else {
            continue;
        };
        let Some(addr) = addrs.next() else { continue };
        let path = upstream_path(route, prefix);
        let Ok(page) = get(addr, &s.host, &path).await else {
            continue;
        };
        if is_n8n(&page) {
            n8n(r, route, prefix, &page, addr, &s.host).await;
            continue;
        }
        if path != "/" && status_of(&page).is_some_and(|c| c == 404) {
            if let Ok(root) = get(addr, &s.host, "/").await {
                misplaced(r, route, prefix, &path, &root);
                continue;
            }
        }
        verdict(r, route, prefix, &page);
    }
}

/// The path the route sends for a request of its prefix itself.
fn upstream_path(route: &Route, prefix: &str) -> String {
    match &route.rewrite {
        Some(new) => new.clone(),
        None => prefix.to_owned(),
    }
}

fn verdict(r: &mut Report, route: &Route, prefix: &str, page: &str) {
    let check = format!("app {prefix}");
    let sub_path = prefix != "/";
    if page.contains("Open WebUI") || (page.contains("/_app/") && page.contains("/static/")) {
        if sub_path && route.host.is_none() {
            r.add(
                Level::Fail,
                check,
                format!("Open WebUI behind route `{}`: it cannot run under a sub-path (its page loads /_app/ and /static/ from the site root, so {prefix} shows an empty page, with nginx as with the gateway)", route.name),
                "give it a host of its own: a route with host = \"ai.example.com\" and prefix = \"/\"",
            );
        } else {
            r.ok(check, "Open WebUI at the root of its host");
        }
    } else if let Some(sub) = grafana_sub_url(page) {
        let want = prefix.trim_end_matches('/');
        if !sub_path {
            r.ok(check, "Grafana at the root");
        } else if sub != want {
            r.add(
                Level::Fail,
                check,
                format!("Grafana behind `{prefix}` reports root_url's sub-path as `{sub}`"),
                format!("set GF_SERVER_ROOT_URL=%(protocol)s://%(domain)s{want}/ and GF_SERVER_SERVE_FROM_SUB_PATH={} (the route {} the prefix)", route.rewrite.is_none(), if route.rewrite.is_none() { "keeps" } else { "strips" }),
            );
        } else {
            r.ok(check, format!("Grafana with root_url under {want}/"));
        }
    } else if page.contains("<title>Node-RED</title>") {
        r.ok(
            check,
            format!("the Node-RED editor answers where the route sends {prefix}"),
        );
    }
}

/// The route's path is a 404 but the app answers at `/`: its base path is not the prefix.
fn misplaced(r: &mut Report, route: &Route, prefix: &str, path: &str, root: &str) {
    let check = format!("app {prefix}");
    if root.contains("<title>Node-RED</title>") {
        r.add(
            Level::Fail,
            check,
            format!("Node-RED behind route `{}` serves its editor at / (httpAdminRoot \"/\"), but the route sends {path}: 404", route.name),
            format!("set httpAdminRoot: \"{prefix}\" and httpNodeRoot: \"{prefix}\" in its settings.js, or strip_prefix = true on the route"),
        );
    }
}

fn is_n8n(page: &str) -> bool {
    page.contains("n8n:config:rest-endpoint") || page.contains("n8n.io - Workflow Automation")
}

/// The path n8n's pages link to (its `N8N_PATH`): where they load `static/base-path.js`.
fn n8n_base_path(page: &str) -> Option<String> {
    let end = page.find("static/base-path.js")?;
    let start = page[..end].rfind('"')? + 1;
    Some(page[start..end].to_owned())
}

/// The base URL n8n announces (`N8N_EDITOR_BASE_URL`, else `WEBHOOK_URL`), as its public
/// settings show it in the OIDC login URL: `https://example.com/n8n/`.
fn n8n_announced_url(settings: &str) -> Option<String> {
    let key = "\"loginUrl\":\"";
    let i = settings.find(key)? + key.len();
    let end = settings[i..].find('"')?;
    let url = settings[i..i + end].replace("\\/", "/");
    Some(url.strip_suffix("rest/sso/oidc/login")?.to_owned())
}

/// n8n behind `route` (see the module comment).
async fn n8n(r: &mut Report, route: &Route, prefix: &str, page: &str, addr: SocketAddr, host: &str) {
    let check = format!("app {prefix}");
    let base = n8n_base_path(page).unwrap_or_else(|| "/".into());
    let strips = route.rewrite.is_some();
    if base != prefix {
        r.add(
            Level::Fail,
            check,
            format!("n8n behind route `{}` links its pages to {base} (N8N_PATH), but the route serves it under {prefix}: the editor loads nothing", route.name),
            format!("set N8N_PATH={prefix} in n8n's environment{}", if prefix != "/" && !strips { ", and strip_prefix = true on the route (n8n serves at / whatever N8N_PATH says)" } else { "" }),
        );
        return;
    }
    if prefix != "/" && !strips {
        r.add(
            Level::Fail,
            check,
            format!("n8n behind route `{}` serves its files at / (N8N_PATH={prefix} only changes its links), but the route sends {prefix}...: its scripts come back as HTML", route.name),
            "set strip_prefix = true on the route",
        );
        return;
    }
    let settings = get(addr, host, "/rest/settings").await.unwrap_or_default();
    match n8n_announced_url(&settings) {
        Some(url) if !url.starts_with("https://") || !url.ends_with(prefix) => r.add(
            Level::Warn,
            check,
            format!("n8n announces its URLs (webhooks, the editor) as {url}, not https://<host>{prefix}: the webhook URLs it shows do not go through this route"),
            format!("set WEBHOOK_URL=https://<your host>{prefix} (and N8N_EDITOR_BASE_URL the same) in n8n's environment"),
        ),
        Some(url) => r.ok(check, format!("n8n with N8N_PATH={prefix}, the prefix stripped, URLs announced as {url}")),
        None => r.ok(check, format!("n8n with N8N_PATH={prefix}, the prefix stripped (its announced URL could not be read)")),
    }
}

/// Grafana's `appSubUrl` from the `grafanaBootData` of its HTML.
fn grafana_sub_url(page: &str) -> Option<String> {
    if !page.contains("grafanaBootData") && !page.contains("Grafana") {
        return None;
    }
    let i = page.find("\"appSubUrl\":\"")? + "\"appSubUrl\":\"".len();
    let end = page[i..].find('"')?;
    Some(page[i..i + end].replace("\\/", "/"))
}

/// `GET path` over HTTP/1.1 (redirects not followed), the first 64 KiB of the answer.
async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<String, String> {
    super::exchange(addr, &format!("GET {path}"), host, "Accept: text/html\r\n").await
}
