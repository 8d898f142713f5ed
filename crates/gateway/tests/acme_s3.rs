//! Several gateways on one S3-compatible object storage (`storage = "s3://..."`, moto's
//! server on loopback, which enforces conditional writes), against Pebble: one order across
//! three instances, each with its own local copy; all three serve the certificate; Pebble's
//! HTTP-01 validation is answered by an instance that did not order (from the answer the
//! holder wrote to the bucket); the stored unit is one matching pair behind the `current`
//! pointer; the holder SIGKILLed mid-order is replaced; the storage stopped: every instance
//! keeps serving, retries and says so.

mod harness;

use harness::acme::{lines_with, wait_issued_for, Setup, NAMES};
use harness::s3::Moto;
use harness::scrape::scrape;
use harness::several::{
    holder, issued_on_all, one_order_served_by_all, relay, serving_and_reporting_a_storage_fault, LeaseAt,
};
use harness::{poll_until, Gateway};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const PREFIX: &str = "shared/acme";

/// Pebble's config with the storage in the bucket, each instance's copy in its own
/// directory, a short lease and poll.
fn s3_config(acme: &Setup, moto: &Moto) -> String {
    let local = acme.storage.path().display().to_string();
    let cfg = acme
        .config()
        .replace(
            &format!("http = \"127.0.0.1:{}\"", acme.pebble.http_port),
            "http = \"{HTTP}\"",
        )
        .replace(
            &format!("storage = \"{local}\""),
            &format!(
                "storage = \"s3://{}/{PREFIX}\"\nlocal_storage = \"{{DIR}}/certs\"\nlease_ttl = \"3s\"\npoll_interval = \"300ms\"",
                moto.bucket
            ),
        );
    assert!(cfg.contains("local_storage"), "{cfg}");
    cfg
}

async fn start(cfg: &str, moto: &Moto) -> Gateway {
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Gateway::start_with_env(cfg, &env).await
}

fn lease_at(moto: &Arc<Moto>) -> LeaseAt {
    LeaseAt::S3(moto.clone(), PREFIX.into())
}

fn orders(acme: &Setup) -> usize {
    acme.pebble.log().matches("Added order").count()
}

#[tokio::test]
async fn s3_three_gateways_order_once_and_a_non_holder_answers_from_the_bucket() {
    let moto = Arc::new(Moto::start().await);
    let acme = Setup::start(&[]).await;
    let cfg = s3_config(&acme, &moto);
    let (a, b, c) = tokio::join!(start(&cfg, &moto), start(&cfg, &moto), start(&cfg, &moto));
    let gws = [a, b, c];
    let http_by_pid: HashMap<i32, SocketAddr> = gws.iter().map(|g| (g.pid(), g.http)).collect();
    let relay = relay(acme.pebble.http_port, lease_at(&moto), http_by_pid).await;
    one_order_served_by_all(&acme, &gws, &relay).await;
    // The bucket holds one unit behind `current`: a key and a chain that match, the chain
    // the instances serve.
    let version = String::from_utf8(
        moto.get(&format!("{PREFIX}/main/current"))
            .await
            .expect("current"),
    )
    .unwrap();
    let chain = moto
        .get(&format!("{PREFIX}/main/{version}/fullchain.pem"))
        .await
        .expect("the chain");
    let key = moto
        .get(&format!("{PREFIX}/main/{version}/privkey.pem"))
        .await
        .expect("the key");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fullchain.pem"), &chain).unwrap();
    std::fs::write(dir.path().join("privkey.pem"), &key).unwrap();
    assert!(harness::acme::pair_matches(dir.path()), "the stored pair matches");
    let served = harness::client::tls(gws[0].https, NAMES[0]).await.1;
    assert_eq!(harness::acme::first_cert(dir.path()), served.to_vec());
    let holder_pid = holder(&lease_at(&moto)).await.expect("a holder");
    let mut held = 0.0;
    for gw in &gws {
        let value = scrape(gw.metrics)
            .await
            .value("gateway_acme_lease_held", &[("certificate", "main")]);
        assert_eq!(
            value == 1.0,
            gw.pid() == holder_pid,
            "instance {}: {value}",
            gw.pid()
        );
        held += value;
        let listing = harness::gateway::text(
            &harness::gateway::cli(gw, &["certs", "--config", gw.config.to_str().unwrap()]).await,
        );
        assert!(listing.contains("lease:    "), "{listing}");
    }
    assert_eq!(held, 1.0);
}

#[tokio::test]
async fn s3_the_lease_holder_killed_mid_order_is_replaced() {
    let moto = Arc::new(Moto::start().await);
    let acme = Setup::start(&[]).await;
    let cfg = s3_config(&acme, &moto);
    let (a, b) = tokio::join!(start(&cfg, &moto), start(&cfg, &moto));
    let mut gws = [a, b];
    let http_by_pid: HashMap<i32, SocketAddr> = gws.iter().map(|g| (g.pid(), g.http)).collect();
    let relay = relay(acme.pebble.http_port, lease_at(&moto), http_by_pid).await;
    relay.hold.store(true, Ordering::SeqCst);
    // As long as a whole issuance may take (`wait_issued_for`): with the suite's other ACME
    // tests running beside it on 2 cores, the order reached Pebble's validation after more
    // than 30 s once (CI).
    poll_until(
        Duration::from_secs(60),
        "Pebble validating the first order",
        || {
            let asked = relay.accepted.load(Ordering::SeqCst);
            async move { (asked >= 1).then_some(()) }
        },
    )
    .await;
    let first = holder(&lease_at(&moto)).await.expect("a holder");
    let victim = gws.iter().position(|g| g.pid() == first).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = gws[victim].take_child().map(|mut c| c.wait());
    relay.hold.store(false, Ordering::SeqCst);
    let survivor = &gws[1 - victim];
    wait_issued_for(survivor.https, &acme.pebble, &NAMES).await;
    assert_eq!(holder(&lease_at(&moto)).await, Some(survivor.pid()));
    assert!(orders(&acme) >= 2, "the survivor placed an order of its own");
}

#[tokio::test]
async fn s3_a_stopped_storage_keeps_every_instance_serving_and_reported() {
    let moto = Arc::new(Moto::start().await);
    let acme = Setup::start(&[]).await;
    let cfg = s3_config(&acme, &moto);
    let (a, b) = tokio::join!(start(&cfg, &moto), start(&cfg, &moto));
    let gws = [a, b];
    let http_by_pid: HashMap<i32, SocketAddr> = gws.iter().map(|g| (g.pid(), g.http)).collect();
    let _relay = relay(acme.pebble.http_port, lease_at(&moto), http_by_pid).await;
    let root = issued_on_all(&acme, &gws).await;
    moto.stop();
    serving_and_reporting_a_storage_fault(&gws, &root, Duration::from_secs(30)).await;
    assert_eq!(orders(&acme), 1, "nobody orders while the storage is away");
}

/// An "S3" that answers 200 to everything: it ignores `If-None-Match` and `If-Match`.
async fn lenient_s3() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 65536];
                let mut seen = Vec::new();
                loop {
                    let Ok(n) = s.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    // One answer per request head (bodies are a byte or two, sent with it).
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
                        let body_len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if seen.len() < end + 4 + body_len {
                            break;
                        }
                        seen.drain(..end + 4 + body_len);
                        let answer = "HTTP/1.1 200 OK\r\nETag: \"1\"\r\nContent-Length: 0\r\n\r\n";
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn s3_a_storage_that_ignores_conditional_writes_is_reported_and_never_ordered_through() {
    let s3 = lenient_s3().await;
    let cfg = r#"
[listen]
https = "{HTTPS}"
http = "{HTTP}"
metrics = "{METRICS}"
[acme]
directory = "https://127.0.0.1:1/directory"
storage = "s3://lenient/acme"
local_storage = "{DIR}/certs"
poll_interval = "200ms"
[[acme.certificates]]
name = "main"
names = ["a.example.com"]
[upstreams.echo]
address = "127.0.0.1:1"
[[routes]]
prefix = "/"
upstream = "echo"
"#;
    let endpoint = format!("http://{s3}");
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let gw = Gateway::start_with_env(cfg, &env).await;
    gw.wait_log(Duration::from_secs(20), "the probe's verdict", |l| {
        l.contains("does not enforce conditional writes")
    })
    .await;
    let listing = harness::gateway::text(
        &harness::gateway::cli(&gw, &["certs", "--config", gw.config.to_str().unwrap()]).await,
    );
    assert!(
        listing.contains("does not enforce conditional writes"),
        "{listing}"
    );
    assert!(
        lines_with(&gw.stderr(), &["ordering certificate"]).is_empty(),
        "{}",
        gw.stderr()
    );
}
