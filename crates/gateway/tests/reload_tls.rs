//! HTTPS is never lost to a reload: for every shape of the `[tls]` / `[acme]` sections, and
//! after each of several reloads in a row, a new TLS connection with SNI, with an unknown
//! SNI and without SNI completes its handshake and gets a 200.

mod harness;

use harness::config::{preamble, route, upstream_at};
use harness::{client, poll_until, upstream, Gateway};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn write_cert(dir: &Path, name: &str, hosts: &[&str]) {
    let c =
        rcgen::generate_simple_self_signed(hosts.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("fullchain.pem"), c.cert.pem()).unwrap();
    std::fs::write(d.join("privkey.pem"), c.signing_key.serialize_pem()).unwrap();
}

/// One configuration shape; `version` is echoed in a response header so the test knows
/// when the reload has been applied.
fn config(up: SocketAddr, version: usize, tls: &str) -> String {
    format!(
        r#"
{head}{tls}
{echo}{all}"#,
        head = preamble("2s", ""),
        echo = upstream_at("echo", up),
        all = route(
            "all",
            "/",
            "echo",
            &format!("headers = {{ X-Config-Version = \"{version}\" }}\n")
        ),
    )
}

/// A new TLS connection (`sni` None: no SNI extension at all, as with an IP address) and
/// one request; returns the status line and the config version header.
async fn get(addr: SocketAddr, sni: Option<&str>) -> Result<(String, String), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cfg = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(client::Capture::default()))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_owned()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let work = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.lines().next().unwrap_or_default().to_owned();
        let version = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("x-config-version: ")
                    .or_else(|| l.strip_prefix("X-Config-Version: "))
            })
            .unwrap_or_default()
            .to_owned();
        Ok((status, version))
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[tokio::test]
async fn every_reload_keeps_https_for_every_config_shape() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path().display().to_string();
    write_cert(certs.path(), "a", &["a.test"]);
    write_cert(certs.path(), "b", &["b.test"]);
    let file = |name: &str| {
        format!("[[tls.certificates]]\nname = \"{name}\"\ncert = \"{d}/{name}/fullchain.pem\"\nkey = \"{d}/{name}/privkey.pem\"\n")
    };
    // A CA nobody answers for: the ACME certificate stays a placeholder.
    let acme = |names: &str| {
        format!(
            "[acme]\ndirectory = \"https://127.0.0.1:9/directory\"\nstorage = \"{{DIR}}/acme\"\nretry_min = \"1h\"\n\
             [[acme.certificates]]\nname = \"m\"\nnames = [{names}]\n"
        )
    };
    let shapes: Vec<(&str, String)> = vec![
        ("none", String::new()),
        ("none again", String::new()),
        (
            "files only",
            format!("[tls]\ndefault_certificate = \"b\"\n{}{}", file("a"), file("b")),
        ),
        ("a certificate removed", format!("[tls]\n{}", file("a"))),
        (
            "default changed",
            format!("[tls]\ndefault_certificate = \"a\"\n{}{}", file("a"), file("b")),
        ),
        ("a broken file", format!("[tls]\n{}", file("broken"))),
        ("ACME only", acme("\"m.example.com\"")),
        (
            "mixed",
            format!("[tls]\n{}\n{}", file("a"), acme("\"m.example.com\"")),
        ),
        ("ACME names changed", acme("\"n.example.com\"")),
        ("none at the end", String::new()),
    ];
    std::fs::create_dir_all(certs.path().join("broken")).unwrap();
    std::fs::write(certs.path().join("broken/fullchain.pem"), "not a certificate").unwrap();
    std::fs::write(certs.path().join("broken/privkey.pem"), "not a key").unwrap();

    let up = upstream::echo().await;
    let gw = Gateway::start(&config(up.addr, 0, &shapes[0].1)).await;
    for (version, (shape, tls)) in shapes.iter().enumerate() {
        if version > 0 {
            gw.write_config(&config(up.addr, version, tls));
            // Alternate the two triggers: the file watch, and SIGHUP on top.
            if version % 2 == 0 {
                gw.signal(nix::sys::signal::Signal::SIGHUP);
            }
        }
        let want = version.to_string();
        poll_until(
            Duration::from_secs(15),
            &format!("config {version} ({shape}) applied"),
            || {
                let want = want.clone();
                async move {
                    match get(gw.https, Some("localhost")).await {
                        Ok((_, v)) if v == want => Some(()),
                        _ => None,
                    }
                }
            },
        )
        .await;
        for sni in [Some("a.test"), Some("unknown.test"), None] {
            for attempt in 0..3 {
                let r = get(gw.https, sni).await;
                match r {
                    Ok((status, v)) => {
                        assert!(
                            status.contains(" 200 "),
                            "{shape}, SNI {sni:?}, try {attempt}: {status}"
                        );
                        assert_eq!(v, want, "{shape}: served by the new config");
                    }
                    Err(e) => panic!("{shape}: a new TLS connection with SNI {sni:?} failed: {e}"),
                }
            }
        }
    }
}
