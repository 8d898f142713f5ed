//! TLS: certificates by SNI, the default certificate, the self-signed first start, and
//! certificate files replaced while serving (certbot renewals).

mod harness;

use harness::gateway::simple_config;
use harness::{client, poll_until, upstream, within, Gateway};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The deadline of one step (a connection, a handshake, a response).
const STEP: Duration = Duration::from_secs(10);

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
    poll_until(Duration::from_secs(20), "the renewed certificate", || async {
        let (_, c) = client::tls(gw.https, "a.test").await;
        client::cert_names(&c)
            .contains(&"renewed.a.test".to_string())
            .then_some(())
    })
    .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = open.write_all(b"GET /still HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    within(STEP, "sending on the open connection", request)
        .await
        .unwrap();
    let mut resp = String::new();
    let _ = within(
        STEP,
        "the answer on the open connection",
        open.read_to_string(&mut resp),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    // A broken file keeps the last good certificate, and says why.
    std::fs::write(certs.path().join("a/fullchain.pem"), "not a certificate").unwrap();
    poll_until(
        Duration::from_secs(20),
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
    poll_until(Duration::from_secs(20), "the real certificate", || async {
        let (_, c) = client::tls(gw.https, "example.test").await;
        (client::cert_names(&c).len() == 2).then_some(())
    })
    .await;
}

/// `openssl s_client` against `addr` with SNI `sni` and `args` (split on whitespace):
/// whether the handshake completed, and everything the client printed.
async fn s_client(openssl: &Path, addr: SocketAddr, sni: &str, args: &str) -> (bool, String) {
    let mut cmd = Command::new(openssl);
    cmd.arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-servername")
        .arg(sni)
        .args(args.split_whitespace());
    let out = harness::run_cmd_async(cmd, Duration::from_secs(30)).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// What `openssl s_client` prints when its own settings, not the server, stop a handshake.
const CLIENT_SIDE: [&str; 5] = [
    "no protocols available",
    "no cipher match",
    "no ciphers available",
    "unknown option",
    "legacy sigalg",
];

/// TLS 1.2 and 1.3 with forward-secret AEAD suites complete; TLS 1.0/1.1, CBC suites and RSA
/// key exchange are refused. rustls cannot offer the refused ones as a client, so those rows
/// use `openssl s_client`, against an ECDSA (rcgen) and an RSA (openssl) certificate, each
/// refused row beside an accepted one with the same key type.
#[tokio::test]
async fn tls_versions_and_cipher_suites_accepted_and_refused() {
    let openssl = harness::require_tool("openssl", "openssl");
    let certs = tempfile::tempdir().unwrap();
    write_cert(certs.path(), "ec", &["ec.test"]);
    let rsa = certs.path().join("rsa");
    std::fs::create_dir_all(&rsa).unwrap();
    let mut req = Command::new(&openssl);
    req.args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=rsa.test", "-addext", "subjectAltName=DNS:rsa.test"])
        .arg("-keyout")
        .arg(rsa.join("privkey.pem"))
        .arg("-out")
        .arg(rsa.join("fullchain.pem"));
    let out = harness::run_cmd_async(req, Duration::from_secs(60)).await;
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = certs.path().display();
    let tls = format!(
        "[tls]\ndefault_certificate = \"ec\"\n\
         [[tls.certificates]]\nname = \"ec\"\ncert = \"{d}/ec/fullchain.pem\"\nkey = \"{d}/ec/privkey.pem\"\n\
         [[tls.certificates]]\nname = \"rsa\"\ncert = \"{d}/rsa/fullchain.pem\"\nkey = \"{d}/rsa/privkey.pem\"\n"
    );
    let up = upstream::echo().await;
    let gw = Gateway::start(&simple_config(up.addr, &tls)).await;

    // rustls as the client: both versions, both key types.
    let _ = rustls::crypto::ring::default_provider().install_default();
    for (version, sni) in [
        (&rustls::version::TLS12, "ec.test"),
        (&rustls::version::TLS13, "ec.test"),
        (&rustls::version::TLS12, "rsa.test"),
        (&rustls::version::TLS13, "rsa.test"),
    ] {
        let capture = std::sync::Arc::new(client::Capture::default());
        let cfg = rustls::ClientConfig::builder_with_protocol_versions(&[version])
            .dangerous()
            .with_custom_certificate_verifier(capture)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
        let tcp = within(STEP, "connecting", tokio::net::TcpStream::connect(gw.https))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from(sni).unwrap();
        let handshake = within(STEP, "the handshake", connector.connect(name, tcp)).await;
        assert!(
            handshake.is_ok(),
            "rustls {version:?} {sni}: {:?}",
            handshake.err()
        );
    }

    // openssl as the client. The security level 0 lets it offer TLS 1.0/1.1 at all; the
    // accepted row with the same setting shows that setting is not what fails.
    let any = "-cipher DEFAULT:@SECLEVEL=0";
    let rows = [
        (
            "TLS 1.3",
            "ec.test",
            "-tls1_3".to_owned(),
            Some("New, TLSv1.3, Cipher is TLS_"),
        ),
        (
            "TLS 1.2, ECDHE-ECDSA AES-GCM",
            "ec.test",
            "-tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256".to_owned(),
            Some("New, TLSv1.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"),
        ),
        (
            "TLS 1.2, ECDHE-ECDSA ChaCha20-Poly1305",
            "ec.test",
            "-tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305".to_owned(),
            Some("New, TLSv1.2, Cipher is ECDHE-ECDSA-CHACHA20-POLY1305"),
        ),
        (
            "TLS 1.2, ECDHE-RSA AES-GCM",
            "rsa.test",
            "-tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256".to_owned(),
            Some("New, TLSv1.2, Cipher is ECDHE-RSA-AES128-GCM-SHA256"),
        ),
        (
            "TLS 1.2 at security level 0",
            "ec.test",
            format!("-tls1_2 {any}"),
            Some("New, TLSv1.2, Cipher is ECDHE-ECDSA-"),
        ),
        ("TLS 1.0 alone", "ec.test", format!("-tls1 {any}"), None),
        ("TLS 1.1 alone", "ec.test", format!("-tls1_1 {any}"), None),
        ("TLS 1.0 alone, RSA", "rsa.test", format!("-tls1 {any}"), None),
        ("TLS 1.1 alone, RSA", "rsa.test", format!("-tls1_1 {any}"), None),
        (
            "CBC, ECDHE-ECDSA",
            "ec.test",
            "-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA".to_owned(),
            None,
        ),
        (
            "CBC, ECDHE-RSA",
            "rsa.test",
            "-tls1_2 -cipher ECDHE-RSA-AES128-SHA".to_owned(),
            None,
        ),
        (
            "RSA key exchange, CBC",
            "rsa.test",
            "-tls1_2 -cipher AES128-SHA".to_owned(),
            None,
        ),
        (
            "RSA key exchange, GCM (not forward-secret)",
            "rsa.test",
            "-tls1_2 -cipher AES128-GCM-SHA256".to_owned(),
            None,
        ),
    ];
    let mut wrong = Vec::new();
    for (what, sni, args, accepted) in rows {
        let (ok, text) = s_client(&openssl, gw.https, sni, &args).await;
        match accepted {
            Some(session) if !(ok && text.contains(session)) => {
                wrong.push(format!("{what} ({args}) must complete with `{session}`:\n{text}"));
            }
            // Refused by the server, with an alert, not by the client's own settings.
            None if ok
                || !text.contains("SSL alert number")
                || CLIENT_SIDE.iter().any(|m| text.contains(m)) =>
            {
                wrong.push(format!("{what} ({args}) must be refused by the gateway:\n{text}"));
            }
            _ => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
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
        let tcp = within(STEP, "connecting", tokio::net::TcpStream::connect(gw.https))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut s = within(STEP, "the handshake", connector.connect(name, tcp))
            .await
            .unwrap();
        kinds.push(s.get_ref().1.handshake_kind());
        // Reading the answer also reads the session tickets sent after the handshake.
        let request = s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        within(STEP, "sending the request", request).await.unwrap();
        let mut buf = Vec::new();
        let _ = within(STEP, "the answer", s.read_to_end(&mut buf)).await;
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
    let mut s = within(STEP, "connecting", tokio::net::TcpStream::connect(gw.https))
        .await
        .unwrap();
    within(STEP, "sending", s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        .await
        .unwrap();
    drop(s);
    let metrics = format!("http://{}/metrics", gw.metrics);
    let api = client::plain();
    poll_until(Duration::from_secs(10), "the failure counter", || {
        let metrics = metrics.clone();
        let api = api.clone();
        async move {
            let text = api.get(&metrics).send().await.ok()?.text().await.ok()?;
            text.lines()
                .find(|l| l.starts_with("gateway_tls_handshake_failures_total "))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .filter(|n| *n >= 1.0)
        }
    })
    .await;
}
