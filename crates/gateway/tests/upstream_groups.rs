//! Upstream groups with real servers on loopback: weighted round robin, least_conn with a
//! slow server, hash stickiness (cookie, header) and the share of keys that moves when a
//! server joins, a killed server that costs no request (GET and POST) and goes down within
//! `interval x fails` then comes back, backups only when every primary is down, 502 at once
//! when every server is down, and an SSE stream that stays on its server.

mod harness;

use harness::config::{preamble, route};
use harness::scrape::scrape;
use harness::{client, poll_until, Gateway, Task};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// A server that answers its name: `/slow` after 300 ms, `/health` with the status set in
/// `health`, `/stream` as 10 SSE events 50 ms apart, each naming the server.
struct Named {
    addr: SocketAddr,
    name: String,
    health: Arc<AtomicU16>,
    served: Arc<AtomicUsize>,
    delay: Duration,
    task: Option<Task>,
}

impl Named {
    async fn start(name: &str) -> Named {
        Named::start_with(name, Duration::ZERO).await
    }

    /// A server that holds every answer `delay`.
    async fn start_with(name: &str, delay: Duration) -> Named {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut n = Named {
            addr,
            name: name.to_owned(),
            health: Arc::new(AtomicU16::new(200)),
            served: Arc::default(),
            delay,
            task: None,
        };
        n.serve(listener);
        n
    }

    fn serve(&mut self, listener: TcpListener) {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let (name, health, served) = (self.name.clone(), self.health.clone(), self.served.clone());
        let delay = self.delay;
        self.task = Some(Task::spawn(async move {
            // Connections are tasks of this set: killing the server closes them all.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((s, _)) = listener.accept().await {
                let (name, health, served) = (name.clone(), health.clone(), served.clone());
                conns.spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (name, health, served) = (name.clone(), health.clone(), served.clone());
                        async move {
                            use http_body_util::BodyExt;
                            let path = req.uri().path().to_owned();
                            let _ = req.into_body().collect().await;
                            let mut status = 200;
                            let body: http_body_util::combinators::BoxBody<bytes::Bytes, Infallible> =
                                match path.as_str() {
                                    "/health" => {
                                        status = health.load(Ordering::SeqCst);
                                        http_body_util::Full::new(bytes::Bytes::from("health")).boxed()
                                    }
                                    "/stream" => {
                                        served.fetch_add(1, Ordering::SeqCst);
                                        let events = futures_util::stream::unfold(0, move |i| {
                                            let name = name.clone();
                                            async move {
                                                if i == 10 {
                                                    return None;
                                                }
                                                tokio::time::sleep(Duration::from_millis(50)).await;
                                                let frame = hyper::body::Frame::data(bytes::Bytes::from(
                                                    format!("data: {name}\n\n"),
                                                ));
                                                Some((Ok::<_, Infallible>(frame), i + 1))
                                            }
                                        });
                                        http_body_util::StreamBody::new(events).boxed()
                                    }
                                    p => {
                                        served.fetch_add(1, Ordering::SeqCst);
                                        let _ = p;
                                        tokio::time::sleep(delay).await;
                                        http_body_util::Full::new(bytes::Bytes::from(name.clone())).boxed()
                                    }
                                };
                            let mut resp = hyper::Response::new(body);
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            if path == "/stream" {
                                resp.headers_mut()
                                    .insert("content-type", "text/event-stream".parse().unwrap());
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        }));
    }

    /// Stops it (listener and connections closed), and waits until its port refuses.
    async fn kill(&mut self) {
        self.task = None;
        let addr = self.addr;
        poll_until(
            Duration::from_secs(5),
            "the killed server's port to refuse",
            || async move { tokio::net::TcpStream::connect(addr).await.is_err().then_some(()) },
        )
        .await;
    }

    /// Starts it again on the same port.
    async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("the same port again");
        self.serve(listener);
    }
}

fn config(upstream: &str) -> String {
    format!(
        "{}{upstream}\n{}",
        preamble("2s", ""),
        route("all", "/", "api", "")
    )
}

/// Writes `toml` and reloads it with `gateway reload`, which must succeed.
async fn reload_to(gw: &Gateway, toml: &str) {
    gw.write_config(toml);
    let out = harness::gateway::cli(gw, &["reload"]).await;
    assert!(out.status.success(), "{}", harness::gateway::text(&out));
}

fn servers(list: &[&Named]) -> String {
    list.iter()
        .map(|n| format!("\"{}\"", n.addr))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `n` GETs of `path` (with `headers`): how many each server answered; any other status fails.
async fn spread(gw: &Gateway, path: &str, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let c = client::http(false);
    let mut counts = HashMap::new();
    for _ in 0..n {
        let (status, _, body) = client::get(&c, gw, path, None, headers).await;
        assert_eq!(status, 200, "{body}");
        *counts.entry(body).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn round_robin_follows_the_weights() {
    let (a, b, c) = (
        Named::start("a").await,
        Named::start("b").await,
        Named::start("c").await,
    );
    let up = format!(
        "[upstreams.api]\nservers = [\"{}\", \"{}\", {{ address = \"{}\", weight = 2 }}]\nbalance = \"round_robin\"\n",
        a.addr, b.addr, c.addr
    );
    let gw = Gateway::start(&config(&up)).await;
    let counts = spread(&gw, "/", 600, &[]).await;
    for (name, want) in [("a", 150.0), ("b", 150.0), ("c", 300.0)] {
        let got = counts.get(name).copied().unwrap_or(0) as f64;
        assert!(
            (got - want).abs() <= want * 0.1,
            "{name}: {got} of 600, want {want}: {counts:?}"
        );
    }
    let m = scrape(gw.metrics).await;
    let c_label = c.addr.to_string();
    assert_eq!(
        m.value(
            "gateway_upstream_requests_total",
            &[("upstream", "api"), ("server", &c_label)]
        ),
        counts["c"] as f64
    );
    assert_eq!(
        m.value(
            "gateway_upstream_server_up",
            &[("upstream", "api"), ("server", &c_label)]
        ),
        1.0
    );
}

#[tokio::test]
async fn least_conn_sends_less_to_a_slow_server() {
    let (fast1, fast2) = (Named::start("fast1").await, Named::start("fast2").await);
    let slow = Named::start_with("slow", Duration::from_millis(300)).await;
    let up = format!(
        "[upstreams.api]\nservers = [{}]\nbalance = \"least_conn\"\n",
        servers(&[&fast1, &fast2, &slow])
    );
    let gw = Arc::new(Gateway::start(&config(&up)).await);
    // 6 clients at once: round robin would give the slow server a third (30 of 90); least_conn
    // sees its requests pile up and sends the next ones elsewhere.
    let counts = Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
    let mut clients = Vec::new();
    for _ in 0..6 {
        let (gw, counts) = (gw.clone(), counts.clone());
        clients.push(tokio::spawn(async move {
            let c = client::http(false);
            for _ in 0..15 {
                let (status, _, body) = client::get(&c, &gw, "/", None, &[]).await;
                assert_eq!(status, 200);
                *counts.lock().unwrap().entry(body).or_default() += 1;
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let counts = counts.lock().unwrap().clone();
    assert_eq!(counts.values().sum::<usize>(), 90);
    assert!(counts.get("slow").copied().unwrap_or(0) < 20, "{counts:?}");
}

#[tokio::test]
async fn hash_sticks_by_cookie_and_header_and_a_fourth_server_moves_about_its_share() {
    let named = [
        Named::start("a").await,
        Named::start("b").await,
        Named::start("c").await,
        Named::start("d").await,
    ];
    let three = servers(&[&named[0], &named[1], &named[2]]);
    let up = |list: &str, key: &str| {
        format!("[upstreams.api]\nservers = [{list}]\nbalance = \"hash\"\nhash_key = \"{key}\"\n")
    };
    let mut gw = Gateway::start(&config(&up(&three, "cookie:token"))).await;
    let c = client::http(false);
    let mut first = HashMap::new();
    for i in 0..150 {
        let cookie = format!("theme=dark; token=user-{i}");
        let (_, _, body) = client::get(&c, &gw, "/", None, &[("cookie", &cookie)]).await;
        for _ in 0..2 {
            let (_, _, again) = client::get(&c, &gw, "/socket.io/?EIO=4", None, &[("cookie", &cookie)]).await;
            assert_eq!(again, body, "token user-{i} stays on its server");
        }
        first.insert(i, body);
    }
    let used: std::collections::HashSet<&String> = first.values().collect();
    assert_eq!(used.len(), 3, "the keys spread over the three servers");

    // A fourth server: only its share of the keys moves (a modulo hash would move 3/4).
    let four = servers(&[&named[0], &named[1], &named[2], &named[3]]);
    reload_to(&gw, &config(&up(&four, "cookie:token"))).await;
    let mut moved = 0;
    for i in 0..150 {
        let cookie = format!("token=user-{i}");
        let (_, _, body) = client::get(&c, &gw, "/", None, &[("cookie", &cookie)]).await;
        if body != first[&i] {
            assert_eq!(body, "d", "a key moves only to the new server");
            moved += 1;
        }
    }
    assert!((15..=65).contains(&moved), "{moved} of 150 keys moved");

    // By header.
    reload_to(&gw, &config(&up(&three, "header:X-User"))).await;
    for i in 0..20 {
        let user = format!("u{i}");
        let (_, _, body) = client::get(&c, &gw, "/", None, &[("x-user", &user)]).await;
        let (_, _, again) = client::get(&c, &gw, "/x", None, &[("x-user", &user)]).await;
        assert_eq!(body, again);
    }
    let _ = &mut gw;
}

#[tokio::test]
async fn a_killed_server_costs_no_request_and_comes_back() {
    let (a, mut b, c) = (
        Named::start("a").await,
        Named::start("b").await,
        Named::start("c").await,
    );
    let up = format!(
        "[upstreams.api]\nservers = [{}]\nhealth_check = {{ path = \"/health\", interval = \"300ms\", timeout = \"200ms\", fails = 2, passes = 2 }}\n",
        servers(&[&a, &b, &c])
    );
    let gw = Gateway::start(&config(&up)).await;
    let http = client::http(false);
    let b_label = b.addr.to_string();
    let up_of_b = || async {
        scrape(gw.metrics).await.value(
            "gateway_upstream_server_up",
            &[("upstream", "api"), ("server", &b_label)],
        )
    };
    let load = |n: usize| {
        let http = http.clone();
        let gw = &gw;
        async move {
            let mut answered = HashMap::<String, usize>::new();
            for i in 0..n {
                let r = if i % 2 == 0 {
                    http.get(gw.url("/")).send().await
                } else {
                    http.post(gw.url("/form")).body("field=1").send().await
                };
                let r = r.expect("a response");
                assert_eq!(
                    r.status(),
                    200,
                    "request {i} ({})",
                    if i % 2 == 0 { "GET" } else { "POST" }
                );
                *answered.entry(r.text().await.unwrap()).or_default() += 1;
            }
            answered
        }
    };
    assert_eq!(load(30).await.len(), 3);

    b.kill().await;
    let killed = Instant::now();
    let answered = load(60).await;
    assert!(!answered.contains_key("b"), "{answered:?}");
    poll_until(Duration::from_secs(5), "b's health to go to 0", || async {
        (up_of_b().await == 0.0).then_some(())
    })
    .await;
    // The health check takes it down too (the failed connects did it first, max_fails = 1):
    // interval x fails = 600 ms, plus a probe's timeout.
    let config_path = gw.config.display().to_string();
    let (gw_ref, b_ref) = (&gw, &b_label);
    let text = poll_until(Duration::from_secs(5), "the health check to take b down", || {
        let config_path = config_path.clone();
        let b_label = b_ref.clone();
        async move {
            let out = harness::gateway::cli(gw_ref, &["upstreams", "--config", &config_path]).await;
            let text = harness::gateway::text(&out);
            text.lines()
                .any(|l| l.contains(&b_label) && l.contains("down (health check)"))
                .then_some(text)
        }
    })
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "{:?}: {text}",
        killed.elapsed()
    );

    // Back: up after `passes` good probes, and it gets requests again.
    b.restart().await;
    poll_until(Duration::from_secs(5), "b's health to go to 1", || async {
        (up_of_b().await == 1.0).then_some(())
    })
    .await;
    let answered = load(30).await;
    assert!(answered.get("b").copied().unwrap_or(0) > 0, "{answered:?}");
    assert!(gw.stderr().contains("upstream server is down") && gw.stderr().contains("upstream server is up"));
}

#[tokio::test]
async fn backups_serve_only_when_every_primary_is_down_and_then_502_comes_at_once() {
    let (mut a, mut b, mut spare) = (
        Named::start("a").await,
        Named::start("b").await,
        Named::start("spare").await,
    );
    let up = format!(
        "[upstreams.api]\nservers = [{}, {{ address = \"{}\", backup = true }}]\n",
        servers(&[&a, &b]),
        spare.addr
    );
    let gw = Gateway::start(&config(&up)).await;
    let counts = spread(&gw, "/", 20, &[]).await;
    assert!(!counts.contains_key("spare"), "{counts:?}");
    a.kill().await;
    b.kill().await;
    // No failed request: connect refused goes on to the next server, the backup last.
    let counts = spread(&gw, "/", 10, &[]).await;
    assert_eq!(counts.get("spare"), Some(&10), "{counts:?}");

    // Nothing left: 502 without a connect attempt (max_fails took each out).
    spare.kill().await;
    let c = client::http(false);
    let (status, _, _) = client::get(&c, &gw, "/", None, &[]).await;
    assert_eq!(status, 502);
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let (status, _, _) = client::get(&c, &gw, "/", None, &[]).await;
        times.push(t.elapsed());
        assert_eq!(status, 502);
    }
    times.sort();
    assert!(times[2] < Duration::from_millis(100), "{times:?}");
    let m = scrape(gw.metrics).await;
    assert!(
        m.value(
            "gateway_upstream_errors_total",
            &[("upstream", "api"), ("kind", "unavailable")]
        ) >= 5.0
    );
}

#[tokio::test]
async fn an_sse_stream_stays_on_its_server() {
    let (a, b) = (Named::start("a").await, Named::start("b").await);
    let up = format!("[upstreams.api]\nservers = [{}]\n", servers(&[&a, &b]));
    let gw = Gateway::start(&config(&up)).await;
    let c = client::http(false);
    for _ in 0..2 {
        let (status, _, body) = client::get(&c, &gw, "/stream", None, &[]).await;
        assert_eq!(status, 200);
        let names: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
        assert_eq!(names.len(), 10, "{body}");
        assert!(
            names.iter().all(|n| *n == names[0]),
            "one server for the whole stream: {names:?}"
        );
    }
    assert_eq!(a.served.load(Ordering::SeqCst), 1);
    assert_eq!(b.served.load(Ordering::SeqCst), 1);
}

/// WebSockets on a group: each socket is proxied to one server and stays there while the
/// other server is killed (a long stream is never moved, nor cut by another's failure).
#[tokio::test]
async fn websockets_on_a_group_keep_their_server() {
    use harness::promises::{round_trip, wss};
    let (one, two) = (
        harness::upstream::ws_echo().await,
        harness::upstream::ws_echo().await,
    );
    let up = format!(
        "[upstreams.api]\nservers = [\"{}\", \"{}\"]\n[[routes]]\nprefix = \"/ws/\"\nupstream = \"api\"\nwebsocket = true\n",
        one.addr, two.addr
    );
    let gw = Gateway::start(&format!("{}{up}", preamble("2s", ""))).await;
    let mut sockets = Vec::new();
    for _ in 0..4 {
        sockets.push(wss(gw.https, "/ws/echo").await);
    }
    // Round robin put two sockets on each server; stop one server's listener: open sockets
    // of the other keep working, message after message.
    drop(two);
    for round in 0..3 {
        let mut alive = 0;
        for ws in sockets.iter_mut() {
            match round_trip(ws, &format!("round {round}")).await {
                Ok(()) => alive += 1,
                Err(e) if e.starts_with("got ") => panic!("round {round}: a wrong echo: {e}"),
                Err(_) => {} // a socket of the stopped server
            }
        }
        assert!(alive >= 2, "round {round}: the sockets on the live server answer");
    }
}

/// A server that reads each request head and closes the connection without a byte (a
/// crashed worker), or answers every request with `status`.
async fn misbehaving(status: Option<u16>) -> (SocketAddr, Task) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = Task::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                if let Some(code) = status {
                    let resp =
                        format!("HTTP/1.1 {code} Bad\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbad");
                    let _ = s.write_all(resp.as_bytes()).await;
                }
                // Dropped: closed (after the response, or with nothing sent).
            });
        }
    });
    (addr, task)
}

/// `next_upstream`: a reset before any response byte sends a GET on to the next server but
/// never a POST (its body might have been used); a listed `http_502` is sent on too, and
/// `next_upstream_tries = 1` relays it as it is.
#[tokio::test]
async fn next_upstream_moves_idempotent_requests_only_and_stops_at_its_tries() {
    let good = Named::start("good").await;
    let (reset, _t1) = misbehaving(None).await;
    let (bad_gateway, _t2) = misbehaving(Some(502)).await;
    let up = |list: String, more: &str| {
        format!("[upstreams.api]\nservers = [{list}]\nmax_fails = 0\nbalance = \"hash\"\nhash_key = \"header:X-Key\"\n{more}")
    };
    // Hash by a key the test picks, so the first attempt goes where the test wants.
    let gw = Gateway::start(&config(&up(
        format!("\"{}\", \"{}\"", reset, good.addr),
        "next_upstream = [\"error\", \"timeout\", \"http_502\"]\n",
    )))
    .await;
    let http = client::http(false);
    let mut first_reset = None;
    for i in 0..40 {
        let key = format!("k{i}");
        let (status, _, body) = client::get(&http, &gw, "/", None, &[("x-key", &key)]).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "good"),
            "a GET whose first server reset it moves on"
        );
        let post = http
            .post(gw.url("/"))
            .header("x-key", &key)
            .body("x=1")
            .send()
            .await
            .unwrap();
        if post.status() == 502 {
            first_reset = Some(key);
        } else {
            assert_eq!(post.status(), 200);
        }
    }
    assert!(
        first_reset.is_some(),
        "some key's first server is the one that resets: its POST is not sent again"
    );

    reload_to(
        &gw,
        &config(&up(
            format!("\"{}\", \"{}\"", bad_gateway, good.addr),
            "next_upstream = [\"error\", \"http_502\"]\n",
        )),
    )
    .await;
    for i in 0..20 {
        let key = format!("k{i}");
        let (status, _, body) = client::get(&http, &gw, "/", None, &[("x-key", &key)]).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "good"),
            "a 502 is sent on to the next server"
        );
    }
    reload_to(
        &gw,
        &config(&up(
            format!("\"{}\", \"{}\"", bad_gateway, good.addr),
            "next_upstream = [\"error\", \"http_502\"]\nnext_upstream_tries = 1\n",
        )),
    )
    .await;
    let mut relayed = 0;
    for i in 0..20 {
        let key = format!("k{i}");
        let (status, _, body) = client::get(&http, &gw, "/", None, &[("x-key", &key)]).await;
        if status == 502 {
            assert_eq!(body, "bad", "the upstream's own 502, relayed");
            relayed += 1;
        }
    }
    assert!(relayed > 0, "with one try the first server's 502 is the answer");
}
