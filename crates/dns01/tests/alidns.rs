//! The `alidns` provider against the fake Alibaba Cloud DNS API of
//! `support/alidns_server.rs`, which checks every request's V3 signature with its own
//! implementation of the documented algorithm.

#[path = "support/alidns_server.rs"]
mod alidns_server;

use alidns_server::{AlidnsServer, Change};
use gateway_dns01::alidns::Alidns;
use gateway_dns01::{Dns01Error, Provider, Record};
use std::sync::{Arc, Mutex};

const KEY_ID: &str = "LTAI5tFakeAccessKeyId";
const SECRET: &str = "fake-secret-that-must-never-be-shown";
/// DNS-01 values: base64url(SHA-256(...)), 43 characters.
const V1: &str = "dpLDrTVAu4A8Ags67mbNiIcSMjTqDG5xQ8Ct1z_0Me0";
const V2: &str = "P8TM_nRYcOLA2Z9x8w_wZWyN7dQcwdfT03aw2-aF4vM";

struct Fixture {
    server: AlidnsServer,
    changes: Arc<Mutex<Vec<Change>>>,
}

async fn fixture() -> Fixture {
    let changes: Arc<Mutex<Vec<Change>>> = Arc::new(Mutex::new(Vec::new()));
    let seen = changes.clone();
    let on_change: Arc<dyn Fn(Change) + Send + Sync> =
        Arc::new(move |c: Change| seen.lock().unwrap().push(c));
    let server = alidns_server::start(KEY_ID, SECRET, on_change).await;
    Fixture { server, changes }
}

fn provider(server: &AlidnsServer, key_id: &str, secret: &str) -> Alidns {
    let c = gateway_config::Alidns {
        access_key_id: key_id.to_owned(),
        access_key_secret: gateway_config::Secret(secret.to_owned()),
        endpoint: server.url.clone(),
    };
    Alidns::new(&c).expect("the provider")
}

fn record(fqdn: &str, value: &str) -> Record {
    Record {
        fqdn: fqdn.to_owned(),
        zone: "example.com".to_owned(),
        value: value.to_owned(),
    }
}

fn rec(rr: &str, value: &str) -> (String, String, String) {
    ("example.com".to_owned(), rr.to_owned(), value.to_owned())
}

fn added(rr: &str, value: &str) -> Change {
    Change::Added {
        domain: "example.com".into(),
        rr: rr.into(),
        value: value.into(),
    }
}

fn deleted(rr: &str, value: &str) -> Change {
    Change::Deleted {
        domain: "example.com".into(),
        rr: rr.into(),
        value: value.into(),
    }
}

fn count(server: &AlidnsServer, action: &str) -> usize {
    server.requests().iter().filter(|a| *a == action).count()
}

#[tokio::test]
async fn present_then_cleanup_adds_and_removes_exactly_that_value() {
    let f = fixture().await;
    let p = provider(&f.server, KEY_ID, SECRET);
    assert_eq!(p.kind(), "alidns");
    // A neighbour that the fuzzy RRKeyWord `_acme-challenge` also finds, with the same value.
    f.server.insert("example.com", "_acme-challenge.www", "TXT", V1);
    // The apex and the wildcard of one order share the name.
    let apex = record("_acme-challenge.example.com", V1);
    let wildcard = record("_acme-challenge.example.com", V2);

    p.present(&apex).await.expect("present V1");
    p.present(&wildcard).await.expect("present V2");
    let both = vec![
        rec("_acme-challenge.www", V1),
        rec("_acme-challenge", V1),
        rec("_acme-challenge", V2),
    ];
    assert_eq!(f.server.records(), both);
    assert_eq!(
        *f.changes.lock().unwrap(),
        vec![added("_acme-challenge", V1), added("_acme-challenge", V2)]
    );

    p.cleanup(&apex).await.expect("cleanup V1");
    assert_eq!(
        f.server.records(),
        vec![rec("_acme-challenge.www", V1), rec("_acme-challenge", V2)]
    );
    p.cleanup(&wildcard).await.expect("cleanup V2");
    assert_eq!(f.server.records(), vec![rec("_acme-challenge.www", V1)]);
    assert_eq!(
        f.changes.lock().unwrap()[2..],
        [deleted("_acme-challenge", V1), deleted("_acme-challenge", V2)]
    );
    let describe_then = |second: &str| vec!["DescribeDomainRecords".to_owned(), second.to_owned()];
    let expected: Vec<String> = [
        describe_then("AddDomainRecord"),
        describe_then("AddDomainRecord"),
        describe_then("DeleteDomainRecord"),
        describe_then("DeleteDomainRecord"),
    ]
    .concat();
    assert_eq!(f.server.requests(), expected);
}

#[tokio::test]
async fn records_below_the_zone_apex_and_at_it_use_their_relative_name() {
    let f = fixture().await;
    let p = provider(&f.server, KEY_ID, SECRET);
    p.present(&record("_acme-challenge.www.example.com", V1))
        .await
        .expect("present www");
    p.present(&record("example.com", V2))
        .await
        .expect("present at the apex");
    assert_eq!(
        f.server.records(),
        vec![rec("_acme-challenge.www", V1), rec("@", V2)]
    );
}

#[tokio::test]
async fn present_twice_and_cleanup_twice_are_idempotent() {
    let f = fixture().await;
    let p = provider(&f.server, KEY_ID, SECRET);
    let r = record("_acme-challenge.example.com", V1);
    p.present(&r).await.expect("first present");
    p.present(&r).await.expect("second present");
    assert_eq!(f.server.records(), vec![rec("_acme-challenge", V1)]);
    assert_eq!(count(&f.server, "AddDomainRecord"), 1);
    p.cleanup(&r).await.expect("first cleanup");
    p.cleanup(&r)
        .await
        .expect("second cleanup: nothing left is success");
    assert!(f.server.records().is_empty());
    assert_eq!(count(&f.server, "DeleteDomainRecord"), 1);
    assert_eq!(f.changes.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_duplicate_answer_to_add_counts_as_present() {
    let f = fixture().await;
    let p = provider(&f.server, KEY_ID, SECRET);
    f.server
        .fail_action("AddDomainRecord", "DomainRecordDuplicate", 400);
    p.present(&record("_acme-challenge.example.com", V1))
        .await
        .expect("DomainRecordDuplicate is success");
    assert!(f.server.records().is_empty());
}

#[tokio::test]
async fn cleanup_pages_through_every_record_the_keywords_find() {
    let f = fixture().await;
    let p = provider(&f.server, KEY_ID, SECRET);
    let target = record("_acme-challenge.example.com", V1);
    p.present(&target).await.expect("present");
    p.present(&record("_acme-challenge.example.com", V2))
        .await
        .expect("present V2");
    // Newer records that the keywords (`%_acme-challenge%`, `%V1%`) find too.
    f.server.insert("example.com", "_acme-challenge.a", "TXT", V1);
    f.server.insert("example.com", "_acme-challenge.b", "TXT", V1);
    // One record a page, newest first: the target is on page 3 of 3.
    f.server.cap_page_size(1);
    let before = count(&f.server, "DescribeDomainRecords");
    p.cleanup(&target).await.expect("cleanup");
    let left = vec![
        rec("_acme-challenge", V2),
        rec("_acme-challenge.a", V1),
        rec("_acme-challenge.b", V1),
    ];
    assert_eq!(f.server.records(), left);
    assert_eq!(count(&f.server, "DescribeDomainRecords") - before, 3);
    // Present looks before it adds: V1 at `_acme-challenge.b` is there already.
    p.present(&record("_acme-challenge.b.example.com", V1))
        .await
        .expect("present, already there");
    assert_eq!(count(&f.server, "AddDomainRecord"), 2);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_signature_does_not_match() {
    let f = fixture().await;
    let wrong = "not-the-secret-either";
    let p = provider(&f.server, KEY_ID, wrong);
    let err = p
        .present(&record("_acme-challenge.example.com", V1))
        .await
        .expect_err("a bad signature");
    match &err {
        Dns01Error::Api {
            provider,
            action,
            status,
            code,
            ..
        } => {
            assert_eq!(
                (*provider, action.as_str(), *status),
                ("alidns", "DescribeDomainRecords", 400)
            );
            assert_eq!(code, "SignatureDoesNotMatch");
        }
        other => panic!("expected Dns01Error::Api, got {other:?}"),
    }
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(wrong) && !shown.contains(SECRET), "{shown}");
    assert!(f.server.records().is_empty());
}

#[tokio::test]
async fn an_unknown_access_key_is_refused() {
    let f = fixture().await;
    let p = provider(&f.server, "LTAI5tSomebodyElse", SECRET);
    let err = p
        .cleanup(&record("_acme-challenge.example.com", V1))
        .await
        .expect_err("unknown key");
    match err {
        Dns01Error::Api { status, code, .. } => {
            assert_eq!((status, code.as_str()), (404, "InvalidAccessKeyId.NotFound"));
        }
        other => panic!("expected Dns01Error::Api, got {other:?}"),
    }
}

#[tokio::test]
async fn server_errors_carry_the_action_status_and_code() {
    let f = fixture().await;
    let p = provider(&f.server, KEY_ID, SECRET);
    f.server.fail_action("AddDomainRecord", "InternalError", 500);
    let err = p
        .present(&record("_acme-challenge.example.com", V1))
        .await
        .expect_err("HTTP 500");
    match err {
        Dns01Error::Api {
            action,
            status,
            code,
            message,
            ..
        } => {
            assert_eq!(
                (action.as_str(), status, code.as_str()),
                ("AddDomainRecord", 500, "InternalError")
            );
            assert!(!message.is_empty());
        }
        other => panic!("expected Dns01Error::Api, got {other:?}"),
    }
    f.server.fail_next("Throttling", 400);
    let err = p
        .cleanup(&record("_acme-challenge.example.com", V1))
        .await
        .expect_err("throttled");
    assert!(
        matches!(err, Dns01Error::Api { ref code, .. } if code == "Throttling"),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_an_http_error_and_debug_hides_the_secret() {
    let f = fixture().await;
    let p = provider(&f.server, KEY_ID, SECRET);
    assert!(!format!("{p:?}").contains(SECRET));
    drop(f);
    let err = p
        .present(&record("_acme-challenge.example.com", V1))
        .await
        .expect_err("no server");
    assert!(
        matches!(
            err,
            Dns01Error::Http {
                provider: "alidns",
                ..
            }
        ),
        "{err:?}"
    );
}
