//! A forward-auth service for the tests (like Authelia's `/api/verify`), and a server that
//! answers bytes that are not HTTP.

use super::upstream::Seen;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// A forward-auth service like Authelia's: `session=good` is alice (200 with Remote-User and
/// Remote-Groups), `session=anon` passes without a user, anything else is sent to the login
/// page (302 with Location, two Set-Cookie and a small HTML body). It records each request.
pub struct AuthServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    accept: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

pub const LOGIN: &str = "https://auth.example.test/?rd=https%3A%2F%2Flocalhost%2Fapp%2F";
pub const LOGIN_BODY: &str = "<a href=\"https://auth.example.test/\">Found</a>.\n";

async fn auth_answer(
    req: hyper::Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let cookie = req
        .headers()
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let has = |c: &str| cookie.split(';').any(|p| p.trim() == c);
    let b = hyper::Response::builder();
    let resp = if has("session=good") {
        b.status(200)
            .header("remote-user", "alice")
            .header("remote-groups", "admins")
    } else if has("session=anon") {
        b.status(200)
    } else {
        b.status(302)
            .header("location", LOGIN)
            .header("set-cookie", "authelia_flow=1; Path=/; HttpOnly")
            .header("set-cookie", "csrf=abc; Path=/; Secure")
            .header("content-type", "text/html; charset=utf-8")
    };
    let body = if has("session=good") || has("session=anon") {
        ""
    } else {
        LOGIN_BODY
    };
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        headers,
        body_len: 0,
    });
    Ok(resp.body(Full::new(Bytes::from(body))).unwrap())
}

impl AuthServer {
    pub async fn start() -> AuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (s, c) = (seen.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = s.clone();
                let conn = tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| auth_answer(req, seen.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                c.lock().unwrap().push(conn);
            }
        });
        AuthServer {
            addr,
            seen,
            accept,
            conns,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops listening and closes every connection (the gateway's pooled one too).
    pub async fn stop(&mut self) {
        self.accept.abort();
        let _ = (&mut self.accept).await;
        let conns = std::mem::take(&mut *self.conns.lock().unwrap());
        for c in &conns {
            c.abort();
        }
        for c in conns {
            let _ = c.await;
        }
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().iter() {
            c.abort();
        }
    }
}

/// Answers every connection with bytes that are not HTTP.
pub async fn garbage_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
            });
        }
    });
    (addr, task)
}
