//! Heap allocations per proxied request (`cargo bench -p gateway-benches --bench allocations`).
//!
//! The cost that CPU profiles spread over many small items of the HTTP/1.1 path (header maps
//! built, cloned and dropped on both sides) shows up here as one number per request. The
//! gateway runs in a child process of this bench (the same binary, `ALLOC_BENCH_GATEWAY`),
//! built from `gateway_proxy::add_services` as `gateway run` builds it, with
//! [`stats_alloc`] as its global allocator, so only the gateway's own allocations are counted;
//! the upstream and the client run here, in the parent, uncounted.
//!
//! Cases (compare.py's case 1 and 1L, at a fixed, light load): keep-alive HTTP/1.1 over TLS,
//! `GET /json` answered by a 44-byte JSON response from a plain HTTP/1.1 upstream on
//! loopback, with the access log off and on (combined, to a file). For each case: warm-up
//! requests, then `REQUESTS` counted ones; the allocations of an idle stretch as long as the
//! counted one (background services) are subtracted. Printed per request: allocations,
//! reallocations and bytes allocated. Counts, not times: they repeat run to run within a few
//! tenths (timers and pool sizes depend on timing) and do not depend on the machine's load.

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Requests counted per case, over `CONNECTIONS` keep-alive connections.
const REQUESTS: usize = 20_000;
const WARMUP: usize = 2_000;
const CONNECTIONS: usize = 8;
const BODY: &[u8] = br#"{"status":"ok","service":"bench","n":123456}"#;

fn main() {
    if let Ok(config) = std::env::var("ALLOC_BENCH_GATEWAY") {
        gateway(&config);
    }
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`, `--all-targets`)
    // the 44,000 requests are not run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("allocations: run with `cargo bench -p gateway-benches --bench allocations`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The client's provider (the workspace enables two, so none is chosen by default).
    let _ = rustls::crypto::ring::default_provider().install_default();
    rt.block_on(parent());
}

// ---------------------------------------------------------------------------------------
// The child: the gateway, counting its allocations, answering `stats` on stdin.

fn gateway(config: &str) -> ! {
    // As `gateway run` (main.rs): one process-wide rustls provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let path = std::path::Path::new(config);
    let cfg = match gateway_config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let _log =
        gateway_proxy::access::start_writer(cfg.logging.access_log_file.as_deref()).expect("access log");
    let certs = gateway_tls::CertStore::new();
    let shared = gateway_proxy::Shared::new(
        cfg.clone(),
        certs.clone(),
        gateway_proxy::metrics::Metrics::global(),
    );
    let notices = certs.configure(
        &cfg.tls.certificates,
        &[],
        cfg.tls.default_certificate.as_deref(),
        &[],
    );
    for n in notices {
        eprintln!("{n}");
    }
    let run_dir = path.parent().expect("config in a directory").join("run");
    std::fs::create_dir_all(&run_dir).expect("run dir");
    let mut server =
        pingora_core::server::Server::new_with_opt_and_conf(None, gateway_proxy::server_conf(&cfg, &run_dir));
    server.bootstrap();
    gateway_proxy::add_services(&mut server, shared);
    std::thread::spawn(|| {
        let region = Region::new(GLOBAL);
        let stdin = std::io::stdin();
        let mut out = std::io::stdout();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if line.trim() == "stats" {
                let s = region.change();
                let _ = writeln!(out, "{} {} {}", s.allocations, s.reallocations, s.bytes_allocated);
                let _ = out.flush();
            }
        }
        // The parent went away: so does the gateway.
        std::process::exit(0);
    });
    server.run_forever()
}

// ---------------------------------------------------------------------------------------
// The parent: upstream, client, and the arithmetic.

struct Counts {
    allocations: f64,
    reallocations: f64,
    bytes: f64,
}

struct Gateway {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn stats(&mut self) -> Counts {
        writeln!(self.stdin, "stats").expect("gateway stdin");
        self.stdin.flush().expect("gateway stdin");
        // A wrapper (heaptrack) may print lines of its own first.
        let v = loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("gateway stdout");
            assert!(n > 0, "the gateway child closed its stdout");
            let v: Vec<f64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            if v.len() == 3 {
                break v;
            }
        };
        Counts {
            allocations: v[0],
            reallocations: v[1],
            bytes: v[2],
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_gateway(upstream: SocketAddr, access_log: bool) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = rcgen::generate_simple_self_signed(vec!["bench.test".to_string()]).expect("certificate");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write certificate");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let port = free_port();
    let log = if access_log {
        format!(
            "access_log = \"combined\"\naccess_log_file = \"{}\"\n",
            dir.path().join("access.log").display()
        )
    } else {
        "access_log = \"off\"\n".to_string()
    };
    // compare.py's gateway configuration, without the routes the case does not use.
    let config = format!(
        r#"[listen]
https = "127.0.0.1:{port}"
http = "off"
[server]
threads = 2
grace_period = "1s"
watch_config = false
[tls]
[[tls.certificates]]
name = "bench"
cert = "{cert}"
key = "{key}"
[limits]
keepalive_timeout = "65s"
[compression]
algorithms = ["gzip"]
level = 6
min_length = 256
[logging]
level = "warn"
{log}[upstreams.static]
address = "{upstream}"
keepalive = 32
[[routes]]
prefix = "/"
upstream = "static"
websocket = false
"#,
        cert = cert_path.display(),
        key = key_path.display(),
    );
    let config_path = dir.path().join("proxy.toml");
    std::fs::write(&config_path, config).expect("write config");
    // `ALLOC_BENCH_WRAP="heaptrack -o FILE"` runs the gateway under a heap profiler, to see
    // where the allocations are made (`heaptrack_print FILE.zst`).
    let exe = std::env::current_exe().expect("current exe");
    let wrap = std::env::var("ALLOC_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let mut child = command
        .env("ALLOC_BENCH_GATEWAY", &config_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the gateway child");
    let stdin = child.stdin.take().expect("stdin");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the gateway child exited: {status}");
        }
        assert!(Instant::now() < until, "the gateway did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Gateway {
        child,
        stdin,
        stdout,
        addr,
        _dir: dir,
    }
}

/// A keep-alive HTTP/1.1 upstream answering every request head with the same response.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        BODY.len()
    )
    .into_bytes();
    response.extend_from_slice(BODY);
    let response: Arc<[u8]> = response.into();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let mut buf = Vec::with_capacity(4096);
                loop {
                    while let Some(end) = find(&buf, b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if tcp.write_all(&response).await.is_err() {
                            return;
                        }
                    }
                    match tcp.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    addr
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn tls_client() -> tokio_rustls::TlsConnector {
    // The certificate is made per run: trust anything (the bench measures the gateway).
    tokio_rustls::TlsConnector::from(Arc::new(gateway_benches::client_config(false)))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// `conns` keep-alive TLS connections to the gateway.
async fn connect(addr: SocketAddr, conns: usize) -> Vec<Tls> {
    let connector = tls_client();
    let mut out = Vec::new();
    for _ in 0..conns {
        let tcp = TcpStream::connect(addr).await.expect("connect to the gateway");
        tcp.set_nodelay(true).expect("nodelay");
        let name = rustls::pki_types::ServerName::try_from("bench.test").expect("name");
        out.push(connector.connect(name, tcp).await.expect("TLS handshake"));
    }
    out
}

/// `requests` GETs spread over the connections, one after another on each.
async fn load(port: u16, conns: Vec<Tls>, requests: usize) -> Vec<Tls> {
    let per = requests.div_ceil(conns.len());
    let mut tasks = Vec::new();
    for mut tls in conns {
        tasks.push(tokio::spawn(async move {
            // What wrk sends.
            let request = format!("GET /json HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
            let mut buf = Vec::with_capacity(4096);
            // A gateway that stops answering fails the bench instead of hanging it.
            let patience = Duration::from_secs(10);
            for _ in 0..per {
                tls.write_all(request.as_bytes()).await.expect("write request");
                let (head, length) = loop {
                    if let Some(end) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        assert!(head.starts_with("http/1.1 200"), "response {head}");
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .expect("Content-Length");
                        break (end + 4, length);
                    }
                    let n = tokio::time::timeout(patience, tls.read_buf(&mut buf)).await;
                    assert!(
                        n.expect("no response within 10 s").expect("read response") > 0,
                        "closed"
                    );
                };
                while buf.len() < head + length {
                    let n = tokio::time::timeout(patience, tls.read_buf(&mut buf)).await;
                    assert!(n.expect("no body within 10 s").expect("read body") > 0, "closed");
                }
                buf.drain(..head + length);
            }
            tls
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("client task"));
    }
    out
}

fn per_request(run: &Counts, idle: &Counts, requests: usize) -> Counts {
    let n = requests as f64;
    Counts {
        allocations: (run.allocations - idle.allocations).max(0.0) / n,
        reallocations: (run.reallocations - idle.reallocations).max(0.0) / n,
        bytes: (run.bytes - idle.bytes).max(0.0) / n,
    }
}

fn delta(a: &Counts, b: &Counts) -> Counts {
    Counts {
        allocations: b.allocations - a.allocations,
        reallocations: b.reallocations - a.reallocations,
        bytes: b.bytes - a.bytes,
    }
}

async fn parent() {
    let up = upstream().await;
    println!(
        "allocations in the gateway per request: HTTP/1.1 over TLS, keep-alive, GET of 44 B, \
         {CONNECTIONS} connections, {REQUESTS} requests (idle background subtracted)"
    );
    println!(
        "{:<28} {:>12} {:>16} {:>14}",
        "case", "allocations", "reallocations", "bytes"
    );
    for (name, log) in [("1: access log off", false), ("1L: access log on", true)] {
        let mut gw = tokio::task::block_in_place(|| start_gateway(up, log));
        let conns = connect(gw.addr, CONNECTIONS).await;
        let conns = load(gw.addr.port(), conns, WARMUP).await;
        let start = gw.stats();
        let t = Instant::now();
        let conns = load(gw.addr.port(), conns, REQUESTS).await;
        let took = t.elapsed();
        let end = gw.stats();
        tokio::time::sleep(took).await;
        let idle_end = gw.stats();
        drop(conns);
        let c = per_request(&delta(&start, &end), &delta(&end, &idle_end), REQUESTS);
        println!(
            "{:<28} {:>12.1} {:>16.1} {:>14.0}",
            name, c.allocations, c.reallocations, c.bytes
        );
    }
}
