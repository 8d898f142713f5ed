//! One case per directive: what it becomes in proxy.toml, or the note that says why not.

mod common;

use common::*;
use toml_edit::Item;

#[test]
fn listen_ssl_http2_ipv6_and_one_listener_per_kind() {
    let i = imp(&conf(&[
        "http {",
        "  server {",
        "    listen 443 ssl http2;",
        "    listen [::]:443 ssl;",
        "    server_name a.example.com;",
        "    ssl_certificate /c/a.pem;",
        "    ssl_certificate_key /c/a.key;",
        "    location / { proxy_pass http://app:8080; proxy_set_header Host $host; }",
        "  }",
        "  server { listen 8443 ssl; server_name b.example.com; ssl_certificate /c/b.pem; ssl_certificate_key /c/b.key;",
        "    location / { proxy_pass http://app:8080; proxy_set_header Host $host; } }",
        "  server { listen 80; listen [::]:80; return 301 https://$host$request_uri; }",
        "  server { listen unix:/run/x.sock; }",
        "}",
    ]));
    let d = doc(&i);
    // 0.0.0.0:443 and [::]:443: one [::] socket.
    assert_eq!(str_at(&d, &["listen", "https"]), Some("[::]:443"));
    assert_eq!(str_at(&d, &["listen", "http"]), Some("[::]:80"));
    assert!(i.toml.contains("HTTP/2 and HTTP/1.1 by ALPN"), "{}", i.toml);
    assert!(has_note(&i, 10, "listen 8443 ssl"), "{}", notes_text(&i));
    assert!(has_note(&i, 13, "listen unix:/run/x.sock"), "{}", notes_text(&i));
    // Every HTTPS server has names: nginx's default server is noted (names no server lists).
    assert!(
        i.notes
            .iter()
            .any(|n| n.directive.contains("nginx's default server")),
        "{}",
        notes_text(&i)
    );
    assert_eq!(i.notes.len(), 3, "{}", notes_text(&i));
    // The :80 server's redirect is built in.
    assert!(
        i.toml
            .contains("return 301 https://$host$request_uri; -> the :80 listener redirects"),
        "{}",
        i.toml
    );
}

#[test]
fn plain_http_proxying_is_noted() {
    let i = imp("http { server { listen 8080; location / { proxy_pass http://app:3000; proxy_set_header Host $host; } } }");
    assert!(has_note(&i, 1, "listen 8080"), "{}", notes_text(&i));
    let d = doc(&i);
    assert_eq!(str_at(&d, &["listen", "http"]), Some("0.0.0.0:8080"));
    assert_eq!(get(route(&d, "root"), "upstream"), Some("app"));
}

#[test]
fn server_names_become_hosts() {
    let i = imp(&conf(&[
        "http {",
        "  server { listen 443 ssl; server_name example.com WWW.example.com;",
        "    ssl_certificate /c/e.pem; ssl_certificate_key /c/e.key;",
        "    location / { proxy_pass http://app:3000; proxy_set_header Host $host; } }",
        "  server { listen 443 ssl; server_name *.apps.example.com;",
        "    ssl_certificate /c/e.pem; ssl_certificate_key /c/e.key;",
        "    location /x/ { proxy_pass http://app:3000/; proxy_set_header Host $host; } }",
        "  server { listen 443 ssl; server_name .example.org ~^(?<sub>.+)\\.example\\.net$;",
        "    ssl_certificate /c/o.pem; ssl_certificate_key /c/o.key;",
        "    location / { proxy_pass http://other; proxy_set_header Host $host; } }",
        "  server { listen 443 ssl; server_name ~^www\\d+\\.example\\.net$;",
        "    ssl_certificate /c/o.pem; ssl_certificate_key /c/o.key;",
        "    location / { proxy_pass http://other; } }",
        "}",
    ]));
    let d = doc(&i);
    let hosts: Vec<(Option<&str>, Option<&str>)> = routes(&d)
        .iter()
        .map(|t| (get(t, "name"), get(t, "host")))
        .collect();
    assert_eq!(
        hosts,
        [
            (Some("example"), Some("example.com")),
            (Some("www"), Some("www.example.com")),
            (Some("apps-x"), Some("*.apps.example.com")),
            (Some("example-2"), Some("example.org")),
            (Some("example-3"), Some("*.example.org")),
        ]
    );
    assert_eq!(get_bool(route(&d, "apps-x"), "strip_prefix"), Some(true));
    assert_eq!(str_at(&d, &["upstreams", "app", "address"]), Some("app:3000"));
    assert_eq!(str_at(&d, &["upstreams", "other", "address"]), Some("other:80"));
    // A regular expression is reported, not guessed; a server with only those is left out.
    assert!(has_note(&i, 8, "server_name .example.org"), "{}", notes_text(&i));
    assert!(has_note(&i, 11, "server_name"), "{}", notes_text(&i));
    assert!(has_note(&i, 11, "server"), "{}", notes_text(&i));
    // The certificates carry the names of their servers.
    let certs = item(&d, &["tls", "certificates"]).and_then(Item::as_array_of_tables);
    let hosts_of = |n: usize| strs(certs.and_then(|c| c.get(n)).and_then(|c| c.get("hosts")));
    assert_eq!(
        hosts_of(0),
        ["example.com", "www.example.com", "*.apps.example.com"]
    );
    assert_eq!(hosts_of(1), ["example.org", "*.example.org"]);
    assert_eq!(str_at(&d, &["tls", "default_certificate"]), Some("main"));
}

#[test]
fn tls_protocols_and_ciphers() {
    let ok = imp(&https_server(
        "    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305;\n    ssl_session_tickets off;\n    ssl_session_cache shared:SSL:1m;",
    ));
    assert!(ok.notes.is_empty(), "{}", notes_text(&ok));
    let d = doc(&ok);
    assert_eq!(bool_at(&d, &["tls", "session_tickets"]), Some(false));
    assert_eq!(int_at(&d, &["tls", "session_cache"]), Some(4000));
    let old = imp(&https_server(
        "    ssl_protocols TLSv1 TLSv1.1 TLSv1.2;\n    ssl_ciphers HIGH:!aNULL:!MD5;",
    ));
    assert!(
        has_note(&old, 6, "ssl_protocols TLSv1 TLSv1.1 TLSv1.2"),
        "{}",
        notes_text(&old)
    );
    assert!(
        old.notes[0].why.contains("TLS 1.2 and 1.3 only"),
        "{}",
        notes_text(&old)
    );
    assert!(
        has_note(&old, 7, "ssl_ciphers HIGH:!aNULL:!MD5"),
        "{}",
        notes_text(&old)
    );
    assert!(old.notes[1].why.contains("AEAD"), "{}", notes_text(&old));
}

#[test]
fn certbot_certificates_become_acme() {
    let i = imp(&conf(&[
        "http {",
        "  server { listen 80; server_name example.com;",
        "    location /.well-known/acme-challenge/ { root /var/www/certbot; }",
        "    location / { return 301 https://$host$request_uri; } }",
        "  server { listen 443 ssl; server_name example.com www.example.com;",
        "    ssl_certificate /etc/letsencrypt/live/example.com/fullchain.pem;",
        "    ssl_certificate_key /etc/letsencrypt/live/example.com/privkey.pem;",
        "    location / { proxy_pass http://app:3000; proxy_set_header Host $host; } }",
        "  server { listen 443 ssl; server_name *.example.net;",
        "    ssl_certificate /etc/letsencrypt/live/example.net/fullchain.pem;",
        "    ssl_certificate_key /etc/letsencrypt/live/example.net/privkey.pem;",
        "    location / { proxy_pass http://app:3000; proxy_set_header Host $host; } }",
        "}",
    ]));
    assert!(
        i.notes
            .iter()
            .any(|n| n.directive.contains("nginx's default server")),
        "{}",
        notes_text(&i)
    );
    assert_eq!(i.notes.len(), 2, "{}", notes_text(&i));
    assert!(
        has_note(&i, 6, "ssl_certificate /etc/letsencrypt/live/example.com/"),
        "{}",
        notes_text(&i)
    );
    let d = doc(&i);
    let acme = item(&d, &["acme", "certificates"]).and_then(Item::as_array_of_tables);
    let cert = acme.and_then(|a| a.get(0));
    assert_eq!(cert.and_then(|c| get(c, "name")), Some("example.com"));
    assert_eq!(
        strs(cert.and_then(|c| c.get("names"))),
        ["example.com", "www.example.com"]
    );
    // A wildcard needs dns-01 and a provider: it stays certbot's files.
    let tls = item(&d, &["tls", "certificates"]).and_then(Item::as_array_of_tables);
    let wild = tls.and_then(|a| a.get(0));
    assert_eq!(
        wild.and_then(|c| get(c, "cert")),
        Some("/etc/letsencrypt/live/example.net/fullchain.pem")
    );
    assert_eq!(strs(wild.and_then(|c| c.get("hosts"))), ["*.example.net"]);
    // With [acme], the challenge location is the gateway's own.
    assert!(item(&d, &["server", "acme_webroot"]).is_none());
    assert!(i.toml.contains("[acme]\n"), "{}", i.toml);
    assert!(i.toml.contains("# email = \"admin@example.com\""), "{}", i.toml);
}

#[test]
fn returns_and_redirects() {
    let i = imp(&conf(&[
        "http {",
        "  server { listen 80; return 301 https://$host:8443$request_uri; }",
        "  server { listen 443 ssl; ssl_certificate /c/a.pem; ssl_certificate_key /c/a.key;",
        "    location /old/ { return 302 /new/; }",
        "    location /down/ { return 503; }",
        "    location /teapot { return 418 \"short and stout\"; }",
        "  }",
        "}",
    ]));
    let d = doc(&i);
    assert_eq!(int_at(&d, &["listen", "public_https_port"]), Some(8443));
    assert!(has_note(&i, 4, "return 302 /new/"), "{}", notes_text(&i));
    assert!(has_note(&i, 5, "return 503"), "{}", notes_text(&i));
    assert!(
        i.notes
            .iter()
            .any(|n| n.line == 5 && n.why.contains("maintenance = true")),
        "{}",
        notes_text(&i)
    );
    assert!(
        has_note(&i, 6, "return 418 \"short and stout\""),
        "{}",
        notes_text(&i)
    );
    assert!(routes(&d).is_empty());
}

#[test]
fn location_kinds() {
    let i = imp(&conf(&[
        "http { upstream up { server 10.0.0.1:8080; }",
        "  server { listen 443 ssl; ssl_certificate /c/a.pem; ssl_certificate_key /c/a.key;",
        "    location = /health { proxy_pass http://up; proxy_set_header Host $host; }",
        "    location ^~ /static/ { proxy_pass http://up; proxy_set_header Host $host; }",
        "    location ~ \\.php$ { proxy_pass http://up; }",
        "    location ~* \\.(png|jpg)$ { proxy_pass http://up; }",
        "    location @fallback { proxy_pass http://up; }",
        "    location =/exact { proxy_pass http://up; proxy_set_header Host $host; }",
        "    location /outer/ { proxy_pass http://up; proxy_set_header Host $host;",
        "      location /outer/inner/ { proxy_pass http://up/in/; } }",
        "  }",
        "}",
    ]));
    let d = doc(&i);
    assert_eq!(get(route(&d, "health"), "exact"), Some("/health"));
    assert_eq!(get(route(&d, "static"), "prefix"), Some("/static/"));
    assert_eq!(get(route(&d, "exact"), "exact"), Some("/exact"));
    // A nested location inherits proxy_set_header Host $host.
    let inner = route(&d, "outer-inner");
    assert_eq!(get(inner, "prefix"), Some("/outer/inner/"));
    assert_eq!(get(inner, "rewrite"), Some("/in/"));
    assert!(inner.get("policies").is_none(), "{}", i.toml);
    for line in [5, 6] {
        assert!(
            i.notes
                .iter()
                .any(|n| n.line == line && n.why.contains("regular-expression location")),
            "{}",
            notes_text(&i)
        );
    }
    assert!(has_note(&i, 7, "location @fallback"), "{}", notes_text(&i));
    assert_eq!(i.notes.len(), 3, "{}", notes_text(&i));
    assert!(
        i.notes[0]
            .to_string()
            .starts_with("/nonexistent/nginx.conf:5: not translated: location ~ \\.php$ ("),
        "{}",
        notes_text(&i)
    );
}

#[test]
fn proxy_pass_uri_semantics() {
    let i = imp(&conf(&[
        "http { upstream up { server 10.0.0.1:8080; }",
        "  server { listen 443 ssl; ssl_certificate /c/a.pem; ssl_certificate_key /c/a.key;",
        "    proxy_set_header Host $host;",
        "    location /a/ { proxy_pass http://up; }",
        "    location /b/ { proxy_pass http://up/; }",
        "    location /c/ { proxy_pass http://up/c/; }",
        "    location /d/ { proxy_pass http://up/other/; }",
        "    location = /e { proxy_pass http://up/health; }",
        "    location /f { proxy_pass http://up/g/; }",
        "    location /h/ { proxy_pass http://up/$1; }",
        "    location /i/ { proxy_pass https://up; }",
        "    location /j/ { proxy_pass http://$backend; }",
        "    location /k/ { proxy_pass http://unix:/run/app.sock:/; }",
        "  }",
        "}",
    ]));
    let d = doc(&i);
    // name, strip_prefix, rewrite
    let want: [(&str, Option<bool>, Option<&str>); 6] = [
        ("a", None, None),
        ("b", Some(true), None),
        ("c", None, None),
        ("d", None, Some("/other/")),
        ("e", None, Some("/health")),
        ("f", None, Some("/g/")),
    ];
    for (name, strip, rewrite) in want {
        let r = route(&d, name);
        assert_eq!(get_bool(r, "strip_prefix"), strip, "{name}");
        assert_eq!(get(r, "rewrite"), rewrite, "{name}");
        assert_eq!(get(r, "upstream"), Some("up"), "{name}");
    }
    // /f without its slash: the boundary and the double slash are said in comments.
    assert!(
        i.toml.contains("nginx's `location /f` also matched /fx..."),
        "{}",
        i.toml
    );
    assert!(
        i.toml
            .contains("nginx sent /f/x as /g//x; the gateway sends /g/x"),
        "{}",
        i.toml
    );
    assert!(
        i.toml.contains("nginx's proxy_redirect default rewrote"),
        "{}",
        i.toml
    );
    for (line, start) in [
        (10, "proxy_pass http://up/$1"),
        (11, "proxy_pass https://up"),
        (12, "proxy_pass http://$backend"),
        (13, "proxy_pass http://unix:"),
    ] {
        assert!(has_note(&i, line, start), "{line}: {}", notes_text(&i));
    }
    assert_eq!(routes(&d).len(), 6, "{}", i.toml);
}

#[test]
fn upstream_blocks() {
    let i = imp(&conf(&[
        "http {",
        "  upstream api {",
        "    least_conn;",
        "    server api-1:3001 max_fails=2 fail_timeout=20s;",
        "    server api-2:3001 max_fails=2 fail_timeout=20s;",
        "    server api-3:3001 weight=2 max_fails=2 fail_timeout=20s;",
        "    server spare:3001 backup;",
        "    keepalive 32;",
        "    keepalive_timeout 30s;",
        "    zone api 64k;",
        "  }",
        "  upstream sticky { ip_hash; server a:1; server b:1; }",
        "  upstream tok { hash $cookie_token consistent; server a:1; server b:1; }",
        "  upstream uri { hash $request_uri; server a:1; server b:1 max_fails=3; server c:1 max_fails=5; }",
        "  upstream rnd { random two least_conn; server a:1; server b:1 down; server unix:/s.sock; }",
        "  upstream odd { hash $host$uri; server a:1 slow_start=30s; }",
        "  server { listen 443 ssl; ssl_certificate /c/a.pem; ssl_certificate_key /c/a.key;",
        "    location / { proxy_pass http://api; proxy_set_header Host $host; }",
        "  }",
        "}",
    ]));
    let d = doc(&i);
    let servers = item(&d, &["upstreams", "api", "servers"])
        .and_then(Item::as_array)
        .map(|a| {
            a.iter()
                .map(|v| v.to_string().trim().to_owned())
                .collect::<Vec<_>>()
        });
    assert_eq!(
        servers.unwrap_or_default(),
        [
            "\"api-1:3001\"",
            "\"api-2:3001\"",
            "{ address = \"api-3:3001\", weight = 2 }",
            "{ address = \"spare:3001\", backup = true }",
        ]
    );
    assert_eq!(str_at(&d, &["upstreams", "api", "balance"]), Some("least_conn"));
    assert_eq!(int_at(&d, &["upstreams", "api", "max_fails"]), Some(2));
    assert_eq!(str_at(&d, &["upstreams", "api", "fail_timeout"]), Some("20s"));
    assert_eq!(int_at(&d, &["upstreams", "api", "keepalive"]), Some(32));
    assert_eq!(str_at(&d, &["upstreams", "api", "idle_timeout"]), Some("30s"));
    assert!(i.toml.contains("spare:3001 had nginx's defaults"), "{}", i.toml);
    assert_eq!(str_at(&d, &["upstreams", "sticky", "balance"]), Some("hash"));
    assert_eq!(str_at(&d, &["upstreams", "sticky", "hash_key"]), Some("client"));
    assert_eq!(
        str_at(&d, &["upstreams", "tok", "hash_key"]),
        Some("cookie:token")
    );
    assert_eq!(str_at(&d, &["upstreams", "uri", "hash_key"]), Some("uri"));
    assert_eq!(str_at(&d, &["upstreams", "rnd", "balance"]), Some("random"));
    assert_eq!(str_at(&d, &["upstreams", "rnd", "address"]), Some("a:1"));
    // Different max_fails per server: the first one's, the others noted.
    assert!(has_note(&i, 14, "server c:1 max_fails=5"), "{}", notes_text(&i));
    assert!(has_note(&i, 15, "server b:1 down"), "{}", notes_text(&i));
    assert!(has_note(&i, 15, "server unix:/s.sock"), "{}", notes_text(&i));
    assert!(has_note(&i, 16, "hash $host$uri"), "{}", notes_text(&i));
    assert!(
        has_note(&i, 16, "server a:1 slow_start=30s"),
        "{}",
        notes_text(&i)
    );
    assert_eq!(i.notes.len(), 5, "{}", notes_text(&i));
    assert!(
        i.toml
            .contains("zone api 64k; -> the group's state needs no shared memory zone"),
        "{}",
        i.toml
    );
}

#[test]
fn proxy_set_header_rules() {
    let i = imp(&conf(&[
        "http { upstream up { server 10.0.0.1:8080; }",
        "  server { listen 443 ssl; ssl_certificate /c/a.pem; ssl_certificate_key /c/a.key;",
        "    location /ws/ { proxy_pass http://up; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\";",
        "      proxy_set_header Host $host; proxy_set_header X-Real-IP $remote_addr; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }",
        "    location /half/ { proxy_pass http://up; proxy_set_header Upgrade $http_upgrade; proxy_set_header Host $host; }",
        "    location /custom/ { proxy_pass http://up; proxy_set_header Host $http_host;",
        "      proxy_set_header X-Custom \"v 1\"; proxy_set_header X-Client $remote_addr; proxy_set_header X-Debug \"\";",
        "      proxy_set_header X-Orig $request_uri; proxy_hide_header X-Powered-By; }",
        "    location /default/ { proxy_pass http://up; }",
        "  }",
        "}",
    ]));
    let d = doc(&i);
    assert_eq!(get_bool(route(&d, "ws"), "websocket"), Some(true));
    assert_eq!(get_bool(route(&d, "half"), "websocket"), Some(false));
    assert!(
        i.toml.contains("nginx set only one of Upgrade and Connection"),
        "{}",
        i.toml
    );
    // $host and $http_host: one host_header for the gateway; the other is noted.
    assert_eq!(str_at(&d, &["forwarding", "host_header"]), Some("nginx"));
    assert!(
        has_note(&i, 6, "proxy_set_header Host $http_host"),
        "{}",
        notes_text(&i)
    );
    assert!(
        has_note(&i, 8, "proxy_set_header X-Orig $request_uri"),
        "{}",
        notes_text(&i)
    );
    assert_eq!(i.notes.len(), 2, "{}", notes_text(&i));
    // The other headers: a policy.
    let policies = strs(route(&d, "custom").get("policies"));
    assert_eq!(policies, ["custom-headers"]);
    assert_eq!(
        str_at(
            &d,
            &["policies", "custom-headers", "request_headers", "set", "X-Custom"]
        ),
        Some("v 1")
    );
    assert_eq!(
        str_at(
            &d,
            &["policies", "custom-headers", "request_headers", "set", "X-Client"]
        ),
        Some("$remote_addr")
    );
    assert_eq!(
        strs(item(
            &d,
            &["policies", "custom-headers", "request_headers", "remove"]
        )),
        ["X-Debug"]
    );
    assert_eq!(
        strs(item(
            &d,
            &["policies", "custom-headers", "response_headers", "remove"]
        )),
        ["X-Powered-By"]
    );
    // No Host line: nginx sent $proxy_host, a policy keeps it.
    assert_eq!(strs(route(&d, "default").get("policies")), ["host-up"]);
    assert_eq!(
        str_at(&d, &["policies", "host-up", "request_headers", "set", "Host"]),
        Some("up")
    );
    // The built-in ones are listed.
    assert!(
        i.toml
            .contains("proxy_set_header X-Forwarded-For (nginx.conf:4), X-Real-IP (nginx.conf:4): built in"),
        "{}",
        i.toml
    );
}

#[test]
fn timeouts_buffering_and_next_upstream() {
    let i = imp(&https_server(
        "    location / { proxy_pass http://app:3000; proxy_set_header Host $host;\n      proxy_read_timeout 300s; proxy_send_timeout 5m; proxy_connect_timeout 5;\n      proxy_buffering off; proxy_request_buffering off;\n      proxy_next_upstream error timeout http_502 http_404; proxy_next_upstream_tries 2; proxy_next_upstream_timeout 10s; }\n    location /bad/ { proxy_pass http://app:3000; proxy_set_header Host $host; proxy_read_timeout soon; }",
    ));
    let d = doc(&i);
    let r = route(&d, "root");
    assert_eq!(get(r, "read_timeout"), Some("300s"));
    assert_eq!(get(r, "write_timeout"), Some("5m"));
    assert_eq!(get(r, "connect_timeout"), Some("5s"));
    assert_eq!(
        strs(item(&d, &["upstreams", "app", "next_upstream"])),
        ["error", "timeout", "http_502"]
    );
    assert_eq!(int_at(&d, &["upstreams", "app", "next_upstream_tries"]), Some(2));
    assert_eq!(
        str_at(&d, &["upstreams", "app", "next_upstream_timeout"]),
        Some("10s")
    );
    assert!(
        i.toml
            .contains("proxy_buffering off; -> responses stream as they arrive"),
        "{}",
        i.toml
    );
    assert!(
        has_note(&i, 8, "proxy_request_buffering off"),
        "{}",
        notes_text(&i)
    );
    assert!(
        has_note(&i, 9, "proxy_next_upstream error timeout http_502 http_404"),
        "{}",
        notes_text(&i)
    );
    assert!(has_note(&i, 10, "proxy_read_timeout soon"), "{}", notes_text(&i));
    assert_eq!(i.notes.len(), 3, "{}", notes_text(&i));
}

#[test]
fn limits_and_keepalive() {
    let i = imp(&conf(&[
        "http {",
        "  client_max_body_size 10m;",
        "  client_header_timeout 20s;",
        "  client_body_timeout 30;",
        "  send_timeout 45s;",
        "  keepalive_timeout 75s 60s;",
        "  large_client_header_buffers 4 16k;",
        "  server { listen 443 ssl; ssl_certificate /c/a.pem; ssl_certificate_key /c/a.key; client_body_timeout 31s;",
        "    location /up/ { proxy_pass http://app:3000; proxy_set_header Host $host; client_max_body_size 100m; }",
        "    location /same/ { proxy_pass http://app:3000; proxy_set_header Host $host; client_max_body_size 10M; }",
        "  }",
        "}",
    ]));
    let d = doc(&i);
    assert_eq!(str_at(&d, &["limits", "max_body"]), Some("10M"));
    assert_eq!(get(route(&d, "up"), "max_body"), Some("100M"));
    assert!(route(&d, "same").get("max_body").is_none());
    assert_eq!(str_at(&d, &["limits", "header_read_timeout"]), Some("20s"));
    assert_eq!(str_at(&d, &["limits", "body_read_timeout"]), Some("30s"));
    assert_eq!(str_at(&d, &["limits", "send_timeout"]), Some("45s"));
    assert_eq!(str_at(&d, &["limits", "keepalive_timeout"]), Some("75s"));
    assert_eq!(str_at(&d, &["limits", "max_uri"]), Some("16K"));
    assert_eq!(str_at(&d, &["limits", "max_header_bytes"]), Some("64K"));
    assert!(has_note(&i, 6, "keepalive_timeout 75s 60s"), "{}", notes_text(&i));
    assert!(has_note(&i, 8, "client_body_timeout 31s"), "{}", notes_text(&i));
    assert_eq!(i.notes.len(), 2, "{}", notes_text(&i));
}

#[test]
fn gzip_per_route() {
    let i = imp(&conf(&[
        "http { gzip on; gzip_vary on; gzip_proxied any; gzip_comp_level 5; gzip_min_length 1k;",
        "  server { listen 443 ssl; ssl_certificate /c/a.pem; ssl_certificate_key /c/a.key;",
        "    location / { proxy_pass http://app:3000; proxy_set_header Host $host; }",
        "    location /raw/ { proxy_pass http://app:3000; proxy_set_header Host $host; gzip off; }",
        "  }",
        "}",
    ]));
    assert!(i.notes.is_empty(), "{}", notes_text(&i));
    let d = doc(&i);
    assert_eq!(bool_at(&d, &["compression", "enabled"]), Some(true));
    assert_eq!(int_at(&d, &["compression", "level"]), Some(5));
    assert_eq!(str_at(&d, &["compression", "min_length"]), Some("1K"));
    assert_eq!(strs(item(&d, &["compression", "types"])), ["text/html"]);
    assert_eq!(get_bool(route(&d, "raw"), "compress"), Some(false));
    assert!(route(&d, "root").get("compress").is_none());
    let off = doc(&imp(&https_server(
        "    location / { proxy_pass http://app:3000; proxy_set_header Host $host; }",
    )));
    assert_eq!(bool_at(&off, &["compression", "enabled"]), Some(false));
}

#[test]
fn add_header_in_locations() {
    let i = imp(&https_server(
        "    add_header X-Frame-Options DENY always;\n    location / { proxy_pass http://app:3000; proxy_set_header Host $host;\n      add_header Cache-Control \"no-store\" always; add_header X-Tag \"a\\\"b\\\\c\"; add_header X-Host $host always; }",
    ));
    assert!(i.notes.is_empty(), "{}", notes_text(&i));
    let d = doc(&i);
    let r = route(&d, "root");
    assert_eq!(
        r.get("headers")
            .and_then(|h| h.get("Cache-Control"))
            .and_then(Item::as_str),
        Some("no-store")
    );
    assert_eq!(
        r.get("headers")
            .and_then(|h| h.get("X-Tag"))
            .and_then(Item::as_str),
        Some("a\"b\\c")
    );
    assert_eq!(
        str_at(&d, &["security", "headers", "X-Frame-Options"]),
        Some("DENY")
    );
    assert_eq!(
        str_at(
            &d,
            &["policies", "root-headers", "response_headers", "set", "X-Host"]
        ),
        Some("$host")
    );
    assert!(
        i.toml.contains("nginx added X-Tag to 2xx and 3xx responses only"),
        "{}",
        i.toml
    );
    assert!(
        i.toml
            .contains("nginx sent only this location's add_header here, not the server's"),
        "{}",
        i.toml
    );
}
