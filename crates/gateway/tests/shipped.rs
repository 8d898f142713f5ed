//! The shipped proxy.toml, its compose names pointed at test upstreams, serves every
//! route of the reference nginx.conf.

mod harness;

use harness::{client, upstream, Gateway};
use std::collections::HashMap;
use std::path::Path;

#[tokio::test]
async fn shipped_proxy_toml_serves_every_reference_route() {
    let mut ups = HashMap::new();
    for name in ["api", "n8n", "open-webui", "nodered", "grafana"] {
        ups.insert(name, upstream::echo().await);
    }
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proxy.toml")).unwrap();
    let mut text = shipped;
    for (name, port) in [
        ("api", 3001),
        ("n8n", 5678),
        ("open-webui", 8080),
        ("nodered", 1880),
        ("grafana", 3000),
    ] {
        let from = format!("address = \"{name}:{port}\"");
        assert!(text.contains(&from), "the shipped file names {name}:{port}");
        text = text.replace(&from, &format!("address = \"{}\"", ups[name].addr));
    }
    // The shipped file reads its listen addresses and its state directory (certificates)
    // from the environment.
    let env = [
        ("GATEWAY_STATE_DIR", "{DIR}"),
        ("GATEWAY_HTTPS_ADDR", "{HTTPS}"),
        ("GATEWAY_HTTP_ADDR", "{HTTP}"),
        ("GATEWAY_METRICS_ADDR", "{METRICS}"),
        ("DOMAIN", "localhost"),
    ];
    let gw = Gateway::start_with_env(&text, &env).await;

    // (request path, upstream, path the upstream sees) from nginx.conf's locations.
    let cases = [
        ("/", "api", "/"),
        ("/index.html?v=2", "api", "/index.html?v=2"),
        ("/api/devices/7", "api", "/api/devices/7"),
        ("/docs/guide/", "api", "/docs/guide/"),
        ("/n8n/rest/push", "n8n", "/rest/push"),
        ("/webhook/abc-123", "n8n", "/webhook/abc-123"),
        ("/ai/c/42", "open-webui", "/c/42"),
        ("/nodered/flows", "nodered", "/flows"),
        ("/grafana/d/home", "grafana", "/d/home"),
        ("/health", "api", "/api/health"),
        ("/api/../n8n/x", "n8n", "/x"),
    ];
    let c = client::http(true);
    for (path, up, seen_path) in cases {
        let before = ups[up].seen().len();
        let r = c.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers().get("x-frame-options").unwrap(), "SAMEORIGIN");
        assert_eq!(r.headers().get("x-xss-protection").unwrap(), "1; mode=block");
        let seen = ups[up].seen();
        assert_eq!(seen.len(), before + 1, "{path} did not reach {up}");
        let last = seen.last().unwrap();
        assert_eq!(last.uri, seen_path, "{path}");
        assert_eq!(last.header("x-forwarded-proto"), Some("https"));
        assert_eq!(last.header("x-real-ip"), Some("127.0.0.1"));
    }
    let r = c.get(gw.url("/n8n")).send().await.unwrap();
    assert_eq!(r.status(), 301);
    let r = c
        .get(gw.url("/big.html"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("content-encoding").unwrap(), "gzip");

    // HTTP redirects to HTTPS.
    let r = c
        .get(format!("http://{}/grafana/?x=1", gw.http))
        .header("Host", "localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    // The shipped file leaves `public_https_port` to its default: the HTTPS listener's port.
    assert_eq!(
        r.headers().get("location").unwrap().to_str().unwrap(),
        format!("https://localhost:{}/grafana/?x=1", gw.https.port())
    );
}

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)).unwrap()
}

/// deploy/ describes the stack with the gateway in nginx's place, consistently with the code.
#[test]
fn deploy_files_agree_with_the_gateway() {
    let compose = repo("deploy/docker-compose.prod.yml");
    assert!(!compose.contains("image: nginx"), "nginx is replaced");
    for needle in [
        "gateway:",
        "\"80:80\"",
        "\"443:443\"",
        "stop_grace_period: 10s",
        "gateway\", \"healthcheck\"",
    ] {
        assert!(compose.contains(needle), "compose lacks {needle}");
    }
    assert!(!compose.contains("9100:9100"), "metrics are never published");
    // The grace period must end before docker's SIGKILL.
    let shipped = repo("proxy.toml");
    assert!(shipped.contains("grace_period = \"8s\""));

    let unit = repo("deploy/gateway.service");
    assert!(unit.contains("ExecReload=/usr/local/bin/gateway reload"));
    assert!(unit.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE"));
    let docker = repo("deploy/Dockerfile");
    // The compose layout itself (volumes, owners, the image's user): deploy.rs.
    assert!(docker.contains("USER 10001:10001") && docker.contains("cap_net_bind_service"));

    // Every series the dashboard queries is in a live scrape: monitoring.rs.

    // The migration guide covers every directive of the reference nginx.conf's proxying.
    let guide = repo("docs/migrating-from-nginx.md");
    for d in [
        "client_max_body_size",
        "gzip_types",
        "proxy_read_timeout",
        "proxy_buffering",
        "ssl_ciphers",
        "keepalive 32",
        "acme-challenge",
        "X-Forwarded-For",
    ] {
        assert!(guide.contains(d), "the guide does not mention {d}");
    }
}

// Every key the parser accepts is documented: crates/config/tests/files.rs asks the parser.
