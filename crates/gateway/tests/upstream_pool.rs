//! The upstream keepalive pool (vendor/pingora-core/PATCHED.md, "Idle upstream connections
//! without a watcher task each"): the warmest idle connection is reused first, as nginx's
//! keepalive cache does, and an idle connection the upstream closes is closed on the
//! gateway's side too (no socket left in CLOSE_WAIT), then replaced by a new one. A request
//! that meets a pooled connection the upstream just closed is retried once on a new one if
//! it is idempotent, never if it is a POST.

mod harness;

use harness::gateway::simple_config;
use harness::recorder::{script, Answer, Scripted, OK};
use harness::scrape::scrape;
use harness::wire::{exchange, h1_connect, path_of, requests_of, text};
use harness::{client, Gateway};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const STEP: Duration = Duration::from_secs(10);

/// An HTTP/1.1 keep-alive upstream whose answers name the connection that carried them
/// (the gateway's local port of that connection). `/hold/N` is answered once `release(N)`
/// was called; `/arm/N` too, and the connection then closes without answering the next
/// request it reads (an upstream closing idle connections as a request arrives); `/close`
/// is answered, then the connection closed 200 ms later (a short upstream keepalive
/// timeout); anything else at once.
struct Upstream {
    addr: SocketAddr,
    released: watch::Sender<usize>,
    in_flight: Arc<AtomicUsize>,
    /// Connections closed by the upstream after `/close`.
    closed: Arc<AtomicUsize>,
    _task: harness::Task,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (released, watch_rx) = watch::channel(0usize);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (flight, shut) = (in_flight.clone(), closed.clone());
        let task = harness::Task::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, peer)) = listener.accept().await {
                conns.spawn(serve(
                    stream,
                    peer.port(),
                    watch_rx.clone(),
                    flight.clone(),
                    shut.clone(),
                ));
            }
        });
        Upstream {
            addr,
            released,
            in_flight,
            closed,
            _task: task,
        }
    }

    fn release(&self, n: usize) {
        self.released.send_replace(n);
    }
}

async fn serve(
    mut s: TcpStream,
    id: u16,
    mut released: watch::Receiver<usize>,
    in_flight: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    let mut armed = false;
    loop {
        let Some(end) = harness::wire::read_head(&mut s, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        if armed {
            return;
        }
        armed = path.starts_with("/arm/");
        let held = path.strip_prefix("/hold/").or_else(|| path.strip_prefix("/arm/"));
        if let Some(n) = held.and_then(|n| n.parse::<usize>().ok()) {
            in_flight.fetch_add(1, Ordering::SeqCst);
            let _ = released.wait_for(|r| *r >= n).await;
        }
        let body = id.to_string();
        let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        if s.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
        if path == "/close" {
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(s);
            closed.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
}

fn one_thread(upstream: SocketAddr) -> String {
    // One worker thread, so one pool: each thread has its own, like an nginx worker.
    simple_config(upstream, "").replace("threads = 2", "threads = 1")
}

async fn get(c: &reqwest::Client, gw: &Gateway, path: &str) -> String {
    let r = harness::within(STEP, path, c.get(gw.url(path)).send())
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.text().await.unwrap()
}

/// `/{kind}/1` from client `a` and `/{kind}/2` from client `b`, both held at the upstream at
/// once (so on two upstream connections), answered in that order: the gateway releases A's
/// upstream connection, then B's. Returns their names.
async fn two_upstream_connections(
    up: &Upstream,
    gw: &Gateway,
    clients: [&reqwest::Client; 2],
    kind: &str,
) -> [String; 2] {
    let held: Vec<_> = clients
        .iter()
        .zip(1..)
        .map(|(c, n)| {
            let (c, url) = ((*c).clone(), gw.url(&format!("/{kind}/{n}")));
            tokio::spawn(async move { c.get(url).send().await.unwrap().text().await.unwrap() })
        })
        .collect();
    harness::poll_until(STEP, "both requests at the upstream", || async {
        (up.in_flight.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    let mut names = Vec::new();
    for (n, answer) in (1..).zip(held) {
        up.release(n);
        names.push(harness::within(STEP, "the held answer", answer).await.unwrap());
    }
    assert_ne!(
        names[0], names[1],
        "two requests in flight, two upstream connections"
    );
    [names[0].clone(), names[1].clone()]
}

/// Two upstream connections are released A then B; the next request gets B, the one used
/// last (nginx's keepalive cache order). Pingora's pool handed out A, the oldest.
#[tokio::test]
async fn the_most_recently_released_upstream_connection_is_reused_first() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&one_thread(up.addr)).await;
    let (a, b) = (client::http(false), client::http(false));
    let [_, conn_b] = two_upstream_connections(&up, &gw, [&a, &b], "hold").await;
    // On B's client connection: its previous request (and the release of its upstream
    // connection) is finished before this one starts.
    assert_eq!(
        get(&b, &gw, "/next").await,
        conn_b,
        "the warmest connection first"
    );
    assert_eq!(
        get(&a, &gw, "/next").await,
        conn_b,
        "and again, as it came back first"
    );
}

/// The upstream closes an idle keepalive connection: the gateway closes its end within
/// about a second (the pool's sweep), and the next request opens a new connection.
#[tokio::test]
async fn an_idle_upstream_connection_closed_by_the_upstream_is_closed_and_replaced() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&one_thread(up.addr)).await;
    let c = client::http(false);
    let first: u16 = get(&c, &gw, "/close").await.parse().unwrap();
    // The gateway's end of that connection: local port `first`, remote `up.addr`.
    let close_wait = || {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let local = format!(":{:04X} ", first);
        let remote = format!(":{:04X} ", up.addr.port());
        table.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3
                && (f[1].to_owned() + " ").ends_with(&local)
                && (f[2].to_owned() + " ").ends_with(&remote)
                && f[3] == "08"
        })
    };
    harness::poll_until(STEP, "the upstream closing its end", || async {
        (up.closed.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    harness::poll_until(
        Duration::from_secs(5),
        "the gateway's end of the closed connection closed",
        || async { (!close_wait()).then_some(()) },
    )
    .await;
    let next: u16 = get(&c, &gw, "/again").await.parse().unwrap();
    assert_ne!(next, first, "a new upstream connection");
}

/// Two pooled connections that the upstream closes as the next request arrives: the GET is
/// retried once, on a new connection, and answered (nginx goes on past failed cached
/// connections too). Before, the retry took the second dead pooled connection: 502.
#[tokio::test]
async fn a_retry_after_a_dead_pooled_connection_goes_to_a_new_one() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&one_thread(up.addr)).await;
    let (a, b) = (client::http(false), client::http(false));
    let armed = two_upstream_connections(&up, &gw, [&a, &b], "arm").await;
    let served = get(&b, &gw, "/victim").await;
    assert!(
        !armed.contains(&served),
        "answered on a new connection: {served} vs {armed:?}"
    );
    assert!(
        client::scrape(gw.metrics)
            .await
            .contains("gateway_upstream_retries_total{upstream=\"echo\"} 1"),
        "one retry counted"
    );
}

/// A pooled connection the upstream just closed (Node.js: after 5 s idle): the first
/// connection answers its first request, then drops the next one unanswered, as a server
/// closing an idle keep-alive connection just as the request arrives; any POST is dropped the
/// same way. The GET is retried once, on a new connection; the POST is never sent twice.
#[tokio::test]
async fn f_a_stale_pooled_connection_is_retried_once_for_get_never_for_post() {
    let rec = Scripted::start(script(|conn, n, req: &[u8]| {
        if req.starts_with(b"POST ") || (conn == 0 && n == 1) {
            Answer::Hangup
        } else {
            Answer::Send(OK)
        }
    }))
    .await;
    // One thread: one upstream pool, so the second request takes the pooled connection.
    let gw = Gateway::start(&one_thread(rec.addr)).await;
    let (retries, echo) = ("gateway_upstream_retries_total", [("upstream", "echo")]);

    let mut c = h1_connect(gw.https).await;
    let r = exchange(&mut c, b"GET /warm HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(r.status, 200, "{}", text(&r.raw));
    let r = exchange(&mut c, b"GET /again HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(r.status, 200, "retried on a new connection: {}", text(&r.raw));
    assert_eq!(text(&r.body), "ok");
    let conns = rec.conns();
    assert_eq!(conns.len(), 2, "one retry, on a new connection");
    let (first, _) = requests_of(&conns[0].bytes);
    let paths = |reqs: &[Vec<u8>]| reqs.iter().map(|r| path_of(r)).collect::<Vec<_>>();
    assert_eq!(paths(&first[..]), ["/warm", "/again"]);
    let (second, _) = requests_of(&conns[1].bytes);
    assert_eq!(paths(&second[..]), ["/again"]);
    assert_eq!(scrape(gw.metrics).await.value(retries, &echo), 1.0);

    // A POST on the (now pooled) second connection meets the same close: never sent twice.
    let r = exchange(
        &mut c,
        b"POST /form HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert_eq!(r.status, 502, "{}", text(&r.raw));
    assert_eq!(rec.count("POST /form "), 1, "the POST reached the upstream once");
    let after = scrape(gw.metrics).await.value(retries, &echo);
    assert_eq!(after, 1.0, "no retry for a POST");
}
