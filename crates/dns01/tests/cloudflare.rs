//! The `cloudflare` provider against the fake Cloudflare API v4 of `support/`: records
//! appear and disappear, values at one name are kept apart, `present` and `cleanup` may be
//! repeated, and refusals are errors that carry Cloudflare's code but never the token.

#[path = "support/cloudflare_server.rs"]
mod cloudflare_server;

use cloudflare_server::{Change, CloudflareServer, BASE, ZONE_ID};
use gateway_dns01::cloudflare::Cloudflare;
use gateway_dns01::{Dns01Error, Provider, Record};
use std::sync::{Arc, Mutex};

const TOKEN: &str = "Sn3lZJTBX6kkg7OdcBUAxOO963GEIyGQqnFTOFYY";
const ZONE: &str = "example.com";
const FQDN: &str = "_acme-challenge.example.com";
/// Two DNS-01 values (base64url of a SHA-256, 43 characters): apex and wildcard of one order.
const APEX: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";
const WILDCARD: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";

fn record(fqdn: &str, zone: &str, value: &str) -> Record {
    Record {
        fqdn: fqdn.into(),
        zone: zone.into(),
        value: value.into(),
    }
}

struct Fixture {
    server: CloudflareServer,
    provider: Cloudflare,
    changes: Arc<Mutex<Vec<Change>>>,
}

impl Fixture {
    /// The fake API for `TOKEN` and `ZONE`, and a provider using `token` on it.
    async fn new(token: &str) -> Fixture {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let changes: Arc<Mutex<Vec<Change>>> = Arc::default();
        let seen = changes.clone();
        let on_change = Arc::new(move |c: Change| seen.lock().unwrap().push(c));
        let server = CloudflareServer::start(TOKEN, ZONE, on_change).await;
        let config = gateway_config::Cloudflare {
            api_token: gateway_config::Secret(token.into()),
            endpoint: server.url.clone(),
        };
        let provider = Cloudflare::new(&config).expect("a provider for the fake API");
        Fixture {
            server,
            provider,
            changes,
        }
    }

    fn changes(&self) -> Vec<Change> {
        self.changes.lock().unwrap().clone()
    }

    /// How many requests started with `prefix` (`POST /zones/...`, below `/client/v4`).
    fn count(&self, prefix: &str) -> usize {
        let (method, path) = prefix.split_once(' ').unwrap();
        let full = format!("{method} {BASE}{path}");
        self.server
            .requests()
            .iter()
            .filter(|r| r.starts_with(&full))
            .count()
    }
}

fn pair(name: &str, value: &str) -> (String, String) {
    (name.to_string(), value.to_string())
}

#[tokio::test]
async fn present_adds_a_quoted_txt_record_and_cleanup_removes_it() {
    let f = Fixture::new(TOKEN).await;
    let r = record(FQDN, ZONE, APEX);
    f.provider.present(&r).await.unwrap();
    assert_eq!(f.server.records(), vec![pair(FQDN, APEX)]);
    // The TXT content is one quoted character string, as the API reference asks.
    assert_eq!(f.server.contents(), vec![pair(FQDN, &format!("\"{APEX}\""))]);
    let added = Change::Added {
        name: FQDN.into(),
        content: APEX.into(),
    };
    assert_eq!(f.changes(), vec![added.clone()]);
    let requests = f.server.requests();
    let dns_records = format!("{BASE}/zones/{ZONE_ID}/dns_records");
    assert_eq!(
        requests,
        vec![
            format!("GET {BASE}/zones?name=example.com"),
            format!("GET {dns_records}?type=TXT&name.exact=_acme-challenge.example.com&per_page=100"),
            format!("POST {dns_records}"),
        ]
    );

    f.provider.cleanup(&r).await.unwrap();
    assert!(f.server.records().is_empty(), "{:?}", f.server.records());
    let deleted = Change::Deleted {
        name: FQDN.into(),
        content: APEX.into(),
    };
    assert_eq!(f.changes(), vec![added, deleted]);
    assert_eq!(f.count("DELETE /zones/"), 1);
    // The zone id was looked up once.
    assert_eq!(f.count("GET /zones?"), 1);
}

#[tokio::test]
async fn two_values_at_one_name_are_kept_apart() {
    let f = Fixture::new(TOKEN).await;
    let (apex, wildcard) = (record(FQDN, ZONE, APEX), record(FQDN, ZONE, WILDCARD));
    f.provider.present(&apex).await.unwrap();
    f.provider.present(&wildcard).await.unwrap();
    assert_eq!(f.server.records(), vec![pair(FQDN, APEX), pair(FQDN, WILDCARD)]);

    f.provider.cleanup(&apex).await.unwrap();
    assert_eq!(f.server.records(), vec![pair(FQDN, WILDCARD)]);
    f.provider.cleanup(&wildcard).await.unwrap();
    assert!(f.server.records().is_empty(), "{:?}", f.server.records());
}

#[tokio::test]
async fn present_and_cleanup_may_be_repeated() {
    let f = Fixture::new(TOKEN).await;
    let r = record(FQDN, ZONE, APEX);
    f.provider.present(&r).await.unwrap();
    f.provider.present(&r).await.unwrap();
    assert_eq!(f.server.records(), vec![pair(FQDN, APEX)]);
    assert_eq!(f.count("POST /zones/"), 1, "{:?}", f.server.requests());

    f.provider.cleanup(&r).await.unwrap();
    f.provider.cleanup(&r).await.unwrap();
    assert!(f.server.records().is_empty(), "{:?}", f.server.records());
    assert_eq!(f.count("DELETE /zones/"), 1, "{:?}", f.server.requests());
    assert_eq!(f.changes().len(), 2);
}

#[tokio::test]
async fn only_the_exact_value_at_the_exact_name_is_touched() {
    let f = Fixture::new(TOKEN).await;
    let www = "_acme-challenge.www.example.com";
    // Made elsewhere: the same value at another name, another value differing only in
    // case, and an unquoted record of the value (written before Cloudflare asked for quotes).
    f.server.insert(www, &format!("\"{APEX}\""));
    f.server
        .insert(FQDN, &format!("\"{}\"", APEX.to_ascii_lowercase()));
    f.server.insert(FQDN, APEX);
    let r = record(FQDN, ZONE, APEX);
    f.provider.present(&r).await.unwrap();
    assert_eq!(
        f.count("POST /zones/"),
        0,
        "the unquoted record already holds the value"
    );

    f.provider.cleanup(&r).await.unwrap();
    let lower = APEX.to_ascii_lowercase();
    assert_eq!(f.server.records(), vec![pair(www, APEX), pair(FQDN, &lower)]);
    assert_eq!(f.count("DELETE /zones/"), 1);
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_cloudflare_s_code_and_not_shown() {
    let wrong = "wrong-token-0123456789abcdefghijklmnopqrs";
    let f = Fixture::new(wrong).await;
    let e = f.provider.present(&record(FQDN, ZONE, APEX)).await.unwrap_err();
    match &e {
        Dns01Error::Api {
            provider,
            status,
            code,
            message,
            ..
        } => {
            assert_eq!((*provider, *status), ("cloudflare", 403));
            assert_eq!(
                (code.as_str(), message.as_str()),
                ("10000", "Authentication error")
            );
        }
        other => panic!("{other:?}"),
    }
    for shown in [e.to_string(), format!("{e:?}"), format!("{:?}", f.provider)] {
        assert!(!shown.contains(wrong) && !shown.contains(TOKEN), "{shown}");
    }
    assert!(f.server.records().is_empty(), "{:?}", f.server.records());
    let e = f.provider.cleanup(&record(FQDN, ZONE, APEX)).await.unwrap_err();
    assert!(matches!(e, Dns01Error::Api { status: 403, .. }), "{e:?}");
}

#[tokio::test]
async fn a_zone_the_token_does_not_see_is_no_zone() {
    let f = Fixture::new(TOKEN).await;
    let r = record("_acme-challenge.example.org", "example.org", APEX);
    match f.provider.present(&r).await {
        Err(Dns01Error::NoZone { name, .. }) => assert_eq!(name, "example.org"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        f.provider.cleanup(&r).await,
        Err(Dns01Error::NoZone { .. })
    ));
    assert_eq!(
        f.server.requests(),
        vec![format!("GET {BASE}/zones?name=example.org"); 2]
    );
    assert!(f.changes().is_empty());
}
