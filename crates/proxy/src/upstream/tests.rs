//! The group's choices without a network: members from IP literals, no probes.

use super::*;
use gateway_config::{HashKey, NextUpstream, Timeouts, UpstreamServer};

fn upstream(servers: &[(&str, u32, bool)], balance: Balance) -> Upstream {
    Upstream {
        name: "api".into(),
        servers: servers
            .iter()
            .map(|&(a, weight, backup)| {
                let (host, port) = a.rsplit_once(':').unwrap();
                UpstreamServer {
                    host: host.into(),
                    port: port.parse().unwrap(),
                    weight,
                    backup,
                }
            })
            .collect(),
        balance,
        max_fails: 2,
        fail_timeout: Duration::from_secs(10),
        health_check: None,
        next_upstream: NextUpstream::default(),
        next_upstream_tries: None,
        next_upstream_timeout: Duration::ZERO,
        keepalive: 8,
        proxy_protocol: None,
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
            write: Duration::from_secs(1),
            idle: Duration::from_secs(1),
        },
    }
}

fn group(u: Upstream) -> (Group, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let g = Group::new(u, Metrics::global());
    let dns = Dns::new(Duration::from_secs(30), &["127.0.0.1:9".parse().unwrap()]);
    rt.block_on(g.refresh(&dns, false));
    (g, rt)
}

fn pick(g: &Group, key: &[u8], tried: &[SocketAddr]) -> Option<SocketAddr> {
    g.select(key, tried).map(|a| a.0.addr)
}

#[test]
fn weighted_round_robin_follows_the_weights() {
    let (g, _rt) = group(upstream(
        &[
            ("10.0.0.1:80", 1, false),
            ("10.0.0.2:80", 1, false),
            ("10.0.0.3:80", 2, false),
        ],
        Balance::RoundRobin,
    ));
    let mut counts: HashMap<SocketAddr, u32> = HashMap::new();
    for _ in 0..400 {
        *counts.entry(pick(&g, b"", &[]).unwrap()).or_default() += 1;
    }
    assert_eq!(counts[&"10.0.0.1:80".parse().unwrap()], 100);
    assert_eq!(counts[&"10.0.0.3:80".parse().unwrap()], 200);
}

#[test]
fn max_fails_take_a_server_out_and_backups_wait_for_every_primary() {
    let (g, _rt) = group(upstream(
        &[
            ("10.0.0.1:80", 1, false),
            ("10.0.0.2:80", 1, false),
            ("10.0.0.9:80", 1, true),
        ],
        Balance::RoundRobin,
    ));
    let members = g.members();
    let (a, b) = (&members[0], &members[1]);
    assert!(members[2].backup);
    // One failure of two allowed: still in.
    g.failed(a);
    assert!(g.available(a, false));
    g.failed(a);
    assert!(!g.available(a, false), "out after max_fails = 2");
    for _ in 0..10 {
        assert_eq!(pick(&g, b"", &[]), Some(b.addr), "only the other primary");
    }
    g.failed(b);
    g.failed(b);
    assert_eq!(
        pick(&g, b"", &[]),
        Some("10.0.0.9:80".parse().unwrap()),
        "the backup, now"
    );
    assert_eq!(pick(&g, b"", &["10.0.0.9:80".parse().unwrap()]), None);
    assert!(!g.has_another(&["10.0.0.9:80".parse().unwrap()]));
}

#[test]
fn a_lone_server_is_never_taken_out_by_max_fails() {
    let (g, _rt) = group(upstream(&[("10.0.0.1:80", 1, false)], Balance::RoundRobin));
    let s = g.members()[0].clone();
    for _ in 0..5 {
        g.failed(&s);
    }
    assert_eq!(pick(&g, b"", &[]), Some(s.addr));
    assert_eq!(pick(&g, b"", &[s.addr]), None, "but not twice for one request");
}

#[test]
fn tried_servers_are_skipped() {
    let (g, _rt) = group(upstream(
        &[
            ("10.0.0.1:80", 1, false),
            ("10.0.0.2:80", 1, false),
            ("10.0.0.3:80", 1, false),
        ],
        Balance::Hash(HashKey::Client),
    ));
    let first = pick(&g, b"client-1", &[]).unwrap();
    assert_eq!(pick(&g, b"client-1", &[]), Some(first), "sticky");
    let second = pick(&g, b"client-1", &[first]).unwrap();
    assert_ne!(first, second);
    let third = pick(&g, b"client-1", &[first, second]).unwrap();
    assert!(third != first && third != second);
    assert_eq!(pick(&g, b"client-1", &[first, second, third]), None);
}

#[test]
fn consistent_hashing_moves_about_a_quarter_of_the_keys_when_a_fourth_server_joins() {
    let three = [
        ("10.0.0.1:80", 1, false),
        ("10.0.0.2:80", 1, false),
        ("10.0.0.3:80", 1, false),
    ];
    let (g3, _rt) = group(upstream(&three, Balance::Hash(HashKey::Client)));
    let mut four = three.to_vec();
    four.push(("10.0.0.4:80", 1, false));
    let (g4, _rt2) = group(upstream(&four, Balance::Hash(HashKey::Client)));
    let keys: Vec<String> = (0..2000).map(|i| format!("user-{i}")).collect();
    let moved = keys
        .iter()
        .filter(|k| pick(&g3, k.as_bytes(), &[]) != pick(&g4, k.as_bytes(), &[]))
        .count();
    // Ideally 1/4 of the keys (the new server's share); a modulo hash would move 3/4.
    assert!((300..=700).contains(&moved), "{moved} of 2000 keys moved");
}

#[test]
fn least_conn_prefers_the_server_with_fewer_requests_in_flight() {
    let (g, _rt) = group(upstream(
        &[("10.0.0.1:80", 1, false), ("10.0.0.2:80", 1, false)],
        Balance::LeastConn,
    ));
    let busy = g.select(b"", &[]).unwrap();
    let _busy2 = g.select(b"", &[]).unwrap();
    let _busy3 = g.select(b"", &[]).unwrap(); // 2 on one, 1 on the other
    let heavy = g.members().iter().max_by_key(|m| m.in_flight()).unwrap().addr;
    for _ in 0..5 {
        assert_ne!(pick(&g, b"", &[]), Some(heavy));
    }
    drop(busy);
}

#[test]
fn two_choices_spread_requests() {
    let (g, _rt) = group(upstream(
        &[
            ("10.0.0.1:80", 1, false),
            ("10.0.0.2:80", 1, false),
            ("10.0.0.3:80", 1, false),
        ],
        Balance::Random,
    ));
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(g.select(b"", &[]).unwrap());
    }
    // Never more than a few apart: each pick took the lighter of two.
    let loads: Vec<usize> = g.members().iter().map(|m| m.in_flight()).collect();
    let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
    assert!(max - min <= 4, "{loads:?}");
}

#[test]
fn next_upstream_tries_and_timeout_bound_the_attempts() {
    use super::attempts::may_try_another;
    let three = [
        ("10.0.0.1:80", 1, false),
        ("10.0.0.2:80", 1, false),
        ("10.0.0.3:80", 1, false),
    ];
    let (g, _rt) = group(upstream(&three, Balance::RoundRobin));
    let tried: Vec<SocketAddr> = vec!["10.0.0.1:80".parse().unwrap()];
    let now = Some(Instant::now());
    // Default: as many attempts as servers.
    assert!(may_try_another(&g, 1, now, &tried));
    assert!(may_try_another(&g, 2, now, &tried));
    assert!(!may_try_another(&g, 3, now, &tried));
    // Every server tried: none left.
    let all: Vec<SocketAddr> = g.members().iter().map(|m| m.addr).collect();
    assert!(!may_try_another(&g, 1, now, &all));

    let mut u = upstream(&three, Balance::RoundRobin);
    u.next_upstream_tries = Some(2);
    u.next_upstream_timeout = Duration::from_millis(50);
    let (g, _rt) = group(u);
    assert!(may_try_another(&g, 1, now, &tried));
    assert!(!may_try_another(&g, 2, now, &tried), "next_upstream_tries = 2");
    let long_ago = Instant::now().checked_sub(Duration::from_millis(100));
    assert!(
        !may_try_another(&g, 1, long_ago, &tried),
        "next_upstream_timeout passed"
    );
}
