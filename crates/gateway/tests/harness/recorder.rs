//! A recording HTTP/1.1 upstream for framing tests: keeps the exact bytes of every request
//! it receives (head and body) and answers by path.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
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
