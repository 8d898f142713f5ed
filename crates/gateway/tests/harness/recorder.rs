//! Recording HTTP/1.1 upstreams for framing tests: [`Recorder`] keeps the exact bytes of
//! every request it receives (head and body) and answers by path; [`Scripted`] keeps the
//! bytes of every connection and answers each request as a script says.

use super::wire::{find, occurrences, request_end};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP/1.1 upstream that records each request's raw bytes (head and body) and answers
/// `200` with `X-Seen: <n>` (its index), except: `GET /big` answers a 64 MiB body,
/// `/up101` a `101 Switching Protocols` (then closes), `/204` a `204` with a Content-Length.
pub struct Recorder {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    task: super::Task,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let (listener, addr) = super::upstream::listen().await;
        let requests: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let seen = requests.clone();
        let task = super::Task::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(Self::serve(conn, seen.clone()));
            }
        });
        Recorder { addr, requests, task }
    }

    /// The head (request line and fields) of each request received.
    pub fn heads(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .map(|r| match r.find("\r\n\r\n") {
                Some(end) => r[..end + 4].to_owned(),
                None => r,
            })
            .collect()
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }

    async fn serve(mut conn: TcpStream, seen: Arc<Mutex<Vec<Vec<u8>>>>) {
        let mut buf = Vec::new();
        loop {
            // One request: head, then a Content-Length or chunked body.
            let Some(head_end) = super::wire::read_head(&mut conn, &mut buf).await else {
                return;
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let cl: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let chunked = head.contains("transfer-encoding: chunked");
            let end = loop {
                let body = &buf[head_end..];
                if chunked {
                    if let Some(p) = body.windows(5).position(|w| w == b"0\r\n\r\n") {
                        break head_end + p + 5;
                    }
                } else if body.len() >= cl {
                    break head_end + cl;
                }
                let mut chunk = [0u8; 8192];
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let request: Vec<u8> = buf.drain(..end).collect();
            let n = {
                let mut s = seen.lock().unwrap();
                s.push(request);
                s.len() - 1
            };
            if head.starts_with("get /up101 ") {
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: none\r\nConnection: upgrade\r\n\r\n",
                    )
                    .await;
                return;
            }
            if head.split(' ').nth(1) == Some("/204") {
                if conn
                    .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 40\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            if head.starts_with("get /big ") {
                let size = 64usize << 20;
                let h = format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n");
                if conn.write_all(h.as_bytes()).await.is_err() {
                    return;
                }
                let block = vec![b'x'; 1 << 16];
                for _ in 0..(size >> 16) {
                    if conn.write_all(&block).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            let resp = format!("HTTP/1.1 200 OK\r\nX-Seen: {n}\r\nContent-Type: application/octet-stream\r\nContent-Length: 2\r\n\r\nok");
            if conn.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// A [`Recorder`] and a gateway in front of it ([`super::config::framing`] with `limits`).
pub async fn recorded(limits: &str) -> (Recorder, super::Gateway) {
    let rec = Recorder::start().await;
    let gw = super::Gateway::start(&super::config::framing(rec.addr, limits)).await;
    (rec, gw)
}

/// A fixed answer: `200 OK`, `text/plain`, the body `ok`.
pub const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";

/// How [`Scripted`] answers one complete request.
#[derive(Clone, Copy)]
pub enum Answer {
    /// Write these bytes, keep the connection open.
    Send(&'static [u8]),
    /// Write these bytes, then close.
    SendAndClose(&'static [u8]),
    /// Close without answering (a keep-alive connection the server just dropped).
    Hangup,
}

/// Given the connection's index, the request's index on it (both from 0) and the request.
pub type Script = Arc<dyn Fn(usize, usize, &[u8]) -> Answer + Send + Sync>;

pub fn script(f: impl Fn(usize, usize, &[u8]) -> Answer + Send + Sync + 'static) -> Script {
    Arc::new(f)
}

/// What one upstream connection received, and whether it has ended.
#[derive(Clone, Debug, Default)]
pub struct Conn {
    pub bytes: Vec<u8>,
    pub ended: bool,
}

type Conns = Arc<Mutex<Vec<Conn>>>;

/// A TCP upstream on 127.0.0.1 that records the exact bytes of each connection and answers
/// each complete request as its script says.
pub struct Scripted {
    pub addr: SocketAddr,
    conns: Conns,
    _task: super::Task,
}

impl Scripted {
    pub async fn start(script: Script) -> Scripted {
        let (listener, addr) = super::upstream::listen().await;
        let conns: Conns = Arc::default();
        let all = conns.clone();
        let task = super::Task::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = {
                    let mut list = all.lock().unwrap();
                    list.push(Conn::default());
                    list.len() - 1
                };
                tokio::spawn(play(stream, index, all.clone(), script.clone()));
            }
        });
        Scripted {
            addr,
            conns,
            _task: task,
        }
    }

    /// [`Scripted::start`] answering every request with [`OK`].
    pub async fn ok() -> Scripted {
        Self::start(script(|_, _, _: &[u8]| Answer::Send(OK))).await
    }

    pub fn conns(&self) -> Vec<Conn> {
        self.conns.lock().unwrap().clone()
    }

    /// Polls until a connection received `marker` (a request line start, unique per request)
    /// and, with `ended`, until that connection is closed. Returns its bytes from the marker on.
    pub async fn request(&self, marker: &str, ended: bool) -> Vec<u8> {
        let what = format!("{marker:?} at the upstream (ended: {ended})");
        super::until(Duration::from_secs(10), &what, || {
            self.conns().into_iter().find_map(|c| {
                let at = find(&c.bytes, marker.as_bytes())?;
                (!ended || c.ended).then(|| c.bytes[at..].to_vec())
            })
        })
        .await
    }

    /// How many times `marker` was received, over all connections.
    pub fn count(&self, marker: &str) -> usize {
        self.conns()
            .iter()
            .map(|c| occurrences(&c.bytes, marker.as_bytes()))
            .sum()
    }
}

async fn play(mut stream: TcpStream, index: usize, conns: Conns, script: Script) {
    let mut pending = Vec::new();
    let mut served = 0;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        conns.lock().unwrap()[index].bytes.extend_from_slice(&chunk[..n]);
        pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = request_end(&pending) {
            let request: Vec<u8> = pending.drain(..end).collect();
            let answer = script.as_ref()(index, served, &request[..]);
            served += 1;
            let (bytes, close) = match answer {
                Answer::Send(b) => (b, false),
                Answer::SendAndClose(b) => (b, true),
                Answer::Hangup => (&b""[..], true),
            };
            if stream.write_all(bytes).await.is_err() || close {
                conns.lock().unwrap()[index].ended = true;
                return;
            }
        }
    }
    conns.lock().unwrap()[index].ended = true;
}
