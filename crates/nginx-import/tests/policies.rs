//! Policies (auth, access, rate limits), logging, the main context, and inputs that must
//! neither panic nor give anything but TOML.

mod common;

use common::*;

#[test]
fn auth_basic_and_auth_request() {
    let i = imp(&conf(&[
        "http {",
        "  server { listen 443 ssl; ssl_certificate /c/a.pem; ssl_certificate_key /c/a.key;",
        "    location = /auth { internal; proxy_pass http://authelia:9091/api/verify;",
        "      proxy_pass_request_body off; proxy_set_header Content-Length \"\"; proxy_set_header X-Original-URI $request_uri; }",
        "    location /app/ { auth_request /auth; auth_request_set $user $upstream_http_remote_user;",
        "      proxy_set_header Remote-User $user; proxy_set_header Host $host; proxy_pass http://app:80; }",
        "    location /admin/ { auth_basic \"Admin area\"; auth_basic_user_file htpasswd; proxy_pass http://app:80; proxy_set_header Host $host; }",
        "    location /open/ { auth_basic off; proxy_pass http://app:80; proxy_set_header Host $host; }",
        "    location /lost/ { auth_request /nowhere; proxy_pass http://app:80; proxy_set_header Host $host; }",
        "  }",
        "}",
    ]));
    let d = doc(&i);
    // The auth location is the forward_auth URL, not a route.
    let names: Vec<&str> = routes(&d).iter().filter_map(|t| get(t, "name")).collect();
    assert_eq!(names, ["app", "admin", "open", "lost"]);
    assert_eq!(strs(route(&d, "app").get("policies")), ["forward-auth"]);
    assert_eq!(
        str_at(&d, &["policies", "forward-auth", "forward_auth", "url"]),
        Some("http://authelia:9091/api/verify")
    );
    assert_eq!(
        strs(item(
            &d,
            &["policies", "forward-auth", "forward_auth", "copy_headers"]
        )),
        ["Remote-User"]
    );
    assert_eq!(strs(route(&d, "admin").get("policies")), ["admin-area"]);
    assert_eq!(
        str_at(&d, &["policies", "admin-area", "basic_auth", "realm"]),
        Some("Admin area")
    );
    assert_eq!(
        str_at(&d, &["policies", "admin-area", "basic_auth", "htpasswd_file"]),
        Some("/nonexistent/htpasswd")
    );
    assert!(route(&d, "open").get("policies").is_none());
    assert!(has_note(&i, 9, "auth_request /nowhere"), "{}", notes_text(&i));
    assert_eq!(i.notes.len(), 1, "{}", notes_text(&i));
}

#[test]
fn allow_deny_keep_nginx_order() {
    let i = imp(&conf(&[
        "http {",
        "  server { listen 443 ssl; ssl_certificate /c/a.pem; ssl_certificate_key /c/a.key;",
        "    location /a/ { allow 10.0.0.0/8; allow 2001:db8::/32; deny all; proxy_pass http://app:80; proxy_set_header Host $host; }",
        "    location /b/ { deny 10.0.0.5; allow 10.0.0.0/8; deny all; proxy_pass http://app:80; proxy_set_header Host $host; }",
        "    location /c/ { allow 10.0.0.1; deny 10.0.0.0/8; allow 192.168.0.0/16; deny all; proxy_pass http://app:80; proxy_set_header Host $host; }",
        "    location /d/ { allow 10.0.0.0/8; deny all; proxy_pass http://app:80; proxy_set_header Host $host; }",
        "  }",
        "}",
    ]));
    let d = doc(&i);
    assert_eq!(strs(route(&d, "a").get("policies")), ["a-access"]);
    assert_eq!(
        strs(item(&d, &["policies", "a-access", "allow"])),
        ["10.0.0.0/8", "2001:db8::/32"]
    );
    assert_eq!(strs(item(&d, &["policies", "a-access", "deny"])), ["all"]);
    // deny a; allow b; deny all; → two policies, in order.
    assert_eq!(strs(route(&d, "b").get("policies")), ["b-access", "b-access-2"]);
    assert_eq!(strs(item(&d, &["policies", "b-access", "deny"])), ["10.0.0.5"]);
    assert!(
        i.toml
            .contains("[policies.b-access-2]\nallow = [\"10.0.0.0/8\"]\ndeny = [\"all\"]\n"),
        "{}",
        i.toml
    );
    // allow, deny, allow: not expressible; noted.
    assert!(route(&d, "c").get("policies").is_none());
    assert!(has_note(&i, 5, "allow 192.168.0.0/16"), "{}", notes_text(&i));
    // /d/ asks what b-access-2 has: one policy.
    assert_eq!(strs(route(&d, "d").get("policies")), ["b-access-2"]);
    assert_eq!(i.notes.len(), 1, "{}", notes_text(&i));
}

#[test]
fn limit_req_zones() {
    let i = imp(&conf(&[
        "http {",
        "  limit_req_zone $binary_remote_addr zone=login:10m rate=10r/m;",
        "  limit_req_zone $http_x_api_key zone=api:10m rate=5r/s;",
        "  limit_req_zone $uri zone=odd:1m rate=1r/s;",
        "  limit_req_status 429;",
        "  server { listen 443 ssl; ssl_certificate /c/a.pem; ssl_certificate_key /c/a.key;",
        "    location = /login { limit_req zone=login burst=20 nodelay; proxy_pass http://app:80; proxy_set_header Host $host; }",
        "    location /api/ { limit_req zone=api; proxy_pass http://app:80; proxy_set_header Host $host; }",
        "    location /x/ { limit_req zone=nope; proxy_pass http://app:80; proxy_set_header Host $host; }",
        "    location /y/ { limit_req zone=odd; proxy_pass http://app:80; proxy_set_header Host $host; }",
        "  }",
        "}",
    ]));
    let d = doc(&i);
    assert_eq!(strs(route(&d, "login").get("policies")), ["login"]);
    assert_eq!(
        str_at(&d, &["policies", "login", "rate_limit", "rate"]),
        Some("10/m")
    );
    assert_eq!(
        int_at(&d, &["policies", "login", "rate_limit", "burst"]),
        Some(20)
    );
    assert_eq!(
        str_at(&d, &["policies", "api", "rate_limit", "rate"]),
        Some("5/s")
    );
    assert_eq!(
        str_at(&d, &["policies", "api", "rate_limit", "key"]),
        Some("header:X-Api-Key")
    );
    assert!(
        i.toml
            .contains("nginx delayed the requests over the rate (no `nodelay`)"),
        "{}",
        i.toml
    );
    assert!(has_note(&i, 9, "limit_req zone=nope"), "{}", notes_text(&i));
    assert!(has_note(&i, 4, "limit_req_zone $uri"), "{}", notes_text(&i));
    assert_eq!(i.notes.len(), 2, "{}", notes_text(&i));
}

#[test]
fn error_page_resolver_map_if() {
    let i = imp(&conf(&[
        "http {",
        "  resolver 127.0.0.11 [::1]:5353 valid=30s ipv6=off;",
        "  map $http_upgrade $connection_upgrade { default upgrade; '' close; }",
        "  server { listen 443 ssl; ssl_certificate /c/a.pem; ssl_certificate_key /c/a.key;",
        "    error_page 502 503 504 /50x.html;",
        "    location = /50x.html { root /usr/share/nginx/html; }",
        "    location / { proxy_pass http://app:80; proxy_set_header Host $host;",
        "      proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade;",
        "      if ($request_method = POST) { return 405; } }",
        "  }",
        "}",
    ]));
    let d = doc(&i);
    assert_eq!(
        strs(item(&d, &["server", "resolver"])),
        ["127.0.0.11", "[::1]:5353"]
    );
    assert_eq!(str_at(&d, &["server", "dns_refresh"]), Some("30s"));
    assert_eq!(get_bool(route(&d, "root"), "websocket"), Some(true));
    for (line, start) in [
        (2, "resolver"),
        (3, "map $http_upgrade $connection_upgrade"),
        (5, "error_page 502 503 504 /50x.html"),
        (6, "location = /50x.html"),
        (9, "if ($request_method = POST)"),
    ] {
        assert!(has_note(&i, line, start), "{line}: {}", notes_text(&i));
    }
    assert_eq!(i.notes.len(), 5, "{}", notes_text(&i));
    assert!(i.notes[2].why.contains("[errors] pages"), "{}", notes_text(&i));
}

#[test]
fn logging() {
    let i = imp(&conf(&[
        "error_log /var/log/nginx/error.log notice;",
        "http {",
        "  log_format timed '$remote_addr $request_time $upstream_response_time';",
        "  log_format plain '$remote_addr \"$request\" $status';",
        "  access_log /var/log/nginx/access.log plain buffer=32k;",
        "  server { listen 443 ssl; ssl_certificate /c/a.pem; ssl_certificate_key /c/a.key; access_log off; }",
        "}",
    ]));
    let d = doc(&i);
    assert_eq!(str_at(&d, &["logging", "access_log"]), Some("plain"));
    assert_eq!(str_at(&d, &["logging", "level"]), Some("info"));
    assert_eq!(
        str_at(&d, &["logging", "formats", "plain"]),
        Some("$remote_addr \"$request\" $status")
    );
    assert!(item(&d, &["logging", "formats", "timed"]).is_none());
    assert!(
        i.toml
            .contains("# access_log_file = \"/var/log/nginx/access.log\""),
        "{}",
        i.toml
    );
    assert!(has_note(&i, 3, "log_format timed"), "{}", notes_text(&i));
    assert!(
        has_note(&i, 5, "access_log /var/log/nginx/access.log plain buffer=32k"),
        "{}",
        notes_text(&i)
    );
    assert!(has_note(&i, 6, "access_log off"), "{}", notes_text(&i));
}

#[test]
fn main_context() {
    let i = imp("worker_processes 4;\nworker_shutdown_timeout 20s;\nuser www-data;\nevents { worker_connections 4096; }\n");
    let d = doc(&i);
    assert_eq!(int_at(&d, &["server", "threads"]), Some(4));
    assert_eq!(str_at(&d, &["server", "grace_period"]), Some("20s"));
    assert!(has_note(&i, 3, "user www-data"), "{}", notes_text(&i));
    assert_eq!(i.notes.len(), 1, "{}", notes_text(&i));
    assert!(
        i.toml
            .contains("worker_connections 4096; -> no per-worker connection cap"),
        "{}",
        i.toml
    );
}

#[test]
fn certbot_webroot_without_acme() {
    let i = imp(&conf(&[
        "http {",
        "  server { listen 80; location /.well-known/acme-challenge/ { alias /srv/certbot/.well-known/acme-challenge/; }",
        "    location / { return 301 https://$server_name$request_uri; } }",
        "  server { listen 443 ssl; ssl_certificate /c/a.pem; ssl_certificate_key /c/a.key; }",
        "}",
    ]));
    assert!(i.notes.is_empty(), "{}", notes_text(&i));
    assert_eq!(
        str_at(&doc(&i), &["server", "acme_webroot"]),
        Some("/srv/certbot")
    );
}

#[test]
fn values_are_escaped_for_toml() {
    let i = imp(&https_server(
        "    location / { proxy_pass http://app:80; proxy_set_header Host $host; auth_basic \"x\"; auth_basic_user_file \"/etc/${x}/ht'p\\\"w\"; }",
    ));
    let d = doc(&i);
    // `${` is doubled: proxy.toml expands ${NAME} in every string.
    assert_eq!(
        str_at(&d, &["policies", "x", "basic_auth", "htpasswd_file"]),
        Some("/etc/$${x}/ht'p\"w")
    );
}

#[test]
fn odd_inputs_never_panic_and_stay_toml() {
    let inputs = [
        "",
        "# only a comment",
        "a;",
        "http { }",
        "server { listen; server_name ; location = { proxy_pass; } }",
        "http { upstream { } upstream u { server; } server { listen 443 ssl; location / { proxy_pass http://u; } } }",
        "http{server{listen 443 ssl;location /{proxy_pass http://[::1];}}}",
        "http { server { location / { proxy_pass http://:80; } location /x { proxy_pass http://a:99999; } } }",
        "http { server { listen 80; return; if ($host = x) { return 301 https://$host$request_uri; } } }",
        "http { server { listen 443 ssl; ssl_certificate $name.pem; location / { proxy_pass http://a; add_header; allow; deny unix:; limit_req; auth_request; } } }",
        "http { server { listen 443 ssl; location \"/a b\" { proxy_pass \"http://a/x y\"; add_header \"X\\nY\" \"v\\r\\n\"; } } }",
        "http { gzip_types *; large_client_header_buffers x y; keepalive_timeout 0; ssl_session_cache builtin:1000; }",
        "location / { proxy_pass http://a; }",
    ];
    for text in inputs {
        match gateway_nginx_import::import_str(text, std::path::Path::new("/nonexistent/nginx.conf")) {
            Ok(i) => {
                if let Err(e) = i.toml.parse::<toml_edit::DocumentMut>() {
                    panic!("{text:?}: not TOML: {e}\n{}", i.toml);
                }
            }
            Err(e) => assert!(
                matches!(e, gateway_nginx_import::ImportError::Parse { .. }),
                "{text:?}: {e}"
            ),
        }
    }
}
