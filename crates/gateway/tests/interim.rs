//! Interim (1xx) responses before the final one (RFC 9110 section 15.2): `100 Continue` and
//! `103 Early Hints` (RFC 8297) from the upstream, on keep-alive and on closing upstream
//! connections, for HTTP/1.1 and HTTP/2 clients. The final response and its body always
//! arrive, and a keep-alive upstream connection serves the next request.
//!
//! What the client sees of the interim responses, as of Pingora 0.9.1:
//! - HTTP/1.1: relayed, `100` and `103` alike (with the `Link` field of the hints; Pingora's
//!   HTTP/1.1 server writes 1xx heads unless `ignore_info_resp` is set, which the gateway
//!   never does). A client that sent `Expect: 100-continue` gets the upstream's `100` and
//!   then sends its body (the gateway does not answer `100` itself).
//! - HTTP/2: dropped (Pingora's HTTP/2 server ignores 1xx heads: the h2 crate sends one
//!   response per stream); the client gets the final response only.

mod harness;

use bytes::Bytes;
use harness::gateway::simple_config;
use harness::wire::{find, h2_connect, h2_request, header_values, within, H2};
use harness::{client, Gateway};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HINTS: &[u8] = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n";
const LINK: &str = "</style.css>; rel=preload; as=style";

/// An upstream that answers `/continue...` with `100 Continue` as soon as the head is read,
/// then reads the body (Content-Length) and answers `200 continued:<body>`; and anything
/// else with `103 Early Hints`, then `200 hinted`. With `close`, each final response says
/// `Connection: close` and the connection is closed after it.
struct Interim {
    addr: SocketAddr,
    /// Final responses sent, per upstream connection.
    conns: Arc<Mutex<Vec<usize>>>,
    // The connection tasks live in the accept task's JoinSet: aborted with it.
    _task: harness::Task,
}

impl Interim {
    async fn start(close: bool) -> Interim {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<usize>>> = Arc::default();
        let all = conns.clone();
        let task = harness::Task::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let index = {
                    let mut list = all.lock().unwrap();
                    list.push(0);
                    list.len() - 1
                };
                tasks.spawn(serve(stream, index, all.clone(), close));
            }
        });
        Interim {
            addr,
            conns,
            _task: task,
        }
    }

    fn conns(&self) -> Vec<usize> {
        self.conns.lock().unwrap().clone()
    }
}

/// Reads more bytes; false at the end of the connection (or after 10 s).
async fn read_more<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

async fn serve(mut s: TcpStream, index: usize, conns: Arc<Mutex<Vec<usize>>>, close: bool) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !read_more(&mut s, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
        if !header_values(&head, "transfer-encoding").is_empty() {
            // The tests send Content-Length only.
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        }
        let length = header_values(&head, "content-length")
            .first()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let continued = path.starts_with("/continue");
        if continued && s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
            return;
        }
        while buf.len() < head_end + length {
            if !read_more(&mut s, &mut buf).await {
                return;
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + length).skip(head_end).collect();
        let text = if continued {
            format!("continued:{}", String::from_utf8_lossy(&body))
        } else {
            if s.write_all(HINTS).await.is_err() || s.flush().await.is_err() {
                return;
            }
            "hinted".to_owned()
        };
        let connection = if close { "Connection: close\r\n" } else { "" };
        let fin = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{connection}\r\n{text}",
            text.len()
        );
        if s.write_all(fin.as_bytes()).await.is_err() {
            return;
        }
        conns.lock().unwrap()[index] += 1;
        if close {
            let _ = s.shutdown().await;
            return;
        }
    }
}

/// One gateway thread: one upstream connection pool, so reuse shows in `Interim::conns`.
async fn gateway(up: &Interim) -> Gateway {
    Gateway::start(&simple_config(up.addr, "").replace("threads = 2", "threads = 1")).await
}

/// The next response head on the connection, taken out of `buf`.
async fn next_head<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> String {
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if !read_more(s, buf).await {
            panic!(
                "the connection ended before a response head: {:?}",
                String::from_utf8_lossy(buf)
            );
        }
    };
    String::from_utf8_lossy(&buf.drain(..end).collect::<Vec<u8>>()).into_owned()
}

/// The final response: its head (after any interim ones, which must be `expect`ed) and
/// its Content-Length body.
async fn final_response<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> (String, String) {
    let head = next_head(s, buf).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let length = header_values(&head, "content-length")
        .first()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no Content-Length: {head}"));
    while buf.len() < length {
        assert!(read_more(s, buf).await, "the body ended early: {head}");
    }
    let body: Vec<u8> = buf.drain(..length).collect();
    (head, String::from_utf8_lossy(&body).into_owned())
}

async fn h1_client(close: bool) {
    let up = Interim::start(close).await;
    let gw = gateway(&up).await;
    let (mut c, _) = within("the TLS connection", client::tls(gw.https, "localhost")).await;
    let mut buf = Vec::new();
    for round in 0..2 {
        // Expect: 100-continue: the body goes only after the interim response.
        let request = format!(
            "POST /continue/{round} HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n\
             Content-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
        );
        within("sending a head", c.write_all(request.as_bytes()))
            .await
            .expect("write");
        let interim = next_head(&mut c, &mut buf).await;
        assert!(interim.starts_with("HTTP/1.1 100 "), "round {round}: {interim}");
        within("sending the body", c.write_all(b"hello"))
            .await
            .expect("write");
        let (_, body) = final_response(&mut c, &mut buf).await;
        assert_eq!(body, "continued:hello", "round {round}");

        // 103 Early Hints: relayed, with its Link field, then the final response.
        let request = format!("GET /hints/{round} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        within("sending a request", c.write_all(request.as_bytes()))
            .await
            .expect("write");
        let interim = next_head(&mut c, &mut buf).await;
        assert!(interim.starts_with("HTTP/1.1 103 "), "round {round}: {interim}");
        assert_eq!(header_values(&interim, "link"), [LINK], "{interim}");
        let (_, body) = final_response(&mut c, &mut buf).await;
        assert_eq!(body, "hinted", "round {round}");
    }
    assert!(buf.is_empty(), "stray bytes: {:?}", String::from_utf8_lossy(&buf));
    check_upstream_connections(&up, close);
}

/// A closing upstream opened one connection per request; a keep-alive one served a later
/// request on a connection that had carried an interim response.
fn check_upstream_connections(up: &Interim, close: bool) {
    let conns = up.conns();
    assert_eq!(conns.iter().sum::<usize>(), 4, "{conns:?}");
    if close {
        assert_eq!(conns, [1, 1, 1, 1]);
    } else {
        assert!(
            conns.iter().any(|&n| n >= 2),
            "no upstream connection was reused: {conns:?}"
        );
    }
}

/// Sends `req` (with `body` as one DATA frame) and returns the status and body.
async fn h2_exchange(h2: &H2, req: http::Request<()>, body: Option<&'static [u8]>) -> (u16, String) {
    let mut ready = within("the h2 connection to be ready", h2.send.clone().ready())
        .await
        .expect("ready");
    let (response, mut stream) = ready.send_request(req, body.is_none()).expect("send");
    if let Some(b) = body {
        stream.send_data(Bytes::from_static(b), true).expect("DATA");
    }
    let response = within("the h2 response", response).await.expect("response");
    let status = response.status().as_u16();
    let mut rb = response.into_body();
    let mut out = Vec::new();
    while let Some(data) = within("the h2 response body", rb.data()).await {
        let data = data.expect("a DATA frame");
        let _ = rb.flow_control().release_capacity(data.len());
        out.extend_from_slice(&data);
    }
    (status, String::from_utf8_lossy(&out).into_owned())
}

async fn h2_client(close: bool) {
    let up = Interim::start(close).await;
    let gw = gateway(&up).await;
    let h2 = h2_connect(gw.https).await;
    for round in 0..2 {
        let path = format!("/continue/{round}");
        let req = h2_request(gw.https, "POST", &path, &[("content-length", "5")]);
        let answer = h2_exchange(&h2, req, Some(b"hello")).await;
        assert_eq!(answer, (200, "continued:hello".to_owned()), "round {round}");
        let req = h2_request(gw.https, "GET", &format!("/hints/{round}"), &[]);
        let answer = h2_exchange(&h2, req, None).await;
        assert_eq!(answer, (200, "hinted".to_owned()), "round {round}");
    }
    check_upstream_connections(&up, close);
}

#[tokio::test]
async fn interim_responses_h1_client_keepalive_upstream() {
    h1_client(false).await;
}

#[tokio::test]
async fn interim_responses_h1_client_closing_upstream() {
    h1_client(true).await;
}

#[tokio::test]
async fn interim_responses_h2_client_keepalive_upstream() {
    h2_client(false).await;
}

#[tokio::test]
async fn interim_responses_h2_client_closing_upstream() {
    h2_client(true).await;
}
