//! Shared by the several-instances tests (acme_shared.rs, acme_s3.rs): where the lease of a
//! certificate says its holder is, and a relay on Pebble's validation port that sends each
//! validation to an instance that does not hold the lease.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the lease lives.
#[derive(Clone)]
pub enum LeaseAt {
    /// The storage directory.
    Dir(PathBuf),
    /// The object `<prefix>/main/lease.json` of moto's bucket.
    S3(Arc<super::s3::Moto>, String),
}

/// The pid in an owner id (`host:pid:random`) of a lease record not released.
fn pid_of(record: &[u8]) -> Option<i32> {
    let record: serde_json::Value = serde_json::from_slice(record).ok()?;
    if record["expires"].as_u64()? == 0 {
        return None;
    }
    record["owner"].as_str()?.rsplit(':').nth(1)?.parse().ok()
}

/// The pid of the holder of the lease of `main` as stored.
pub fn holder_pid(storage: &Path) -> Option<i32> {
    let dir = storage.join("main/lease");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    pid_of(&std::fs::read(files.last()?).ok()?)
}

/// [`holder_pid`] wherever the lease is.
pub async fn holder(at: &LeaseAt) -> Option<i32> {
    match at {
        LeaseAt::Dir(d) => holder_pid(d),
        LeaseAt::S3(moto, prefix) => pid_of(&moto.get(&format!("{prefix}/main/lease.json")).await?),
    }
}

/// Where the relay sent each validation request: (lease holder's pid, pid answering).
pub type Relayed = Arc<Mutex<Vec<(i32, i32)>>>;

/// Pebble's validation port: each connection goes to the HTTP listener of an instance other
/// than the lease holder (the holder itself only when no other one accepts). While `hold`
/// is set, connections wait before being relayed (an order kept in the middle).
pub struct Relay {
    pub relayed: Relayed,
    pub hold: Arc<AtomicBool>,
    /// Connections accepted from Pebble (relayed or held).
    pub accepted: Arc<AtomicUsize>,
}

pub async fn relay(port: u16, at: LeaseAt, http_by_pid: HashMap<i32, SocketAddr>) -> Relay {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let relayed: Relayed = Arc::default();
    let hold = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (log, held, count) = (relayed.clone(), hold.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let Some(holder) = holder(&at).await else { continue };
            let mut candidates: Vec<(i32, SocketAddr)> = http_by_pid.iter().map(|(p, a)| (*p, *a)).collect();
            candidates.sort_by_key(|(p, _)| *p == holder);
            let (log, held) = (log.clone(), held.clone());
            tokio::spawn(async move {
                while held.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                for (pid, addr) in candidates {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(addr).await {
                        log.lock().unwrap().push((holder, pid));
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        return;
                    }
                }
            });
        }
    });
    Relay {
        relayed,
        hold,
        accepted,
    }
}

/// Every one of `gws` serves Pebble's certificate for [`super::acme::NAMES`], one order was
/// placed across them and one of them issued it, and every validation the relay saw was
/// answered by an instance that did not hold the lease. Returns Pebble's issuing root.
pub async fn one_order_served_by_all(
    acme: &super::acme::Setup,
    gws: &[super::Gateway],
    relay: &Relay,
) -> String {
    use super::acme::{lines_with, verified, NAMES};
    let root = issued_on_all(acme, gws).await;
    for gw in gws {
        for name in NAMES {
            if let Err(e) = verified(gw.https, name, &root).await {
                panic!("instance {} does not serve {name}: {e}", gw.pid());
            }
        }
    }
    let orders = acme.pebble.log().matches("Added order").count();
    assert_eq!(
        orders,
        1,
        "one order across the instances:\n{}",
        acme.pebble.log()
    );
    let logs: Vec<String> = gws.iter().map(|g| g.stderr()).collect();
    let issued: usize = logs
        .iter()
        .map(|l| lines_with(l, &["certificate issued and now served"]).len())
        .sum();
    assert_eq!(issued, 1, "{logs:#?}");
    let seen = relay.relayed.lock().unwrap().clone();
    assert!(!seen.is_empty(), "Pebble validated through the relay");
    assert!(seen.iter().all(|(holder, pid)| holder != pid), "{seen:?}");
    root
}

/// Pebble's certificate served by every one of `gws` (returns Pebble's issuing root).
pub async fn issued_on_all(acme: &super::acme::Setup, gws: &[super::Gateway]) -> String {
    let mut root = String::new();
    for gw in gws {
        root = super::acme::wait_issued_for(gw.https, &acme.pebble, &super::acme::NAMES).await;
    }
    root
}

/// After the storage went away: each of `gws` logs the lease error, counts storage errors
/// and still serves the certificate chaining to `root`, within `limit` for each step.
pub async fn serving_and_reporting_a_storage_fault(gws: &[super::Gateway], root: &str, limit: Duration) {
    use super::acme::{verified, NAMES};
    use super::scrape::scrape;
    for gw in gws {
        gw.wait_log(limit, "the lease error", |l| {
            l.contains("cannot read or write the certificate's lease")
        })
        .await;
        super::poll_until(limit, "storage errors counted", || async {
            let n = scrape(gw.metrics)
                .await
                .value("gateway_acme_storage_errors_total", &[("certificate", "main")]);
            (n >= 2.0).then_some(())
        })
        .await;
        for name in NAMES {
            if let Err(e) = verified(gw.https, name, root).await {
                panic!("instance {} stopped serving {name}: {e}", gw.pid());
            }
        }
    }
}
