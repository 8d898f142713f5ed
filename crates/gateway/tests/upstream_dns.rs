//! Upstream names through DNS (crates/proxy/src/dns.rs): the gateway asks its own name
//! server (`[server] resolver`, here a small DNS server written below), follows a changed
//! answer within `dns_refresh`, sends a few queries rather than one per failed request while
//! the upstream is down, and never makes a request wait for a lookup of a name it knows.

mod harness;

use bytes::Bytes;
use harness::config::{preamble, route, upstream_at};
use harness::wire::within;
use harness::{client, poll_until, Gateway};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UdpSocket};

/// The name the upstream is configured with.
const NAME: &str = "up.test";

// ---------------------------------------------------------------------------------------------
// A DNS server (RFC 1035 section 4.1): one question per query, A records for NAME
// ---------------------------------------------------------------------------------------------

/// The question of a query: its name (labels joined by dots, no final dot), its type and
/// where the question section ends. `None` for anything else.
fn parse_query(msg: &[u8]) -> Option<(String, u16, usize)> {
    let qdcount = u16::from_be_bytes([*msg.get(4)?, *msg.get(5)?]);
    if msg.len() < 12 || msg[2] & 0x80 != 0 || qdcount != 1 {
        return None;
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // compression pointers never appear in a question we send
        }
        labels.push(String::from_utf8_lossy(msg.get(pos..pos + len)?).into_owned());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
    msg.get(pos + 2..pos + 4)?; // QCLASS
    Some((labels.join("."), qtype, pos + 4))
}

/// The response to `query` (its question copied): `answer` as one A record with TTL 0, or
/// no record; `rcode` 0 (NOERROR) or 3 (NXDOMAIN).
fn response(query: &[u8], question_end: usize, answer: &[Ipv4Addr], rcode: u8) -> Vec<u8> {
    let mut r = Vec::with_capacity(question_end + 16);
    r.extend_from_slice(&query[..2]); // ID
    r.push(0x80 | 0x04 | (query[2] & 0x01)); // QR, AA, RD as asked
    r.push(0x80 | rcode); // RA
    r.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    r.extend_from_slice(&(answer.len() as u16).to_be_bytes()); // ANCOUNT
    r.extend_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
    r.extend_from_slice(&query[12..question_end]);
    for ip in answer {
        r.extend_from_slice(&[0xC0, 0x0C]); // the question's name (offset 12)
        r.extend_from_slice(&1u16.to_be_bytes()); // TYPE A
        r.extend_from_slice(&1u16.to_be_bytes()); // CLASS IN
        r.extend_from_slice(&0u32.to_be_bytes()); // TTL
        r.extend_from_slice(&4u16.to_be_bytes()); // RDLENGTH
        r.extend_from_slice(&ip.octets());
    }
    r
}

/// A DNS server on 127.0.0.1 (UDP) that answers A queries for NAME with `answer` (one or
/// more records), AAAA
/// with no record, other names with NXDOMAIN; it counts the queries for NAME, and while
/// `silent` it reads them and never answers.
struct DnsServer {
    addr: SocketAddr,
    answer: Arc<Mutex<Vec<Ipv4Addr>>>,
    silent: Arc<AtomicBool>,
    queries: Arc<AtomicUsize>,
    _task: harness::Task,
}

impl DnsServer {
    async fn start(answer: Ipv4Addr) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
        let addr = socket.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(vec![answer]));
        let silent = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let (a, s, q) = (answer.clone(), silent.clone(), queries.clone());
        let task = harness::Task::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let msg = &buf[..n];
                let Some((name, qtype, end)) = parse_query(msg) else {
                    continue;
                };
                let ours = name.eq_ignore_ascii_case(NAME);
                if ours {
                    q.fetch_add(1, Ordering::SeqCst);
                }
                if s.load(Ordering::SeqCst) {
                    continue;
                }
                let ips = a.lock().unwrap().clone();
                let reply = match (ours, qtype) {
                    (true, 1) => response(msg, end, &ips, 0),
                    (true, _) => response(msg, end, &[], 0),
                    (false, _) => response(msg, end, &[], 3),
                };
                let _ = socket.send_to(&reply, from).await;
            }
        });
        DnsServer {
            addr,
            answer,
            silent,
            queries,
            _task: task,
        }
    }

    fn set_answer(&self, ip: Ipv4Addr) {
        self.set_answers(&[ip]);
    }

    fn set_answers(&self, ips: &[Ipv4Addr]) {
        *self.answer.lock().unwrap() = ips.to_vec();
    }

    fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------------
// Two upstreams on one port, 127.0.0.1 and 127.0.0.2 (all of 127/8 is loopback on Linux)
// ---------------------------------------------------------------------------------------------

/// An HTTP/1.1 upstream answering every request with its `name` as the body.
struct Named {
    addr: SocketAddr,
    // Open connections live in the accept task's JoinSet: closed with it.
    _task: harness::Task,
}

async fn named(addr: SocketAddr, name: &'static str) -> Option<Named> {
    let listener = TcpListener::bind(addr).await.ok()?;
    let addr = listener.local_addr().ok()?;
    let task = harness::Task::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        name.as_bytes(),
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Some(Named { addr, _task: task })
}

/// "one", "two", "three" on 127.0.0.1-3:P, for a port P free on all three.
async fn trio() -> (Named, Named, Named) {
    for _ in 0..20 {
        let (one, two) = pair().await;
        let port = one.addr.port();
        if let Some(three) = named(SocketAddr::from(([127, 0, 0, 3], port)), "three").await {
            return (one, two, three);
        }
    }
    panic!("no port free on 127.0.0.1, .2 and .3");
}

/// "one" on 127.0.0.1:P and "two" on 127.0.0.2:P, for a port P free on both.
async fn pair() -> (Named, Named) {
    for _ in 0..20 {
        let Some(one) = named(SocketAddr::from(([127, 0, 0, 1], 0)), "one").await else {
            continue;
        };
        let port = one.addr.port();
        if let Some(two) = named(SocketAddr::from(([127, 0, 0, 2], port)), "two").await {
            return (one, two);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

fn config(dns: SocketAddr, port: u16) -> String {
    format!(
        r#"
{head}[logging]
access_log = "off"
{up}{all}"#,
        head = preamble("2s", &format!("dns_refresh = \"1s\"\nresolver = [\"{dns}\"]\n")),
        up = upstream_at("up", format!("{NAME}:{port}")),
        all = route("all", "/", "up", ""),
    )
}

/// Status and body of `GET url`, or `None` when the request failed.
async fn fetch(http: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let r = within("a request", http.get(url).send()).await.ok()?;
    let status = r.status().as_u16();
    let body = within("a response body", r.text()).await.ok()?;
    Some((status, body))
}

/// Polls until a request is answered by the upstream called `name`.
async fn wait_for(http: &reqwest::Client, url: &str, name: &'static str, limit: Duration) {
    let what = format!("requests to reach upstream {name:?}");
    poll_until(limit, &what, || {
        let (http, url) = (http.clone(), url.to_owned());
        async move {
            let (status, body) = fetch(&http, &url).await?;
            (status == 200 && body == name).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn upstream_names_follow_dns_without_stampede_or_blocking() {
    let dns = DnsServer::start(Ipv4Addr::new(127, 0, 0, 1)).await;
    let (one, two) = pair().await;
    let gw = Gateway::start(&config(dns.addr, one.addr.port())).await;
    let http = client::http(false);
    let url = gw.url("/");

    // (a) The name resolves to the first upstream.
    wait_for(&http, &url, "one", Duration::from_secs(10)).await;
    assert!(dns.queries() >= 1, "the gateway asked the configured name server");

    // (b) The answer changes (a recreated container): requests follow within dns_refresh
    // (1 s) and a margin.
    dns.set_answer(Ipv4Addr::new(127, 0, 0, 2));
    wait_for(&http, &url, "two", Duration::from_secs(5)).await;

    // (d) The name server stops answering: a refresh is left hanging (up to the 5 s lookup
    // timeout), yet requests are answered at once from the addresses already known.
    dns.set_silent(true);
    let asked = dns.queries();
    poll_until(Duration::from_secs(5), "a refresh query left unanswered", || {
        let n = dns.queries();
        async move { (n > asked).then_some(()) }
    })
    .await;
    for _ in 0..5 {
        let start = Instant::now();
        let answer = fetch(&http, &url).await;
        assert_eq!(answer, Some((200, "two".to_owned())));
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "a request waited {:?} while a lookup hung",
            start.elapsed()
        );
    }
    dns.set_silent(false);

    // (c) The upstream goes away: 50 requests fail, each asking for the name to be resolved
    // again, but the name server sees at most one query per second for the failures plus
    // the periodic refresh (one per second), not one per request.
    drop(two);
    drop(one);
    let what = "the upstream to be gone (502)";
    poll_until(Duration::from_secs(5), what, || {
        let (http, url) = (http.clone(), url.clone());
        async move { (fetch(&http, &url).await?.0 == 502).then_some(()) }
    })
    .await;
    let before = dns.queries();
    let start = Instant::now();
    for i in 0..50 {
        let answer = fetch(&http, &url).await;
        let status = answer.as_ref().map(|(s, _)| *s);
        assert_eq!(status, Some(502), "request {i}: {answer:?}");
    }
    let elapsed = start.elapsed();
    let queries = dns.queries() - before;
    let allowed = 2 * (elapsed.as_secs() as usize + 1) + 2;
    assert!(
        queries <= allowed,
        "{queries} DNS queries during 50 failed requests in {elapsed:?} (allowed {allowed})"
    );
    assert!(
        allowed < 50,
        "the failures took {elapsed:?}: too slow to show the limit"
    );
}

/// A name is a group of every address it resolves to (issue: upstream groups): requests
/// spread over the two addresses of the answer, and when the answer grows to three (a
/// `docker compose up --scale` adding a replica) the third gets requests within
/// `dns_refresh`, without a reload.
#[tokio::test]
async fn a_name_that_gains_an_address_gains_a_server() {
    let dns = DnsServer::start(Ipv4Addr::new(127, 0, 0, 1)).await;
    dns.set_answers(&[Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)]);
    let (one, _two, _three) = trio().await;
    let gw = Gateway::start(&config(dns.addr, one.addr.port())).await;
    let http = client::http(false);
    let url = gw.url("/");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let (status, body) = fetch(&http, &url).await.expect("a response");
        assert_eq!(status, 200);
        seen.insert(body);
    }
    let two_names: std::collections::HashSet<String> = ["one", "two"].map(String::from).into();
    assert_eq!(seen, two_names, "both addresses of the name serve");

    dns.set_answers(&[
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(127, 0, 0, 2),
        Ipv4Addr::new(127, 0, 0, 3),
    ]);
    wait_for(&http, &url, "three", Duration::from_secs(10)).await;
    let out = harness::gateway::cli(&gw, &["upstreams", "--config", &gw.config.display().to_string()]).await;
    let text = harness::gateway::text(&out);
    assert_eq!(text.matches(&format!("dns {NAME}:")).count(), 3, "{text}");
}
