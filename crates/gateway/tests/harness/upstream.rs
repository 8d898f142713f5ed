//! Upstream servers for the tests, on 127.0.0.1:0.
//!
//! `echo` reports what it received as JSON and has a few special paths (large HTML, SSE,
//! SSE paced by the test, already-encoded bodies); `ws_echo` is a WebSocket echo; `hang`
//! accepts and never answers; `closed` is a port with nothing listening.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Events in an `/sse-paced` stream.
pub const SSE_PACED_EVENTS: usize = 4;

/// What the echo upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// `/sse-paced` sends each event after the first only when it takes a permit from here:
    /// [`Upstream::release_sse_event`].
    pub sse_gate: Arc<Semaphore>,
    task: super::Task,
}

impl Upstream {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Lets an `/sse-paced` stream send its next event.
    pub fn release_sse_event(&self) {
        self.sse_gate.add_permits(1);
    }

    fn new(addr: SocketAddr, seen: Arc<Mutex<Vec<Seen>>>, task: super::Task) -> Upstream {
        Upstream {
            addr,
            seen,
            sse_gate: Arc::new(Semaphore::new(0)),
            task,
        }
    }
}

/// A 48 KB HTML page, compressible like a real one.
pub fn big_html() -> String {
    let mut s = String::from("<!doctype html><html><head><title>bench</title></head><body>\n");
    let mut i = 0;
    while s.len() < 48 * 1024 - 32 {
        s.push_str(&format!(
            "<div class=\"row r{}\"><span>item {i}</span><a href=\"/items/{i}\">details</a></div>\n",
            i % 7
        ));
        i += 1;
    }
    s.push_str("</body></html>\n");
    s
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: u16, ctype: &str, body: impl Into<Bytes>) -> Response<Body> {
    let body: Bytes = body.into();
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .header("content-length", body.len())
        .body(Full::new(body).boxed())
        .unwrap()
}

async fn echo_handler(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    gate: Arc<Semaphore>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let path = req.uri().path().to_owned();
    let mut body = req.into_body();
    let mut body_len = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_len += f.data_ref().map_or(0, |d| d.len()),
            Err(_) => break,
        }
    }
    let record = Seen {
        method: method.clone(),
        uri: uri.clone(),
        headers: headers.clone(),
        body_len,
    };
    seen.lock().unwrap().push(record);
    let resp = match path.as_str() {
        "/big.html" | "/n8n-big.html" => full(200, "text/html; charset=utf-8", big_html()),
        "/json" => full(
            200,
            "application/json",
            r#"{"status":"ok","service":"api","n":42}"#,
        ),
        "/tiny.css" => full(200, "text/css", "a{b:c}"),
        "/image.png" => full(200, "image/png", vec![7u8; 4096]),
        "/encoded" => {
            let mut r = full(200, "text/plain", vec![b'x'; 2000]);
            r.headers_mut()
                .insert("content-encoding", "identity-test".parse().unwrap());
            r
        }
        "/no-transform" => {
            let mut r = full(200, "text/plain", "y".repeat(2000));
            r.headers_mut()
                .insert("cache-control", "no-transform".parse().unwrap());
            r
        }
        "/sse" | "/api/events" => {
            let stream = futures_util::stream::unfold(0u32, |i| async move {
                if i >= 5 {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let ev = format!("id: {i}\ndata: event {i} {}\n\n", "padding ".repeat(40));
                Some((Ok::<_, Infallible>(Frame::data(Bytes::from(ev))), i + 1))
            });
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .header("x-accel-buffering", "yes")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap()
        }
        "/sse-paced" => {
            // Event 0 at once; each next one only when the test has seen the previous one
            // and released it: a proxy that holds events back never delivers the first.
            let stream = futures_util::stream::unfold((0usize, gate), |(i, gate)| async move {
                if i >= SSE_PACED_EVENTS {
                    return None;
                }
                if i > 0 {
                    gate.acquire().await.ok()?.forget();
                }
                let ev = format!("id: {i}\ndata: event {i} {}\n\n", "padding ".repeat(40));
                Some((Ok::<_, Infallible>(Frame::data(Bytes::from(ev))), (i + 1, gate)))
            });
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap()
        }
        "/sse-long" => {
            let stream = futures_util::stream::unfold(0u32, |i| async move {
                if i >= 600 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(format!("data: tick {i}\n\n")))),
                    i + 1,
                ))
            });
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap()
        }
        p if p.starts_with("/slow/") => {
            // `/slow/<ms>`: answers after that many milliseconds (an in-flight request).
            let ms: u64 = p[6..].parse().unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            full(200, "text/plain", format!("slept {ms} ms\n"))
        }
        p if p.starts_with("/status/") => {
            let code: u16 = p[8..].parse().unwrap_or(500);
            full(code, "text/plain", format!("status {code}\n"))
        }
        _ => {
            let v = serde_json::json!({
                "method": method, "uri": uri, "body_len": body_len,
                "headers": headers.iter().map(|(n, v)| format!("{n}: {v}")).collect::<Vec<_>>(),
            });
            let mut r = full(200, "application/json", v.to_string());
            r.headers_mut().insert("x-upstream", "echo".parse().unwrap());
            r.headers_mut().insert("connection", "x-drop-me".parse().unwrap());
            r.headers_mut().insert("x-drop-me", "1".parse().unwrap());
            r
        }
    };
    Ok(resp)
}

/// A listener on a free port of 127.0.0.1, and its address.
pub async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Reads a request head byte by byte (nothing past its blank line); `None` when the
/// connection ends first.
pub async fn head_bytes<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.unwrap_or(0) == 0 {
            return None;
        }
        head.push(b[0]);
    }
    Some(head)
}

/// Serves HTTP/1.1 (keep-alive) on every connection `listener` accepts, each request
/// answered by `answer`, until the task is dropped.
pub fn serve_http1<F, Fut, B>(listener: TcpListener, answer: F) -> super::Task
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    super::Task::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = hyper::service::service_fn(answer.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

/// The echo upstream.
pub async fn echo() -> Upstream {
    let (listener, addr) = listen().await;
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let gate = Arc::new(Semaphore::new(0));
    let (s, g) = (seen.clone(), gate.clone());
    let task = serve_http1(listener, move |req| echo_handler(req, s.clone(), g.clone()));
    Upstream {
        addr,
        seen,
        sse_gate: gate,
        task,
    }
}

/// A WebSocket echo upstream (any path). The text `close-me` is answered with a Close frame
/// (1000, "bye") and the end of the connection: the upstream ends first.
pub async fn ws_echo() -> Upstream {
    let (listener, addr) = listen().await;
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let task = super::Task::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.to_text().is_ok_and(|t| t == "close-me") {
                        use tokio_tungstenite::tungstenite::protocol::{
                            frame::coding::CloseCode, CloseFrame,
                        };
                        let bye = CloseFrame {
                            code: CloseCode::Normal,
                            reason: "bye".into(),
                        };
                        let _ = ws.close(Some(bye)).await;
                        break;
                    }
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).await.is_err() {
                            break;
                        }
                    } else if msg.is_close() {
                        break;
                    }
                }
            });
        }
    });
    Upstream::new(addr, seen, task)
}

/// Accepts connections and never answers (for timeouts).
pub async fn hang() -> Upstream {
    let (listener, addr) = listen().await;
    let task = super::Task::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    Upstream::new(addr, Arc::default(), task)
}

/// An address with nothing listening.
pub fn closed() -> SocketAddr {
    super::free_addr()
}

/// An HTTP CONNECT proxy; counts the tunnels it opened.
pub async fn connect_proxy() -> (
    SocketAddr,
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::AsyncWriteExt;
    let (listener, addr) = listen().await;
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let Some(head) = head_bytes(&mut client).await else {
                    return;
                };
                let text = String::from_utf8_lossy(&head).into_owned();
                let Some(target) = text
                    .strip_prefix("CONNECT ")
                    .and_then(|r| r.split_whitespace().next())
                else {
                    return;
                };
                let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (addr, count, task)
}
