//! Load tools for the side-by-side benchmark (see `benches/compare.py`).

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Writes an ECDSA P-256 certificate and key for `localhost`.
    Cert { cert: String, key: String },
    /// WebSocket echo upstream.
    WsServer { addr: SocketAddr },
    /// SSE upstream: every stream gets an event every `interval_ms`.
    SseServer {
        addr: SocketAddr,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
    },
    /// `conns` WebSockets through the proxy, each echoing messages in a loop for `secs`.
    WsLoad {
        addr: SocketAddr,
        #[arg(long, default_value_t = 64)]
        conns: usize,
        #[arg(long, default_value_t = 5)]
        secs: u64,
    },
    /// `conns` SSE streams through the proxy for `secs`; counts events.
    SseLoad {
        addr: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        #[arg(long, default_value_t = 5)]
        secs: u64,
    },
    /// New TLS connection per request from `clients` distinct clients that each keep their
    /// own TLS session (tickets or session IDs), as returning browsers do: every client first
    /// connects once (full handshake), then `conns` workers go round the clients for `secs`,
    /// one `GET /json` with `Connection: close` per connection. Prints requests per second,
    /// the fraction of handshakes that resumed, and latency.
    ResumeLoad {
        addr: SocketAddr,
        #[arg(long, default_value_t = 5000)]
        clients: usize,
        #[arg(long, default_value_t = 16)]
        conns: usize,
        #[arg(long, default_value_t = 5)]
        secs: u64,
        /// TLS 1.2 only (resumption by session ID or ticket) instead of TLS 1.3 or 1.2.
        #[arg(long)]
        tls12: bool,
    },
    /// Opens `conns` TLS connections, one request each, keeps them idle until stdin closes.
    Idle {
        addr: SocketAddr,
        #[arg(long, default_value_t = 10000)]
        conns: usize,
        /// Only the TLS handshake, no request.
        #[arg(long)]
        handshake_only: bool,
    },
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(Arc::new(gateway_benches::client_config(false)))
}

async fn tls(addr: SocketAddr) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tls_connector().connect(name, tcp).await
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn ws_server(addr: SocketAddr) {
    let l = TcpListener::bind(addr).await.expect("bind");
    while let Ok((s, _)) = l.accept().await {
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                return;
            };
            while let Some(Ok(m)) = ws.next().await {
                if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn sse_server(addr: SocketAddr, interval: Duration) {
    let l = TcpListener::bind(addr).await.expect("bind");
    while let Ok((mut s, _)) = l.accept().await {
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let mut i = 0u64;
            loop {
                tokio::time::sleep(interval).await;
                let ev = format!("data: {{\"seq\":{i},\"value\":{}}}\n\n", i * 7 % 1000);
                let chunk = format!("{:x}\r\n{ev}\r\n", ev.len());
                if s.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
                i += 1;
            }
        });
    }
}

async fn ws_load(addr: SocketAddr, conns: usize, secs: u64) {
    let msgs = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let msgs = msgs.clone();
        tasks.push(tokio::spawn(async move {
            let mut rtts = Vec::new();
            let Ok(stream) = tls(addr).await else { return rtts };
            let url = format!("wss://localhost:{}/ws/echo", addr.port());
            let Ok((mut ws, _)) = tokio_tungstenite::client_async(url, stream).await else {
                return rtts;
            };
            let payload = "x".repeat(64);
            while Instant::now() < deadline {
                let t = Instant::now();
                if ws.send(payload.clone().into()).await.is_err() {
                    break;
                }
                match ws.next().await {
                    Some(Ok(_)) => {
                        rtts.push(t.elapsed().as_micros() as u64);
                        msgs.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
            rtts
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort_unstable();
    let n = msgs.load(Ordering::Relaxed);
    println!(
        "{{\"messages\":{n},\"rate\":{:.1},\"p50_us\":{},\"p99_us\":{}}}",
        n as f64 / secs as f64,
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
}

async fn sse_load(addr: SocketAddr, conns: usize, secs: u64) {
    let events = Arc::new(AtomicU64::new(0));
    let opened = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let events = events.clone();
        let opened = opened.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = tls(addr).await else { return };
            let req = "GET /sse/stream HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n";
            if s.write_all(req.as_bytes()).await.is_err() {
                return;
            }
            opened.fetch_add(1, Ordering::Relaxed);
            let mut buf = vec![0u8; 8192];
            while Instant::now() < deadline {
                match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {
                        let c = buf[..n].windows(2).filter(|w| w == b"\n\n").count();
                        events.fetch_add(c as u64, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let n = events.load(Ordering::Relaxed);
    println!(
        "{{\"streams\":{},\"events\":{n},\"rate\":{:.1}}}",
        opened.load(Ordering::Relaxed),
        n as f64 / start.elapsed().as_secs_f64()
    );
}

async fn idle(addr: SocketAddr, conns: usize, handshake_only: bool) {
    let mut held = Vec::with_capacity(conns);
    let mut failed = 0;
    for chunk in 0..conns.div_ceil(200) {
        let mut batch = Vec::new();
        for _ in 0..200.min(conns - chunk * 200) {
            batch.push(tokio::spawn(async move {
                let mut s = tls(addr).await.ok()?;
                if handshake_only {
                    return Some(s);
                }
                s.write_all(b"GET /json HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .await
                    .ok()?;
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.ok()?;
                (n > 0).then_some(s)
            }));
        }
        for b in batch {
            match b.await.ok().flatten() {
                Some(s) => held.push(s),
                None => failed += 1,
            }
        }
    }
    println!("{{\"open\":{},\"failed\":{failed}}}", held.len());
    // Hold until the orchestrator closes stdin.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    drop(held);
}

/// One connection of `client`: handshake (resumed if its store holds a session), `GET /json`
/// with `Connection: close`, read to the end. Returns whether the handshake resumed.
async fn resume_once(addr: SocketAddr, client: &tokio_rustls::TlsConnector) -> std::io::Result<bool> {
    let tcp = TcpStream::connect(addr).await?;
    // As browsers: the request is not held back behind the handshake's last flight (Nagle).
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = client.connect(name, tcp).await?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    tls.write_all(b"GET /json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = Vec::new();
    tls.read_to_end(&mut body).await.or_else(|e| {
        // A peer that closes without close_notify after a complete response.
        if e.kind() == std::io::ErrorKind::UnexpectedEof && !body.is_empty() {
            Ok(0)
        } else {
            Err(e)
        }
    })?;
    if !body.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other("not a 200"));
    }
    Ok(resumed)
}

async fn resume_load(addr: SocketAddr, clients: usize, conns: usize, secs: u64, tls12: bool) {
    let pool: Arc<Vec<tokio_rustls::TlsConnector>> = Arc::new(
        (0..clients)
            .map(|_| tokio_rustls::TlsConnector::from(Arc::new(gateway_benches::client_config(tls12))))
            .collect(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let run = |deadline: Option<Instant>, rounds: Option<u64>| {
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let (pool, next) = (pool.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let (mut lat, mut resumed, mut errors) = (Vec::new(), 0u64, 0u64);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if rounds.is_some_and(|r| i >= r) || deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let t = Instant::now();
                    match resume_once(addr, &pool[i as usize % pool.len()]).await {
                        Ok(r) => {
                            lat.push(t.elapsed().as_micros() as u64);
                            resumed += r as u64;
                        }
                        Err(_) => errors += 1,
                    }
                }
                (lat, resumed, errors)
            }));
        }
        tasks
    };
    // Every client visits once: its first, full handshake leaves it a session to resume.
    for t in run(None, Some(clients as u64)) {
        let _ = t.await;
    }
    next.store(0, Ordering::Relaxed);
    let start = Instant::now();
    let (mut all, mut resumed, mut errors) = (Vec::new(), 0, 0);
    for t in run(Some(start + Duration::from_secs(secs)), None) {
        if let Ok((l, r, e)) = t.await {
            all.extend(l);
            resumed += r;
            errors += e;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let n = all.len() as u64;
    println!(
        "{{\"requests\":{n},\"rps\":{:.1},\"resumed\":{:.4},\"errors\":{errors},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
        n as f64 / wall,
        if n > 0 { resumed as f64 / n as f64 } else { 0.0 },
        percentile(&all, 0.5) as f64 / 1000.0,
        percentile(&all, 0.99) as f64 / 1000.0
    );
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().cmd {
        Cmd::Cert { cert, key } => {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
            let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
            let c = params.self_signed(&kp).expect("cert");
            std::fs::write(cert, c.pem()).expect("write cert");
            std::fs::write(key, kp.serialize_pem()).expect("write key");
        }
        Cmd::WsServer { addr } => ws_server(addr).await,
        Cmd::SseServer { addr, interval_ms } => sse_server(addr, Duration::from_millis(interval_ms)).await,
        Cmd::WsLoad { addr, conns, secs } => ws_load(addr, conns, secs).await,
        Cmd::SseLoad { addr, conns, secs } => sse_load(addr, conns, secs).await,
        Cmd::ResumeLoad {
            addr,
            clients,
            conns,
            secs,
            tls12,
        } => resume_load(addr, clients, conns, secs, tls12).await,
        Cmd::Idle {
            addr,
            conns,
            handshake_only,
        } => idle(addr, conns, handshake_only).await,
    }
}
