//! ACME beyond HTTP-01 against Pebble on loopback: TLS-ALPN-01 answered on the HTTPS
//! listener (RFC 8737) with the HTTP listener off, an IP-address certificate (RFC 8738),
//! ACME profiles (draft-ietf-acme-profiles: the profile sent in newOrder, an unknown one
//! refused with the list the CA offers) and a 6-day certificate renewed on its own schedule.
//! Debian's Pebble predates profiles: a recording proxy (`harness/profiles_proxy.rs`) adds
//! them to its directory and records each newOrder.

mod harness;

use harness::acme::{log_line_with, verified, wait_issued, wait_issued_for, Setup, NAMES};
use harness::profiles_proxy::ProfilesProxy;
use harness::{gateway::cli, Gateway};
use std::time::Duration;

fn names_line() -> String {
    format!("names = [\"{}\", \"{}\"]", NAMES[0], NAMES[1])
}

/// TLS-ALPN-01 with no HTTP listener at all: Pebble connects to the HTTPS port offering
/// only `acme-tls/1`, gets the challenge certificate, and the real one is then served; a
/// browser-like client never sees a challenge certificate.
///
/// To see it fail: drop `acme-tls/1` from the listener's ALPN list in server.rs (rustls
/// refuses the validation's handshake), or skip `publish_alpn` in order.rs.
#[tokio::test]
async fn tls_alpn_01_is_answered_on_the_https_listener_with_http_off() {
    let mut s = Setup::down().await;
    let cfg = s
        .config()
        .replace(
            &names_line(),
            &format!("{}\nchallenge = \"tls-alpn-01\"", names_line()),
        )
        .replace(
            &format!("http = \"127.0.0.1:{}\"", s.pebble.http_port),
            "http = \"off\"",
        );
    assert!(
        cfg.contains("tls-alpn-01") && cfg.contains("http = \"off\""),
        "{cfg}"
    );
    let gw = Gateway::start(&cfg).await;
    s.pebble.set("tlsPort", serde_json::json!(gw.https.port())).await;
    let root = wait_issued(&gw, &s.pebble).await;
    // Ordinary clients (ALPN h2 / http/1.1) get the issued certificate.
    verified(gw.https, NAMES[0], &root)
        .await
        .expect("the issued certificate");
    let certs = cli(&gw, &["certs", "--config", gw.config.to_str().unwrap()]).await;
    assert!(String::from_utf8_lossy(&certs.stdout).contains("challenge: tls-alpn-01"));
}

/// An IP address in `names` is ordered as an `ip` identifier (validated over HTTP-01 at
/// that address) and the certificate, with the address in its subjectAltName, is served
/// to clients that connect by IP (no SNI).
#[tokio::test]
async fn an_ip_address_certificate_is_ordered_and_served_without_sni() {
    let s = Setup::start(&[]).await;
    let cfg = s.config().replace(&names_line(), "names = [\"127.0.0.1\"]");
    let gw = Gateway::start(&cfg).await;
    wait_issued_for(gw.https, &s.pebble, &["127.0.0.1"]).await;
}

fn proxied(s: &Setup, proxy: &ProfilesProxy, profile: &str) -> String {
    s.config()
        .replace(&s.pebble.directory(), &proxy.directory())
        .replace(
            &names_line(),
            &format!("{}\nprofile = \"{profile}\"", names_line()),
        )
}

/// `profile = "shortlived"`, offered by the directory: newOrder carries it; with Pebble
/// issuing 6-day certificates, the next renewal is planned a third of the lifetime before
/// the end (about 4 days after issuance), and `gateway certs` shows the profile.
#[tokio::test]
async fn a_profile_is_sent_in_new_order_and_a_6_day_certificate_renews_after_4_days() {
    let mut s = Setup::start(&[]).await;
    s.pebble
        .set("certificateValidityPeriod", serde_json::json!(6 * 86_400))
        .await;
    let proxy = ProfilesProxy::start(&s.pebble, &[("classic", "90 days"), ("shortlived", "6 days")]).await;
    let gw = Gateway::start(&proxied(&s, &proxy, "shortlived")).await;
    wait_issued(&gw, &s.pebble).await;
    assert_eq!(proxy.orders(), vec![Some("shortlived".to_owned())]);
    let text = harness::poll_until(
        Duration::from_secs(10),
        "a renewal time in gateway certs",
        || async {
            let out = cli(&gw, &["certs", "--config", gw.config.to_str().unwrap()]).await;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines()
                .any(|l| l.trim_start().starts_with("renewal:") && l.contains('T'))
                .then_some(text)
        },
    )
    .await;
    assert!(text.contains("profile:  shortlived"), "{text}");
    let renewal = text
        .lines()
        .find(|l| l.trim_start().starts_with("renewal:"))
        .unwrap();
    let at = renewal.split_whitespace().nth(1).unwrap();
    let at = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap();
    let after = at - time::OffsetDateTime::now_utc();
    assert!(
        after > time::Duration::hours(90) && after < time::Duration::hours(97),
        "a 6-day certificate renews 2 days (minus up to 2.9 h of jitter) before its end: {renewal}"
    );
}

/// A profile the directory does not offer: no order is placed, and the error names the
/// profile and those the CA offers; the placeholder stays served.
#[tokio::test]
async fn an_unknown_profile_is_refused_with_the_offered_ones() {
    let s = Setup::start(&[]).await;
    let proxy = ProfilesProxy::start(&s.pebble, &[("classic", "90 days"), ("tlsserver", "TLS server")]).await;
    let gw = Gateway::start(&proxied(&s, &proxy, "nonesuch")).await;
    let line = log_line_with(&gw, Duration::from_secs(30), &["offers no profile `nonesuch`"]).await;
    assert!(line.contains("classic") && line.contains("tlsserver"), "{line}");
    assert!(
        proxy.orders().is_empty(),
        "no order was placed: {:?}",
        proxy.orders()
    );
}
