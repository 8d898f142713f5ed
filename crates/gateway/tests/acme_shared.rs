//! Several gateways on one ACME storage directory (a shared volume), against Pebble: one
//! order per certificate across three instances, all three serve it within the poll
//! interval, and Pebble's HTTP-01 validation is answered by an instance that did not order
//! (a relay on Pebble's validation port sends each request to a non-holder of the lease);
//! the lease holder SIGKILLed in the middle of its order, another instance takes over and
//! the certificate is issued without a torn pair; a storage that becomes unreachable: every
//! instance keeps serving, retries and says so.

mod harness;

use harness::acme::{lines_with, pair_matches, wait_issued_for, Setup, NAMES};
use harness::scrape::scrape;
use harness::several::{
    holder_pid, issued_on_all, one_order_served_by_all, relay, serving_and_reporting_a_storage_fault, LeaseAt,
};
use harness::{poll_until, Gateway};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The shared config with its own HTTP port per instance, a short lease and poll.
fn shared_config(acme: &Setup) -> String {
    let cfg = acme
        .config()
        .replace(
            &format!("http = \"127.0.0.1:{}\"", acme.pebble.http_port),
            "http = \"{HTTP}\"",
        )
        .replace(
            "retry_max = \"2s\"\n",
            "retry_max = \"2s\"\nlease_ttl = \"3s\"\npoll_interval = \"300ms\"\n",
        );
    assert!(cfg.contains("lease_ttl"), "{cfg}");
    cfg
}

fn orders(acme: &Setup) -> usize {
    acme.pebble.log().matches("Added order").count()
}

#[tokio::test]
async fn pebble_three_gateways_order_once_and_a_non_holder_answers_the_validation() {
    let acme = Setup::start(&[]).await;
    let cfg = shared_config(&acme);
    let (a, b, c) = tokio::join!(Gateway::start(&cfg), Gateway::start(&cfg), Gateway::start(&cfg));
    let gws = [a, b, c];
    let http_by_pid: HashMap<i32, SocketAddr> = gws.iter().map(|g| (g.pid(), g.http)).collect();
    let relayed = relay(
        acme.pebble.http_port,
        LeaseAt::Dir(acme.storage.path().to_owned()),
        http_by_pid,
    )
    .await;
    // Every instance serves the issued chain (the non-holders within the poll interval).
    one_order_served_by_all(&acme, &gws, &relayed).await;
    // The holder is visible: `gateway certs` on each instance, and the gauge on one.
    let holder = holder_pid(acme.storage.path()).expect("the holder keeps its lease");
    let mut held = 0.0;
    for gw in &gws {
        let listing = harness::gateway::text(
            &harness::gateway::cli(gw, &["certs", "--config", gw.config.to_str().unwrap()]).await,
        );
        assert!(
            listing.contains(&format!(":{holder}:")) && listing.contains("lease:    held by"),
            "{listing}"
        );
        let value = scrape(gw.metrics)
            .await
            .value("gateway_acme_lease_held", &[("certificate", "main")]);
        assert_eq!(value == 1.0, gw.pid() == holder, "instance {}: {value}", gw.pid());
        held += value;
    }
    assert_eq!(held, 1.0);
}

#[tokio::test]
async fn pebble_the_lease_holder_killed_mid_order_is_replaced_and_the_certificate_issued() {
    let acme = Setup::start(&[]).await;
    let cfg = shared_config(&acme);
    // Two instance names (GATEWAY_INSTANCE), as on two machines: the survivor cannot see
    // that the holder's process is gone and must wait for the lease to lapse.
    let (a, b) = tokio::join!(
        Gateway::start_with_env(&cfg, &[("GATEWAY_INSTANCE", "node-a")]),
        Gateway::start_with_env(&cfg, &[("GATEWAY_INSTANCE", "node-b")])
    );
    let mut gws = [a, b];
    let http_by_pid: HashMap<i32, SocketAddr> = gws.iter().map(|g| (g.pid(), g.http)).collect();
    let storage = acme.storage.path().to_owned();
    let relay = relay(acme.pebble.http_port, LeaseAt::Dir(storage.clone()), http_by_pid).await;
    // Pebble's validation request is held at the relay: the holder's order is pending when
    // the holder is killed.
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
    let first = holder_pid(&storage).expect("a holder");
    let victim = gws.iter().position(|g| g.pid() == first).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = std::time::Instant::now();
    let _ = gws[victim].take_child().map(|mut c| c.wait());
    assert!(
        lines_with(&gws[victim].stderr(), &["certificate issued and now served"]).is_empty(),
        "killed before its order finished"
    );
    relay.hold.store(false, Ordering::SeqCst);
    let survivor = &gws[1 - victim];
    survivor
        .wait_log(Duration::from_secs(20), "the survivor taking the lease", |l| {
            l.contains("took the certificate's lease")
        })
        .await;
    // The lease (3 s, renewed every second) lapsed before it was taken over.
    let waited = killed.elapsed();
    assert!(
        waited >= Duration::from_millis(1800),
        "taken over after {waited:?}, before it lapsed"
    );
    let listing = harness::gateway::text(
        &harness::gateway::cli(
            survivor,
            &["certs", "--config", survivor.config.to_str().unwrap()],
        )
        .await,
    );
    assert!(listing.contains("lease:    held by node-"), "{listing}");
    wait_issued_for(survivor.https, &acme.pebble, &NAMES).await;
    assert_eq!(
        holder_pid(&storage),
        Some(survivor.pid()),
        "the survivor took the lease"
    );
    assert!(
        !lines_with(&survivor.stderr(), &["took the certificate's lease"]).is_empty(),
        "{}",
        survivor.stderr()
    );
    // One matching pair on disk, the one served; no debris of the killed order.
    assert!(pair_matches(&storage.join("main")));
    assert!(orders(&acme) >= 2, "the survivor placed an order of its own");
}

#[tokio::test]
async fn pebble_an_unreachable_storage_keeps_every_instance_serving_and_reported() {
    let acme = Setup::start(&[]).await;
    let cfg = shared_config(&acme);
    let (a, b) = tokio::join!(Gateway::start(&cfg), Gateway::start(&cfg));
    let gws = [a, b];
    let http_by_pid: HashMap<i32, SocketAddr> = gws.iter().map(|g| (g.pid(), g.http)).collect();
    let storage = acme.storage.path().to_owned();
    let _relayed = relay(acme.pebble.http_port, LeaseAt::Dir(storage.clone()), http_by_pid).await;
    let root = issued_on_all(&acme, &gws).await;
    // The volume goes away: a file where the certificate's directory was.
    let moved = storage.with_extension("moved");
    std::fs::rename(storage.join("main"), &moved).unwrap();
    std::fs::write(storage.join("main"), "not a directory").unwrap();
    serving_and_reporting_a_storage_fault(&gws, &root, Duration::from_secs(20)).await;
    let _ = std::fs::remove_file(storage.join("main"));
    let _ = std::fs::remove_dir_all(&moved);
}
