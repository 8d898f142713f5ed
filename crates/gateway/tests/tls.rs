//! TLS: certificates by SNI, the default certificate, the self-signed first start, and
//! certificate files replaced while serving (certbot renewals).

mod harness;

use harness::gateway::simple_config;
use harness::{client, poll_until, upstream, Gateway};
use std::path::Path;
use std::time::Duration;

fn write_cert(dir: &Path, name: &str, hosts: &[&str]) {
    let c =
        rcgen::generate_simple_self_signed(hosts.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    // Written beside, then renamed: what certbot and editors do.
    std::fs::write(d.join("fullchain.pem.tmp"), c.cert.pem()).unwrap();
    std::fs::write(d.join("privkey.pem.tmp"), c.signing_key.serialize_pem()).unwrap();
    std::fs::rename(d.join("privkey.pem.tmp"), d.join("privkey.pem")).unwrap();
    std::fs::rename(d.join("fullchain.pem.tmp"), d.join("fullchain.pem")).unwrap();
}

fn two_certs(dir: &str) -> String {
    format!(
        "[tls]\ndefault_certificate = \"b\"\n\
         [[tls.certificates]]\nname = \"a\"\ncert = \"{dir}/a/fullchain.pem\"\nkey = \"{dir}/a/privkey.pem\"\n\
         [[tls.certificates]]\nname = \"b\"\ncert = \"{dir}/b/fullchain.pem\"\nkey = \"{dir}/b/privkey.pem\"\n"
    )
}

#[tokio::test]
async fn sni_picks_the_certificate_and_files_are_reloaded_when_they_change() {
    let certs = tempfile::tempdir().unwrap();
    write_cert(certs.path(), "a", &["a.test", "*.a.test"]);
    write_cert(certs.path(), "b", &["b.test"]);
    let up = upstream::echo().await;
    let gw = Gateway::start(&simple_config(
        up.addr,
        &two_certs(&certs.path().display().to_string()),
    ))
    .await;

    let (_, a) = client::tls(gw.https, "a.test").await;
    assert_eq!(client::cert_names(&a), vec!["a.test", "*.a.test"]);
    let (_, wild) = client::tls(gw.https, "www.a.test").await;
    assert_eq!(client::cert_names(&wild), vec!["a.test", "*.a.test"]);
    let (_, b) = client::tls(gw.https, "b.test").await;
    assert_eq!(client::cert_names(&b), vec!["b.test"]);
    let (_, other) = client::tls(gw.https, "unknown.test").await;
    assert_eq!(
        client::cert_names(&other),
        vec!["b.test"],
        "unknown names get the default"
    );

    // An open connection keeps working while the certificate is replaced underneath.
    let (mut open, _) = client::tls(gw.https, "a.test").await;
    write_cert(certs.path(), "a", &["a.test", "renewed.a.test"]);
    poll_until(Duration::from_secs(10), "the renewed certificate", || async {
        let (_, c) = client::tls(gw.https, "a.test").await;
        client::cert_names(&c)
            .contains(&"renewed.a.test".to_string())
            .then_some(())
    })
    .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    open.write_all(b"GET /still HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    open.read_to_string(&mut resp).await.ok();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    // A broken file keeps the last good certificate, and says why.
    std::fs::write(certs.path().join("a/fullchain.pem"), "not a certificate").unwrap();
    poll_until(
        Duration::from_secs(10),
        "the reload to report the bad file",
        || {
            let log = gw.stderr();
            async move { log.contains("keeping the previous certificate").then_some(()) }
        },
    )
    .await;
    let (_, c) = client::tls(gw.https, "a.test").await;
    assert!(client::cert_names(&c).contains(&"renewed.a.test".to_string()));
}

#[tokio::test]
async fn first_start_without_certificates_serves_a_self_signed_one() {
    let up = upstream::echo().await;
    let cfg = simple_config(up.addr, "[tls]\n[[tls.certificates]]\nname = \"main\"\nhosts = [\"example.test\"]\ncert = \"{DIR}/certs/main/fullchain.pem\"\nkey = \"{DIR}/certs/main/privkey.pem\"\nif_missing = \"self-signed\"\n");
    let gw = Gateway::start(&cfg).await;
    let (_, c) = client::tls(gw.https, "example.test").await;
    assert_eq!(client::cert_names(&c), vec!["example.test"]);
    assert!(gw.stderr().contains("self-signed"), "the stand-in is logged");
    let r = client::http(true).get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);

    // certbot (or a person) drops real files in: they replace the stand-in without a restart.
    write_cert(
        &gw.dir.path().join("certs"),
        "main",
        &["example.test", "www.example.test"],
    );
    poll_until(Duration::from_secs(10), "the real certificate", || async {
        let (_, c) = client::tls(gw.https, "example.test").await;
        (client::cert_names(&c).len() == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn tls_1_2_and_1_3_both_negotiate() {
    let up = upstream::echo().await;
    let gw = Gateway::start(&simple_config(up.addr, "")).await;
    for (version, ok) in [(&rustls::version::TLS12, true), (&rustls::version::TLS13, true)] {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let capture = std::sync::Arc::new(client::Capture::default());
        let cfg = rustls::ClientConfig::builder_with_protocol_versions(&[version])
            .dangerous()
            .with_custom_certificate_verifier(capture)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        assert_eq!(connector.connect(name, tcp).await.is_ok(), ok, "{version:?}");
    }
}

/// Every reconnection resumes, whichever thread's socket (`reuseport`, 2 threads) accepts it:
/// the threads share one session cache.
#[tokio::test]
async fn tls_sessions_are_resumed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream::echo().await;
    let gw = Gateway::start(&simple_config(up.addr, "")).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cfg = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(client::Capture::default()))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let mut kinds = Vec::new();
    for _ in 0..8 {
        let tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut s = connector.connect(name, tcp).await.unwrap();
        kinds.push(s.get_ref().1.handshake_kind());
        // Reading the answer also reads the session tickets sent after the handshake.
        s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        assert!(buf.starts_with(b"HTTP/1.1 200"));
    }
    assert_eq!(kinds[0], Some(rustls::HandshakeKind::Full));
    for (i, kind) in kinds.iter().enumerate().skip(1) {
        assert_eq!(
            *kind,
            Some(rustls::HandshakeKind::Resumed),
            "connection {i} resumes: {kinds:?}"
        );
    }
}

#[tokio::test]
async fn failed_handshakes_are_counted() {
    use tokio::io::AsyncWriteExt;
    let up = upstream::echo().await;
    let gw = Gateway::start(&simple_config(up.addr, "")).await;
    // Not TLS at all: the handshake fails on the gateway's side.
    let mut s = tokio::net::TcpStream::connect(gw.https).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    drop(s);
    let metrics = format!("http://{}/metrics", gw.metrics);
    poll_until(Duration::from_secs(10), "the failure counter", || {
        let metrics = metrics.clone();
        async move {
            let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
            text.lines()
                .find(|l| l.starts_with("gateway_tls_handshake_failures_total "))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .filter(|n| *n >= 1.0)
        }
    })
    .await;
}
