//! The nginx side of the oracle: recording upstreams, the nginx process and its
//! configuration, and a raw HTTP/1.1 client (see `nginx_oracle.rs`).

use super::*;

// ---------------------------------------------------------------------------------------
// Recording upstreams

/// A loopback HTTP/1.1 server named after an upstream: answers 200 with `X-Upstream`, the
/// `X-Oracle-Location` it received, and the request-target as the body; records the targets.
pub(crate) struct Recorder {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    pub(crate) fn start(name: &str) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a recording upstream");
        let addr = listener.local_addr().expect("its address");
        let seen = Arc::new(Mutex::new(Vec::new()));
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
        self.seen.lock().unwrap().len()
    }
}

pub(crate) fn serve_upstream(name: &str, conn: TcpStream, seen: &Mutex<Vec<Vec<u8>>>) {
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
        seen.lock().unwrap().push(target.clone());
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

// ---------------------------------------------------------------------------------------
// nginx

/// The configuration; `{DIR}`, `{TEMP_PATHS}`, `{UPSTREAMS}` and `{SERVERS}` are filled in.
/// One process in the foreground; upstream keep-alive everywhere (the reference speaks
/// HTTP/1.0 to `/docs/` and `/health`, which does not change the target) for speed.
pub(crate) const NGINX_CONF: &str = "\
daemon off;
master_process off;
worker_processes 1;
pid {DIR}/nginx.pid;
error_log {DIR}/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
{TEMP_PATHS}{UPSTREAMS}{SERVERS}}
";

pub(crate) const SERVER: &str = "    server {
        listen {LISTEN};
        server_name {HOST};
{LOCATIONS}    }
";

pub(crate) const LOCATION: &str = "        location {PATH} {
            proxy_pass {PASS};
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header X-Oracle-Location {ROUTE};
        }
";

pub(crate) fn nginx_conf(dir: &Path, port: u16, upstreams: &[Recorder], build: &str) -> String {
    let dir = dir.display().to_string();
    let mut temp_paths = format!("    client_body_temp_path {dir}/client_body_temp;\n");
    for m in ["proxy", "fastcgi", "uwsgi", "scgi"] {
        // A module left out of the build does not know its directive.
        if !build.contains(&format!("--without-http_{m}_module")) {
            temp_paths += &format!("    {m}_temp_path {dir}/{m}_temp;\n");
        }
    }
    let mut ups = String::new();
    for u in upstreams {
        ups += &format!("    upstream {} {{ server {}; keepalive 8; }}\n", u.name, u.addr);
    }
    let mut servers = server(port, REFERENCE_HOST, " default_server", false);
    servers += &server(port, NORMALIZED_HOST, "", true);
    NGINX_CONF
        .replace("{DIR}", &dir)
        .replace("{TEMP_PATHS}", &temp_paths)
        .replace("{UPSTREAMS}", &ups)
        .replace("{SERVERS}", &servers)
}

/// One `server` with the reference locations; `normalized` appends `/` to every `proxy_pass`
/// without URI part, so that nginx forwards its normalized `$uri` there too.
pub(crate) fn server(port: u16, host: &str, default: &str, normalized: bool) -> String {
    let mut locations = String::new();
    for l in super::locations() {
        let mut pass = l.proxy_pass.to_string();
        if normalized && l.uri_part().is_none() {
            pass.push('/');
        }
        locations += &LOCATION
            .replace("{PATH}", l.path)
            .replace("{PASS}", &pass)
            .replace("{ROUTE}", l.route);
    }
    SERVER
        .replace("{LISTEN}", &format!("127.0.0.1:{port}{default}"))
        .replace("{HOST}", host)
        .replace("{LOCATIONS}", &locations)
}

/// nginx in the foreground, one process, everything under a temporary directory; killed on drop.
pub(crate) struct NginxProcess {
    pub(crate) child: Child,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) port: u16,
    pub(crate) version: String,
}

impl NginxProcess {
    pub(crate) fn start(upstreams: &[Recorder]) -> NginxProcess {
        let bin = nginx_binary();
        let build = nginx_build(&bin);
        let version = build.lines().next().unwrap_or("nginx").trim().to_string();
        let mut last_error = String::new();
        // A free port can be taken between probing and nginx's bind: a few attempts.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("nginx-oracle-")
                .tempdir()
                .expect("a temporary directory for nginx");
            let port = free_port();
            let conf = dir.path().join("nginx.conf");
            let text = nginx_conf(dir.path(), port, upstreams, &build);
            std::fs::write(&conf, text).expect("write nginx.conf");
            let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr.log");
            let child = Command::new(&bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(conf)
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut nginx = NginxProcess {
                child,
                dir,
                port,
                version: version.clone(),
            };
            match nginx.wait_ready() {
                Ok(()) => return nginx,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Polls until nginx proxies a request to the frontend's upstream.
    pub(crate) fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("nginx exited at start ({status}):\n{}", self.logs()));
            }
            let mut probe = Client::new(self.addr());
            if let Ok(r) = probe.try_get(REFERENCE_HOST, "/") {
                if r.header("x-oracle-location") == Some(&b"frontend"[..]) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx did not answer on {} within 10 s:\n{}",
                    self.addr(),
                    self.logs()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!(
            "--- stderr\n{}--- error.log\n{}",
            read("stderr.log"),
            read("error.log")
        )
    }
}

impl Drop for NginxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
