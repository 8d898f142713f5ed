//! What both nginx oracles share (the routing oracle, `nginx_oracle.rs`, and the importer's
//! equivalence test, `crates/nginx-import/tests/equivalence.rs`, which includes this file
//! with `#[path]`): finding and asking nginx, free ports, recording upstreams, a raw HTTP/1.1
//! client, and the seeded generator with the target pieces both use.

use std::io::{self, BufRead, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub(crate) const INSTALL: &str =
    "install Debian's nginx-light (`apt-get install nginx-light`; `.ci/run` does)";

pub(crate) fn nginx_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NGINX") {
        return PathBuf::from(p);
    }
    for c in ["/usr/sbin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(c).is_file() {
            return PathBuf::from(c);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("nginx");
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("nginx is not installed (the oracle of this test): {INSTALL}, or set NGINX");
}

/// `nginx -V`: the version and build options (nginx prints them on stderr), with a deadline.
pub(crate) fn nginx_build(bin: &Path) -> String {
    let mut err = tempfile::tempfile().expect("a temporary file for nginx -V");
    let mut child = Command::new(bin)
        .arg("-V")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err.try_clone().expect("the temporary file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {INSTALL}", bin.display()));
    let start = Instant::now();
    while child.try_wait().expect("waiting for nginx -V").is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{} -V` did not finish within 30 s", bin.display());
        }
        thread::sleep(Duration::from_millis(10));
    }
    let mut text = Vec::new();
    let _ = io::Seek::seek(&mut err, io::SeekFrom::Start(0));
    let _ = err.read_to_end(&mut text);
    String::from_utf8_lossy(&text).into_owned()
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

// ---------------------------------------------------------------------------------------
// Client

pub(crate) struct Response {
    pub(crate) status: u16,
    /// Lower-case names.
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Raw HTTP/1.1 over one keep-alive connection, reopened after `Connection: close` (nginx
/// closes after a 400).
pub(crate) struct Client {
    pub(crate) addr: SocketAddr,
    pub(crate) conn: Option<BufReader<TcpStream>>,
    /// Header lines sent with every request (`Authorization: ...\r\n`), or nothing.
    pub(crate) extra: String,
}

impl Client {
    pub(crate) fn new(addr: SocketAddr) -> Client {
        Client::with_header(addr, "")
    }

    /// A client that sends `line` (`Name: value`, without CRLF) with every request.
    pub(crate) fn with_header(addr: SocketAddr, line: &str) -> Client {
        let extra = if line.is_empty() {
            String::new()
        } else {
            format!("{line}\r\n")
        };
        Client {
            addr,
            conn: None,
            extra,
        }
    }

    pub(crate) fn get(&mut self, host: &str, target: &str) -> Response {
        match self.try_get(host, target) {
            Ok(r) => r,
            // A kept-alive connection closed in between: once more on a new one.
            Err(_) => {
                self.conn = None;
                self.try_get(host, target).unwrap_or_else(|e| {
                    panic!(
                        "GET {target:?} (Host: {host}) through nginx on {}: {e}",
                        self.addr
                    )
                })
            }
        }
    }

    pub(crate) fn try_get(&mut self, host: &str, target: &str) -> io::Result<Response> {
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().expect("connected above");
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{}\r\n", self.extra);
        conn.get_mut().write_all(request.as_bytes())?;
        let mut line = Vec::new();
        if conn.read_until(b'\n', &mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        let status = line
            .split(|&b| b == b' ')
            .nth(1)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| io::Error::other(String::from_utf8_lossy(&line).into_owned()))?;
        let mut headers = Vec::new();
        loop {
            let mut h = Vec::new();
            if conn.read_until(b'\n', &mut h)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed in the head"));
            }
            let h = h.trim_ascii();
            if h.is_empty() {
                break;
            }
            if let Some(colon) = h.iter().position(|&b| b == b':') {
                let name = String::from_utf8_lossy(&h[..colon]).to_ascii_lowercase();
                headers.push((name, h[colon + 1..].trim_ascii().to_vec()));
            }
        }
        let mut r = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let len = r
            .header("content-length")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<usize>().ok())
            .ok_or_else(|| io::Error::other(format!("{status} without Content-Length")))?;
        let mut body = vec![0; len];
        conn.read_exact(&mut body)?;
        r.body = body;
        let close = r
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
        if close {
            self.conn = None;
        }
        Ok(r)
    }
}

// ---------------------------------------------------------------------------------------
// Targets

/// SplitMix64: a small seeded generator, so that a failing run can be replayed from its seed.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub(crate) fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }

    pub(crate) fn pick<'s, S: AsRef<str>>(&mut self, choices: &'s [S]) -> &'s str {
        choices[self.below(choices.len())].as_ref()
    }
}

/// Between path pieces of generated targets.
#[rustfmt::skip]
pub(crate) const SEPARATORS: &[&str] = &["/", "/", "/", "/", "/", "//", "%2F", "%2f", "\\", ";", "/./", "/../"];

/// Repeated 200 to 999 times for long paths (nginx's request line limit is 8 KB).
#[rustfmt::skip]
pub(crate) const LONG: &[&str] = &["a", "ab/", "%41", "../x/", "./", "é"];

#[rustfmt::skip]
pub(crate) const QUERIES: &[&str] = &[
    "", "a=1", "x=%00", "q=/../x", "a=1&b=%2F", "%zz", "?", "a=é", "x=..;/", "a=b=c&&", "%",
    "x=%2e%2e",
];

#[rustfmt::skip]
pub(crate) const FRAGMENTS: &[&str] = &["", "f", "/../x", "?q"];

// ---------------------------------------------------------------------------------------
// Recording upstreams

/// A loopback HTTP/1.1 server named after an upstream (an `upstream` block's name, or the
/// `host:port` of a `proxy_pass`): answers 200 with `X-Upstream: <name>`, the
/// `X-Oracle-Location` it received, and the request-target as the body; counts requests.
pub(crate) struct Recorder {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    seen: Arc<AtomicUsize>,
}

impl Recorder {
    pub(crate) fn start(name: &str) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a recording upstream");
        let addr = listener.local_addr().expect("its address");
        let seen = Arc::new(AtomicUsize::new(0));
        let (log, own) = (Arc::clone(&seen), name.to_string());
        // The threads end with the test process.
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (log, own) = (Arc::clone(&log), own.clone());
                thread::spawn(move || serve_upstream(&own, conn, &log));
            }
        });
        Recorder {
            name: name.to_string(),
            addr,
            seen,
        }
    }

    pub(crate) fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

fn serve_upstream(name: &str, conn: TcpStream, seen: &AtomicUsize) {
    let Ok(mut out) = conn.try_clone() else { return };
    let mut rd = BufReader::new(conn);
    loop {
        let mut line = Vec::new();
        if !matches!(rd.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            return;
        }
        // `GET <target> HTTP/1.1`: nginx never sends a raw space inside the target.
        let mut parts = line.trim_ascii().split(|&b| b == b' ');
        let (Some(_method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        let target = target.to_vec();
        let mut close = version == b"HTTP/1.0";
        let mut location = Vec::new();
        loop {
            let mut h = Vec::new();
            if !matches!(rd.read_until(b'\n', &mut h), Ok(n) if n > 0) {
                return;
            }
            let h = h.trim_ascii();
            if h.is_empty() {
                break;
            }
            let Some(colon) = h.iter().position(|&b| b == b':') else {
                continue;
            };
            let (key, value) = (&h[..colon], h[colon + 1..].trim_ascii());
            if key.eq_ignore_ascii_case(b"x-oracle-location") {
                location = value.to_vec();
            } else if key.eq_ignore_ascii_case(b"connection") && value.eq_ignore_ascii_case(b"close") {
                close = true;
            }
        }
        // nginx sends GET requests without a body.
        seen.fetch_add(1, Ordering::SeqCst);
        let head = format!(
            "HTTP/1.1 200 OK\r\nX-Upstream: {name}\r\nX-Oracle-Location: {}\r\nContent-Length: {}\r\n",
            String::from_utf8_lossy(&location),
            target.len()
        );
        let mut response = head.into_bytes();
        if close {
            response.extend_from_slice(b"Connection: close\r\n");
        }
        response.extend_from_slice(b"\r\n");
        response.extend_from_slice(&target);
        if out.write_all(&response).is_err() || close {
            return;
        }
    }
}
