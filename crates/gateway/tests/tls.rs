//! TLS: certificates by SNI, the default certificate, the self-signed first start,
//! certificate files replaced while serving (certbot renewals), HTTPS never lost to a reload
//! whatever the shape of `[tls]` / `[acme]`, the versions and cipher suites accepted and
//! refused, session resumption as configured, and client quirks kept out of the log.

mod harness;

use harness::config::{preamble, route, upstream_at};
use harness::gateway::{simple_config, with_echo};
use harness::{client, poll_until, upstream, within, Gateway};
use rustls::pki_types::ServerName;
use rustls::HandshakeKind;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// `openssl s_client` against `addr` with SNI `sni` and `args` (split on whitespace), with a
/// deadline of 30 s.
async fn s_client_output(openssl: &Path, addr: SocketAddr, sni: &str, args: &str) -> Output {
    let mut cmd = Command::new(openssl);
    cmd.arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-servername")
        .arg(sni)
        .args(args.split_whitespace());
    harness::run_cmd_async(cmd, Duration::from_secs(30)).await
}

/// [`s_client_output`]: whether the handshake completed, and everything the client printed.
async fn s_client(openssl: &Path, addr: SocketAddr, sni: &str, args: &str) -> (bool, String) {
    let out = s_client_output(openssl, addr, sni, args).await;
    (out.status.success(), harness::gateway::text(&out))
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
    for (version, sni) in [
        (&rustls::version::TLS12, "ec.test"),
        (&rustls::version::TLS13, "ec.test"),
        (&rustls::version::TLS12, "rsa.test"),
        (&rustls::version::TLS13, "rsa.test"),
    ] {
        let connector = client::connector(&[version], false);
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

/// Eight connections of one client, each with one request: how each handshake went.
async fn kinds(gw: &Gateway, version: &'static rustls::SupportedProtocolVersion) -> Vec<HandshakeKind> {
    let connector = client::connector(&[version], true);
    let mut kinds = Vec::new();
    for _ in 0..8 {
        let work = async {
            let tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut s = connector.connect(name, tcp).await.unwrap();
            let kind = s.get_ref().1.handshake_kind().expect("handshake done");
            // Reading the answer also reads the tickets sent after a TLS 1.3 handshake.
            s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            assert!(buf.starts_with(b"HTTP/1.1 200"));
            kind
        };
        kinds.push(within(STEP, "a connection", work).await);
    }
    kinds
}

/// TLS session resumption as configured: `[tls] session_cache` (sessions by ID, shared by
/// every thread) and `session_tickets` (stateless tickets, keys shared by every thread), and
/// the defaults, for TLS 1.2 and 1.3: every reconnection of one client resumes, whichever
/// thread's socket (`reuseport`, 2 threads) accepts it, unless both are off.
#[tokio::test]
async fn resumption_follows_session_cache_and_tickets() {
    let up = upstream::echo().await;
    for (settings, resumes) in [
        (None, true),
        (Some((20000, true)), true),
        (Some((0, true)), true),
        (Some((20000, false)), true),
        (Some((0, false)), false),
    ] {
        let extra = settings.map_or_else(String::new, |(cache, tickets)| {
            format!("[tls]\nsession_cache = {cache}\nsession_tickets = {tickets}\n")
        });
        let gw = Gateway::start(&simple_config(up.addr, &extra)).await;
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let k = kinds(&gw, version).await;
            assert_eq!(k[0], HandshakeKind::Full);
            let want = if resumes {
                HandshakeKind::Resumed
            } else {
                HandshakeKind::Full
            };
            assert!(
                k[1..].iter().all(|x| *x == want),
                "[tls] (session_cache, session_tickets) {settings:?}, {version:?}: {k:?}"
            );
        }
    }
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
    let connector = client::connector(rustls::DEFAULT_VERSIONS, true);
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_owned()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let work = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut s = connector
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

#[tokio::test]
async fn an_ip_address_as_sni_is_not_logged_per_connection() {
    let (_up, gw) = with_echo("").await;
    // Needed to send an IP address as SNI.
    let openssl = harness::require_tool("openssl", "openssl");
    for _ in 0..5 {
        let out = s_client_output(&openssl, gw.https, "127.0.0.1", "").await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("BEGIN CERTIFICATE") || text.contains("Server certificate"),
            "handshake: {text}"
        );
    }
    assert!(
        !gw.stderr().contains("Illegal SNI"),
        "client quirks stay at debug:\n{}",
        gw.stderr()
    );
}

/// Post-quantum key exchange: a client offering the hybrid X25519MLKEM768 first (rustls with
/// aws-lc-rs, as Chrome, Firefox and Safari do) negotiates it; a client offering only X25519
/// still connects with X25519. `gateway_tls_handshakes_total{version,group}` counts each,
/// and the JSON access log names version, cipher and group (nginx's `$ssl_protocol`,
/// `$ssl_cipher`, `$ssl_curve`).
///
/// To see it fail: install ring as the process provider in main.rs (no ML-KEM), or drop
/// patch 0020 (`SslDigest::kx_group` always `None`: group `none`, no `tls_group`).
#[tokio::test]
async fn hybrid_post_quantum_key_exchange_is_preferred_and_x25519_only_clients_connect() {
    use rustls::crypto::{aws_lc_rs, CryptoProvider};
    let up = upstream::echo().await;
    let cfg = format!(
        "\n{}[logging]\naccess_log = \"json\"\n{}{}",
        preamble("1s", ""),
        upstream_at("echo", up.addr),
        route("all", "/", "echo", "")
    );
    let gw = Gateway::start(&cfg).await;
    let pq = aws_lc_rs::default_provider().kx_groups;
    let x25519_only = vec![aws_lc_rs::kx_group::X25519];
    for (groups, want) in [(pq, "X25519MLKEM768"), (x25519_only, "X25519")] {
        let provider = CryptoProvider {
            kx_groups: groups,
            ..aws_lc_rs::default_provider()
        };
        let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(client::Capture::default()))
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
        let mut tls = within(
            Duration::from_secs(10),
            "the handshake",
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
                .connect(ServerName::try_from("localhost").unwrap(), tcp),
        )
        .await
        .unwrap_or_else(|e| panic!("{want}: {e}"));
        let group = tls.get_ref().1.negotiated_key_exchange_group().map(|g| g.name());
        assert_eq!(group.and_then(|g| g.as_str()), Some(want));
        tls.write_all(
            format!("GET /pq/{want} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        let _ = within(
            Duration::from_secs(10),
            "the answer",
            tls.read_to_end(&mut answer),
        )
        .await;
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    let s = harness::scrape::scrape(gw.metrics).await;
    for group in ["X25519MLKEM768", "X25519"] {
        let n = s.value(
            "gateway_tls_handshakes_total",
            &[("version", "TLSv1.3"), ("group", group)],
        );
        assert!(n >= 1.0, "{group}: {}", s.text);
    }
    // Every label pair the listener can produce is there from the start.
    assert_eq!(
        s.series("gateway_tls_handshakes_total", &[]).len(),
        12,
        "{}",
        s.text
    );
    let log = poll_until(Duration::from_secs(10), "both access lines", || async {
        let out = gw.stdout();
        (out.contains("\"/pq/X25519MLKEM768\"") && out.contains("\"/pq/X25519\"")).then_some(out)
    })
    .await;
    for (path, group) in [("/pq/X25519MLKEM768", "X25519MLKEM768"), ("/pq/X25519", "X25519")] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("\"{path}\"")))
            .unwrap_or_else(|| panic!("{path} in {log}"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["tls_version"], "TLSv1.3", "{line}");
        assert_eq!(v["tls_group"], group, "{line}");
        assert!(
            v["tls_cipher"]
                .as_str()
                .is_some_and(|c| c.starts_with("TLS_AES_") || c.starts_with("TLS_CHACHA20")),
            "{line}"
        );
    }
}
