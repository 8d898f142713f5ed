//! The two reference configurations (`shared/reference/nginx.conf`, `nginx-cloud.conf`),
//! imported whole: routes, upstreams, limits, headers, certificates and the notes.

mod common;

use common::*;
use gateway_nginx_import::import;
use std::path::PathBuf;
use toml_edit::Item;

/// A reference file, as kept in this crate's `tests/data/` (on machines without the
/// steering copy in `../shared/reference/`, which must then be equal: see
/// [`the_kept_copies_equal_the_reference_files`]).
fn reference(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn the_kept_copies_equal_the_reference_files() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for name in ["nginx.conf", "nginx-cloud.conf"] {
        let kept = std::fs::read(reference(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let shared = root.join("../../../shared/reference").join(name);
        if let Ok(original) = std::fs::read(&shared) {
            assert!(
                kept == original,
                "{} changed: copy it to tests/data/",
                shared.display()
            );
        }
    }
}

fn load(name: &str) -> gateway_nginx_import::Import {
    match import(&reference(name)) {
        Ok(i) => i,
        Err(e) => panic!("{name}: {e}"),
    }
}

#[test]
fn nginx_conf_translates_without_notes() {
    let i = load("nginx.conf");
    assert!(i.notes.is_empty(), "unexpected notes:\n{}", notes_text(&i));
    let d = doc(&i);
    assert_eq!(str_at(&d, &["listen", "http"]), Some("0.0.0.0:80"));
    assert_eq!(str_at(&d, &["listen", "https"]), Some("0.0.0.0:443"));
    // location /.well-known/acme-challenge/ { root /var/www/certbot; }: certbot keeps working.
    assert_eq!(str_at(&d, &["server", "acme_webroot"]), Some("/var/www/certbot"));
    assert_eq!(str_at(&d, &["limits", "max_body"]), Some("500M"));
    assert_eq!(str_at(&d, &["limits", "keepalive_timeout"]), Some("65s"));
    assert_eq!(bool_at(&d, &["compression", "enabled"]), Some(true));
    assert_eq!(int_at(&d, &["compression", "level"]), Some(6));
    let types = strs(item(&d, &["compression", "types"]));
    assert_eq!(types.first().map(String::as_str), Some("text/html"));
    assert!(types.iter().any(|t| t == "image/svg+xml"), "{types:?}");
    assert_eq!(types.len(), 12, "{types:?}");
    assert_eq!(
        str_at(&d, &["security", "headers", "X-Frame-Options"]),
        Some("SAMEORIGIN")
    );
    assert_eq!(
        str_at(&d, &["security", "headers", "X-Content-Type-Options"]),
        Some("nosniff")
    );
    assert_eq!(
        str_at(&d, &["security", "headers", "X-XSS-Protection"]),
        Some("1; mode=block")
    );
    assert_eq!(str_at(&d, &["forwarding", "host_header"]), Some("nginx"));
    assert_eq!(str_at(&d, &["logging", "access_log"]), Some("main"));
    assert_eq!(str_at(&d, &["logging", "level"]), Some("warn"));
    let main = str_at(&d, &["logging", "formats", "main"]).unwrap_or_default();
    assert!(
        main.starts_with("$remote_addr - $remote_user [$time_local] \"$request\" $status"),
        "{main}"
    );
    assert!(
        main.ends_with("\"$http_user_agent\" \"$http_x_forwarded_for\""),
        "{main}"
    );

    // TLS: the files of nginx.conf, the default certificate, ssl_session_cache 10m.
    assert_eq!(str_at(&d, &["tls", "default_certificate"]), Some("main"));
    assert_eq!(int_at(&d, &["tls", "session_cache"]), Some(40_000));
    let certs = item(&d, &["tls", "certificates"]).and_then(Item::as_array_of_tables);
    let cert = certs.and_then(|c| c.get(0));
    assert_eq!(
        cert.and_then(|c| get(c, "cert")),
        Some("/etc/nginx/ssl/fullchain.pem")
    );
    assert_eq!(
        cert.and_then(|c| get(c, "key")),
        Some("/etc/nginx/ssl/privkey.pem")
    );
    assert!(d.get("acme").is_none());

    for (name, address, keepalive) in [
        ("api", "api:3001", 32),
        ("n8n", "n8n:5678", 16),
        ("openwebui", "open-webui:8080", 16),
        ("nodered", "nodered:1880", 16),
        ("grafana", "grafana:3000", 16),
        ("influxdb", "influxdb:8086", 16),
    ] {
        assert_eq!(
            str_at(&d, &["upstreams", name, "address"]),
            Some(address),
            "{name}"
        );
        assert_eq!(
            int_at(&d, &["upstreams", name, "keepalive"]),
            Some(keepalive),
            "{name}"
        );
    }

    // name, prefix, upstream, strip_prefix, rewrite, websocket, read_timeout, write_timeout
    type Want = (
        &'static str,
        &'static str,
        &'static str,
        Option<bool>,
        Option<&'static str>,
        bool,
        Option<&'static str>,
        Option<&'static str>,
    );
    let want: [Want; 9] = [
        ("root", "/", "api", None, None, true, None, None),
        (
            "api",
            "/api/",
            "api",
            None,
            None,
            true,
            Some("86400s"),
            Some("86400s"),
        ),
        ("docs", "/docs/", "api", None, None, false, None, None),
        (
            "n8n",
            "/n8n/",
            "n8n",
            Some(true),
            None,
            true,
            Some("86400s"),
            None,
        ),
        ("webhook", "/webhook/", "n8n", None, None, false, None, None),
        (
            "ai",
            "/ai/",
            "openwebui",
            Some(true),
            None,
            true,
            Some("300s"),
            None,
        ),
        (
            "nodered",
            "/nodered/",
            "nodered",
            Some(true),
            None,
            true,
            None,
            None,
        ),
        (
            "grafana",
            "/grafana/",
            "grafana",
            Some(true),
            None,
            false,
            None,
            None,
        ),
        (
            "health",
            "/health",
            "api",
            None,
            Some("/api/health"),
            false,
            None,
            None,
        ),
    ];
    let all = routes(&d);
    assert_eq!(all.len(), want.len(), "{}", i.toml);
    for (t, (name, prefix, upstream, strip, rewrite, websocket, read, write)) in all.iter().zip(want) {
        assert_eq!(get(t, "name"), Some(name));
        assert_eq!(get(t, "prefix"), Some(prefix), "{name}");
        assert_eq!(get(t, "upstream"), Some(upstream), "{name}");
        assert_eq!(get_bool(t, "strip_prefix"), strip, "{name}");
        assert_eq!(get(t, "rewrite"), rewrite, "{name}");
        assert_eq!(get_bool(t, "websocket"), Some(websocket), "{name}");
        assert_eq!(get(t, "read_timeout"), read, "{name}");
        assert_eq!(get(t, "write_timeout"), write, "{name}");
        assert!(t.get("host").is_none(), "{name}");
        assert!(t.get("max_body").is_none(), "{name}");
        assert!(t.get("policies").is_none(), "{name}");
    }

    // The source lines are named; what needs nothing is listed.
    assert!(
        i.toml
            .contains("# nginx.conf:131: location /api/ { proxy_pass http://api/api/; }"),
        "{}",
        i.toml
    );
    assert!(
        i.toml
            .contains("read_timeout = \"86400s\"  # nginx.conf:142: proxy_read_timeout 86400s;"),
        "{}",
        i.toml
    );
    assert!(
        i.toml
            .contains("proxy_http_version 1.1; -> always HTTP/1.1 to upstreams"),
        "{}",
        i.toml
    );
    assert!(
        i.toml
            .contains("nginx.conf:89: return 301 https://$host$request_uri;"),
        "{}",
        i.toml
    );
    assert!(i.toml.contains("include /etc/nginx/mime.types;"), "{}", i.toml);
    assert!(
        i.toml
            .contains("nginx.conf:104: ssl_protocols TLSv1.2 TLSv1.3; -> built in"),
        "{}",
        i.toml
    );
    assert!(
        i.toml
            .contains("# not used by any translated route\n[upstreams.influxdb]"),
        "{}",
        i.toml
    );
}

#[test]
fn nginx_cloud_conf_translates_hosts_and_certbot() {
    let i = load("nginx-cloud.conf");
    // Two notes: certbot's certificate, now ordered by the gateway, and nginx's default
    // server (the first one, `demo`), which answered names no server lists.
    assert_eq!(i.notes.len(), 2, "{}", notes_text(&i));
    assert!(
        i.notes
            .iter()
            .any(|n| n.directive.contains("nginx's default server")),
        "{}",
        notes_text(&i)
    );
    let n = i.notes.iter().find(|n| n.line == 13).expect("the certbot note");
    assert_eq!(n.line, 13);
    assert!(n.file.ends_with("nginx-cloud.conf"));
    assert_eq!(
        n.directive,
        "ssl_certificate /etc/letsencrypt/live/demo.twinsight.cn/fullchain.pem"
    );
    assert!(
        n.why.contains("[[acme.certificates]]") && n.why.contains("[[tls.certificates]]"),
        "{}",
        n.why
    );
    assert!(
        n.to_string()
            .contains("nginx-cloud.conf:13: not translated: ssl_certificate /etc/letsencrypt/live/"),
        "{n}"
    );

    let d = doc(&i);
    assert_eq!(str_at(&d, &["listen", "http"]), Some("0.0.0.0:80"));
    assert_eq!(str_at(&d, &["listen", "https"]), Some("0.0.0.0:443"));
    // The five servers share certbot's certificate: one ACME certificate with the five names.
    let acme = item(&d, &["acme", "certificates"]).and_then(Item::as_array_of_tables);
    assert_eq!(acme.map(|a| a.len()), Some(1));
    let cert = acme.and_then(|a| a.get(0));
    assert_eq!(cert.and_then(|c| get(c, "name")), Some("demo.twinsight.cn"));
    let names = strs(cert.and_then(|c| c.get("names")));
    assert_eq!(
        names,
        [
            "demo.twinsight.cn",
            "n8n.twinsight.cn",
            "ai.twinsight.cn",
            "nodered.twinsight.cn",
            "grafana.twinsight.cn"
        ]
    );
    assert!(item(&d, &["tls", "certificates"]).is_none());
    assert_eq!(
        str_at(&d, &["tls", "default_certificate"]),
        Some("demo.twinsight.cn")
    );
    // The ACME location is dropped: the gateway answers challenges itself.
    assert!(item(&d, &["server", "acme_webroot"]).is_none());
    assert!(i.toml.contains("location /.well-known/acme-challenge/ { ... } -> the gateway answers ACME http-01 challenges itself"), "{}", i.toml);
    // certbot's options file (not on this machine) is TLS settings the gateway has built in.
    assert!(
        i.toml
            .contains("include /etc/letsencrypt/options-ssl-nginx.conf; -> certbot's TLS options"),
        "{}",
        i.toml
    );

    // Only demo.twinsight.cn's server set headers; the gateway sends them everywhere.
    assert_eq!(str_at(&d, &["security", "hsts"]), Some("max-age=31536000"));
    assert_eq!(
        str_at(&d, &["security", "headers", "X-Frame-Options"]),
        Some("SAMEORIGIN")
    );
    assert_eq!(
        str_at(&d, &["security", "headers", "X-Content-Type-Options"]),
        Some("nosniff")
    );
    assert!(item(&d, &["security", "headers", "X-XSS-Protection"]).is_none());
    // http sets no client_max_body_size: nginx's 1m, and the servers that raise it say so.
    assert_eq!(str_at(&d, &["limits", "max_body"]), Some("1M"));
    // No gzip anywhere: nginx's default is off.
    assert_eq!(bool_at(&d, &["compression", "enabled"]), Some(false));
    assert_eq!(str_at(&d, &["forwarding", "host_header"]), Some("nginx"));

    for (name, address) in [
        ("demo", "127.0.0.1:3001"),
        ("n8n", "127.0.0.1:5678"),
        ("ai", "127.0.0.1:3080"),
        ("nodered", "127.0.0.1:1880"),
        ("grafana", "127.0.0.1:3000"),
    ] {
        assert_eq!(
            str_at(&d, &["upstreams", name, "address"]),
            Some(address),
            "{name}"
        );
    }
    // name, host, max_body, read_timeout, write_timeout
    type Want = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    );
    let want: [Want; 5] = [
        (
            "demo",
            "demo.twinsight.cn",
            Some("500M"),
            Some("86400s"),
            Some("86400s"),
        ),
        ("n8n", "n8n.twinsight.cn", Some("50M"), Some("86400s"), None),
        ("ai", "ai.twinsight.cn", Some("500M"), Some("300s"), None),
        ("nodered", "nodered.twinsight.cn", None, None, None),
        ("grafana", "grafana.twinsight.cn", None, None, None),
    ];
    let all = routes(&d);
    assert_eq!(all.len(), want.len(), "{}", i.toml);
    for (t, (name, host, max_body, read, write)) in all.iter().zip(want) {
        assert_eq!(get(t, "name"), Some(name));
        assert_eq!(get(t, "host"), Some(host), "{name}");
        assert_eq!(get(t, "prefix"), Some("/"), "{name}");
        assert_eq!(get(t, "upstream"), Some(name), "{name}");
        assert_eq!(get(t, "max_body"), max_body, "{name}");
        assert_eq!(get(t, "read_timeout"), read, "{name}");
        assert_eq!(get(t, "write_timeout"), write, "{name}");
        assert_eq!(get_bool(t, "websocket"), Some(true), "{name}");
        assert!(
            t.get("strip_prefix").is_none() && t.get("rewrite").is_none(),
            "{name}"
        );
    }
    // The :80 servers' `return 301 https://$host$request_uri;` is the built-in redirect.
    assert!(
        i.toml
            .contains("(and 4 more): return 301 https://$host$request_uri; -> the :80 listener redirects"),
        "{}",
        i.toml
    );
}

#[test]
fn reference_outputs_are_stable() {
    for name in ["nginx.conf", "nginx-cloud.conf"] {
        let a = load(name);
        let b = load(name);
        assert_eq!(a, b, "{name}");
    }
}
