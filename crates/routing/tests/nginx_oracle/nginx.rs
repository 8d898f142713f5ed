//! The nginx side of the oracle: the nginx process and its configuration (see
//! `nginx_oracle.rs`; the recording upstreams and the client are in `common.rs`).

use super::*;

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
