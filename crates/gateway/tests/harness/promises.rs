//! For the tests of README's promises (each says how to break the build to watch it fail): a
//! programmable upstream, a raw upgrading upstream, and WebSocket and raw HTTP/1.1 client
//! steps, each with a deadline.
//!
//! [`paced`] answers every request with its tag (in the body and `x-upstream-tag`); the path
//! says how:
//!
//! - `/hold/...`: waits until [`Paced::release`], then `<tag>:held`;
//! - `/delay/<ms>/...`: the whole answer after `<ms>`, `<tag>:delayed`;
//! - `/slow-body/<ms>`: the head at once, the body after `<ms>`;
//! - `/sse/<count>/<ms>`: `<count>` Server-Sent Events, `<ms>` apart;
//! - `/range.html`: a 48 KB page; with `Range`, a 206 of its first 2048 bytes;
//! - anything else: `<tag>` at once.

use super::upstream::{big_html, head_bytes, listen, serve_http1};
use super::within;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

type Body = BoxBody<Bytes, Infallible>;

struct State {
    tag: &'static str,
    arrived: AtomicUsize,
    released: watch::Receiver<bool>,
}

/// The programmable upstream (see the module comment).
pub struct Paced {
    pub addr: SocketAddr,
    pub tag: &'static str,
    state: Arc<State>,
    release: watch::Sender<bool>,
    task: super::Task,
}

impl Paced {
    /// Requests whose head arrived, counted before any wait.
    pub fn arrived(&self) -> usize {
        self.state.arrived.load(Ordering::SeqCst)
    }

    /// Lets every held request answer (and every later one at once).
    pub fn release(&self) {
        self.release.send_replace(true);
    }
}

fn full(st: &State, status: u16, ctype: &str, body: impl Into<Bytes>) -> Response<Body> {
    let body: Bytes = body.into();
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .header("content-length", body.len())
        .header("x-upstream-tag", st.tag)
        .body(Full::new(body).boxed())
        .unwrap()
}

async fn paced_handler(req: Request<Incoming>, st: Arc<State>) -> Result<Response<Body>, Infallible> {
    st.arrived.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    let ranged = req.headers().contains_key("range");
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let number = |i: usize| parts.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let tag = st.tag;
    let resp = match parts.first().copied().unwrap_or("") {
        "hold" => {
            let mut released = st.released.clone();
            let held = released.wait_for(|r| *r).await.is_ok();
            let body = if held {
                format!("{tag}:held")
            } else {
                format!("{tag}:never released")
            };
            full(&st, 200, "text/plain", body)
        }
        "delay" => {
            tokio::time::sleep(Duration::from_millis(number(1))).await;
            full(&st, 200, "text/plain", format!("{tag}:delayed"))
        }
        "slow-body" => {
            let ms = number(1);
            let stream = futures_util::stream::unfold(false, move |done| async move {
                if done {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"the slow body\n"))),
                    true,
                ))
            });
            Response::builder()
                .status(200)
                .header("content-type", "text/plain")
                .header("x-upstream-tag", tag)
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap()
        }
        "sse" => {
            let (count, ms) = (number(1), number(2));
            let stream = futures_util::stream::unfold(0u64, move |i| async move {
                if i >= count {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let event = format!("id: {i}\ndata: {tag} event {i}\n\n");
                Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), i + 1))
            });
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .header("x-upstream-tag", tag)
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap()
        }
        "range.html" => {
            let page = big_html();
            if ranged {
                let mut r = full(
                    &st,
                    206,
                    "text/html; charset=utf-8",
                    page.as_bytes()[..2048].to_vec(),
                );
                r.headers_mut().insert(
                    "content-range",
                    format!("bytes 0-2047/{}", page.len()).parse().unwrap(),
                );
                r
            } else {
                full(&st, 200, "text/html; charset=utf-8", page)
            }
        }
        _ => full(&st, 200, "text/plain", tag),
    };
    Ok(resp)
}

/// The programmable upstream on 127.0.0.1 (see the module comment), tagged `tag`.
pub async fn paced(tag: &'static str) -> Paced {
    let (listener, addr) = listen().await;
    let (release, released) = watch::channel(false);
    let state = Arc::new(State {
        tag,
        arrived: AtomicUsize::new(0),
        released,
    });
    let st = state.clone();
    let task = serve_http1(listener, move |req| paced_handler(req, st.clone()));
    Paced {
        addr,
        tag,
        state,
        release,
        task,
    }
}

/// A raw upstream that accepts any request as an upgrade: a 101 labelled `text/html`, then
/// the 48 KB page of [`big_html`] over the upgraded connection, then an echo of whatever
/// comes. Keeps the request heads it received.
pub struct Upgrading {
    pub addr: SocketAddr,
    pub heads: Arc<Mutex<Vec<String>>>,
    task: super::Task,
}

impl Upgrading {
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

pub async fn upgrading() -> Upgrading {
    let (listener, addr) = listen().await;
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let h = heads.clone();
    let task = super::Task::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                let Some(head) = head_bytes(&mut s).await else {
                    return;
                };
                h.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let answer = "HTTP/1.1 101 Switching Protocols\r\n\
                              Connection: Upgrade\r\nUpgrade: websocket\r\n\
                              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
                              Content-Type: text/html; charset=utf-8\r\n\r\n";
                if s.write_all(answer.as_bytes()).await.is_err()
                    || s.write_all(big_html().as_bytes()).await.is_err()
                {
                    return;
                }
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Upgrading { addr, heads, task }
}

/// An HTTP/1.1 WebSocket upgrade request for `path`, with `extra` fields.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

pub type Wss = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A WebSocket through the gateway's HTTPS listener (HTTP/1.1 upgrade); 101 or a panic.
pub async fn wss(https: SocketAddr, path: &str) -> Wss {
    let (tls, _) = super::client::tls(https, "localhost").await;
    let url = format!("wss://localhost:{}{path}", https.port());
    let handshake = tokio_tungstenite::client_async(url, tls);
    let (ws, resp) = within(Duration::from_secs(10), "the WebSocket handshake", handshake)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// Sends `text` and waits up to 5 s for it to come back (pings and pongs skipped).
pub async fn round_trip(ws: &mut Wss, text: &str) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(5), ws.send(text.into())).await {
        Ok(sent) => sent.map_err(|e| e.to_string())?,
        Err(_) => return Err("could not send within 5 s".into()),
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Err(_) => return Err("no answer within 5 s".into()),
            Ok(None) => return Err("closed".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(m))) if m.is_text() => {
                let got = m.to_text().map_err(|e| e.to_string())?;
                return if got == text {
                    Ok(())
                } else {
                    Err(format!("got {got:?} back"))
                };
            }
            Ok(Some(Ok(m))) if m.is_close() => return Err("closed by the peer".into()),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Index just past the blank line that ends an HTTP head.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The fields of a head as (lowercase name, value), the status line left out.
pub fn head_fields(head: &str) -> Vec<(String, String)> {
    head.lines()
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect()
}

/// Reads until `done(what was read)`, the peer closes, or `limit` passes; returns what was read.
pub async fn read_until<S: AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    while !done(&buf) {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf
}
