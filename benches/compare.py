#!/usr/bin/env python3
"""Side-by-side load comparison: the gateway against nginx and HAProxy, same routes, same certificate.

Started here, on loopback only:
  - a static upstream: nginx with 1 worker serving fixed files (/json: 44 bytes, /page.html: 48 KB);
  - a WebSocket echo and an SSE upstream (bench-tool);
  - the gateway (profiling build: release + line tables), nginx and HAProxy as proxies,
    configured alike: same routes and security headers, gzip level 6 (HAProxy: what its build
    has, see haproxy_gzip_note), a keepalive upstream pool, TLS with one ECDSA P-256
    certificate, ALPN h2 and http/1.1, 2 workers / 2 threads each, access logs off.
  - for case h1-log (or --logging on), a second set of the same proxies that write one
    combined-format access line per request to a file.

Rounds alternate (nginx, haproxy, gateway, gateway, haproxy, nginx...) and ratios are
computed within this run. Results: a table on stdout and JSON under target/bench/.

Usage: benches/compare.sh [--secs 5] [--rounds 2] [--cases h1,h2,h2-t1,gzip,handshake,resume,resume12,ws,idle,sse,h1-log]
                          [--peers nginx,haproxy] [--logging on|off] [--bare] [--reuseport on|off]
       benches/compare.sh --serve   (start the proxies and wait: profile them by hand)
Needs Debian's nginx-light, wrk, nghttp2-client (h2load) and haproxy; checked at start.
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK = os.sysconf("SC_CLK_TCK")
JSON_BODY = b'{"status":"ok","service":"api","n":42,"x":1}'
assert len(JSON_BODY) == 44


# Debian packages of the programs started here (checked at start, installed by hand).
PACKAGES = {"nginx": "nginx-light", "wrk": "wrk", "h2load": "nghttp2-client", "haproxy": "haproxy"}


def find_program(name):
    """Full path of an installed program; nginx and haproxy live in /usr/sbin, not always on PATH."""
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")


def check_programs(names):
    """Exits with the Debian packages to install when one of `names` is missing."""
    paths = {n: find_program(n) for n in names}
    missing = [n for n, p in paths.items() if not p]
    if missing:
        raise SystemExit(
            f"benches/compare.py: not installed: {', '.join(missing)}. Install the Debian packages "
            f"{' '.join(PACKAGES[n] for n in missing)} (everything the comparison needs: "
            f"sudo apt-get install {' '.join(PACKAGES.values())})")
    return paths


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {timeout}s")


def descendants(pid):
    """pid and every process below it (nginx master + workers)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(d))
            except OSError:
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid):
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total / CLK


def rss_kb(pid):
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def big_html():
    parts = ["<!doctype html><html><head><title>bench</title></head><body>\n"]
    i, size = 0, len(parts[0])
    while size < 48 * 1024 - 32:
        row = f'<div class="row r{i % 7}"><span>item {i}</span><a href="/items/{i}">details</a></div>\n'
        parts.append(row)
        size += len(row)
        i += 1
    parts.append("</body></html>\n")
    return "".join(parts)


TYPES = ("text/plain text/css text/xml application/json application/javascript application/xml "
         "application/xml+rss text/javascript application/x-font-ttf font/opentype image/svg+xml")


def nginx_temp(tmp, name):
    return "\n".join(f"{k}_temp_path {tmp}/{name}-{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


def upstream_conf(tmp, port):
    return f"""
worker_processes 1;
pid {tmp}/upstream.pid;
error_log {tmp}/upstream-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  {nginx_temp(tmp, "up")}
  keepalive_requests 1000000;
  keepalive_timeout 120;
  server {{
    listen 127.0.0.1:{port};
    root {tmp}/www;
    location = /json {{ default_type application/json; }}
    location = /auth/json {{ default_type application/json; }}
    location / {{ default_type text/html; }}
  }}
}}
"""


def nginx_proxy_conf(tmp, port, up, ws, sse, cert, key, name="proxy", access_log=None):
    """`access_log`: a file for one `combined` line per request (as the reference nginx.conf
    logs, unbuffered: one write per request), or None for `access_log off`."""
    log = f"access_log {access_log} combined;" if access_log else "access_log off;"
    return f"""
worker_processes 2;
worker_rlimit_nofile 18000;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 16000; }}
http {{
  {log}
  {nginx_temp(tmp, name)}
  gzip on; gzip_vary on; gzip_proxied any; gzip_comp_level 6; gzip_min_length 256;
  gzip_types {TYPES};
  client_max_body_size 500M;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  upstream static {{ server 127.0.0.1:{up}; keepalive 32; }}
  upstream ws {{ server 127.0.0.1:{ws}; keepalive 16; }}
  upstream sse {{ server 127.0.0.1:{sse}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 1d;
    add_header X-Frame-Options "SAMEORIGIN" always;
    add_header X-Content-Type-Options "nosniff" always;
    add_header X-XSS-Protection "1; mode=block" always;
    location / {{
      proxy_pass http://static;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }}
    location /ws/ {{
      proxy_pass http://ws;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_read_timeout 3600s;
    }}
    location /sse/ {{
      proxy_pass http://sse;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_buffering off;
      proxy_read_timeout 3600s;
    }}
  }}
}}
"""


def haproxy_conf(port, up, ws, sse, pem, access_log=False):
    """HAProxy configured like nginx above: 2 threads, one ECDSA certificate, ALPN h2 and
    http/1.1, TLS 1.2+ with nginx's TLS 1.2 ciphers, keep-alive upstream connections shared
    between clients (`http-reuse always`, up to 64 idle = nginx's 2 workers x keepalive 32),
    the same request and security response headers, gzip on the same types, nginx's default
    timeouts. HAProxy cannot write a log file itself: with `access_log` it logs one
    combined-format line per request to stdout (`log stdout format raw`, one write per line,
    like nginx's unbuffered access_log), and compare.py points stdout at a file; a UDP target
    would need a syslog receiver whose CPU the comparison would not count. (Its %B counts
    the response headers too; nginx's $body_bytes_sent and the gateway count the body.)"""
    types = " ".join(["text/html"] + TYPES.split())
    glog = "  log stdout format raw local0" if access_log else ""
    flog = ("""  log global
  option dontlognull
  capture request header Referer len 128
  capture request header User-Agent len 128
  log-format "%ci - - [%trl] %{+Q}r %ST %B %{+Q}[capture.req.hdr(0)] %{+Q}[capture.req.hdr(1)]"
""" if access_log else "  no log\n")
    return f"""
global
  nbthread 2
  maxconn 16000
  # HAProxy wants 2 fds per connection (client + server) and by default refuses to start when
  # it cannot raise the fd limit to that (32k); nginx above has 16000 connections per worker
  # on 18000 fds. The idle case needs 10,000 client fds only.
  no strict-limits
{glog}
  # gzip level; HAProxy built with libslz (Debian's) has one fixed level whatever this says.
  tune.comp.maxlevel 6
  tune.ssl.cachesize 40000
  ssl-default-bind-ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384
  ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 60s
  timeout client 60s
  timeout server 60s
  timeout http-request 60s
  timeout http-keep-alive 65s
  timeout tunnel 3600s

frontend https
  bind 127.0.0.1:{port} ssl crt {pem} alpn h2,http/1.1
  maxconn 16000
{flog}
  option forwardfor
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-Proto https
  http-response set-header X-Frame-Options SAMEORIGIN
  http-response set-header X-Content-Type-Options nosniff
  http-response set-header X-XSS-Protection "1; mode=block"
  # HAProxy 2.6 has no minimum length (nginx: gzip_min_length 256); only case 3 asks for gzip.
  compression algo gzip
  compression type {types}
  use_backend ws if {{ path_beg /ws/ }}
  use_backend sse if {{ path_beg /sse/ }}
  default_backend static

backend static
  server static 127.0.0.1:{up} pool-max-conn 64

backend ws
  timeout server 3600s
  server ws 127.0.0.1:{ws} pool-max-conn 32

backend sse
  timeout server 3600s
  server sse 127.0.0.1:{sse} pool-max-conn 32
"""


def haproxy_gzip_note(haproxy):
    """Why HAProxy's gzip is not comparable with level 6 elsewhere, or None when it is."""
    vv = subprocess.run([haproxy, "-vv"], capture_output=True, text=True).stdout
    if "+SLZ" in vv or "libslz" in vv:
        return ("HAProxy is built with libslz: one fixed gzip level (size close to zlib level 1), "
                "not level 6 as nginx and the gateway; compare bytes/resp too")
    return None  # zlib: tune.comp.maxlevel 6 = gzip_comp_level 6


def gateway_conf(tmp, port, up, ws, sse, cert, key, metrics, reuseport=None, access_log=False, auth=True):
    reuse = "" if reuseport is None else f"reuseport = {'true' if reuseport == 'on' else 'false'}\n"
    types = ", ".join(f'"{t}"' for t in ["text/html"] + TYPES.split())
    return f"""
[listen]
https = "127.0.0.1:{port}"
http = "off"
metrics = "127.0.0.1:{metrics}"
[server]
threads = 2
{reuse}grace_period = "1s"
watch_config = false
[tls]
[[tls.certificates]]
name = "bench"
cert = "{cert}"
key = "{key}"
[limits]
keepalive_timeout = "65s"
[compression]
algorithms = ["gzip"]
level = 6
min_length = 256
types = [{types}]
[logging]
access_log = "{'combined' if access_log else 'off'}"
level = "warn"
[upstreams.static]
address = "127.0.0.1:{up}"
keepalive = 32
[upstreams.ws]
address = "127.0.0.1:{ws}"
keepalive = 16
[upstreams.sse]
address = "127.0.0.1:{sse}"
keepalive = 16
[[routes]]
prefix = "/"
upstream = "static"
websocket = false
{AUTH_ROUTE if auth else ""}[[routes]]
prefix = "/ws/"
upstream = "ws"
read_timeout = "3600s"
[[routes]]
prefix = "/sse/"
upstream = "sse"
read_timeout = "3600s"
"""


# `htpasswd -nbB -C 4 bench bench`; case 1A sends `Authorization: Basic YmVuY2g6YmVuY2g=`.
BENCH_USER = "bench:$2y$04$dY8seDjcu1D9Pj6wfIfndOqeH34nzSlH.8dHGaWGJ8fJyNpuMEkUO"
# Case 1A: the same file behind basic auth (a cached credential after the first request).
# Only with that case: a gateway built before policies existed refuses the section.
AUTH_ROUTE = f"""[policies.bench]
basic_auth = {{ realm = "bench", users = ["{BENCH_USER}"] }}
[[routes]]
prefix = "/auth/"
upstream = "static"
websocket = false
policies = ["bench"]
"""


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url, secs, conns, headers=()):
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "--latency", "--timeout", "10s"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=secs + 60).stdout
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    for p in ("50", "99"):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        r[f"p{p}_ms"] = to_ms(*m.groups()) if m else None
    m = re.search(r"(\d+) requests in [\d.]+\w+, ([\d.]+)(B|KB|MB|GB) read", out)
    if m:
        n = int(m.group(1))
        mult = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[m.group(3)]
        r["requests"] = n
        r["bytes_per_response"] = float(m.group(2)) * mult / max(n, 1)
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += int(m.group(1)) + int(m.group(3)) + int(m.group(4))
    r["errors"] = errors
    return r


def run_h2load(url, secs, tmp, threads=2):
    log = os.path.join(tmp, "h2load.log")
    cmd = ["h2load", "-c16", "-m16", f"-t{threads}", "-D", str(secs), f"--log-file={log}", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60).stdout
    r = {}
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    r["errors"] = (int(m.group(2)) + int(m.group(3))) if m else -1
    durations = []
    try:
        with open(log) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    durations.append(int(parts[2]))
        os.remove(log)
    except OSError:
        pass
    durations.sort()
    if durations:
        r["p50_ms"] = durations[len(durations) // 2] / 1000
        r["p99_ms"] = durations[int(len(durations) * 0.99)] / 1000
    return r


def run_tool(tool, args, timeout):
    out = subprocess.run([tool] + args, capture_output=True, text=True, timeout=timeout).stdout.strip()
    return json.loads(out.splitlines()[-1]) if out else {}


def case_idle(tool, port, pid, conns):
    before = rss_kb(pid)
    p = subprocess.Popen([tool, "idle", f"127.0.0.1:{port}", "--conns", str(conns)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    info = json.loads(line) if line else {"open": 0, "failed": conns}
    time.sleep(0.5)  # let allocator statistics settle after the burst
    after = rss_kb(pid)
    p.stdin.close()
    p.wait(timeout=60)
    opened = max(info.get("open", 0), 1)
    return {"open": info.get("open", 0), "errors": info.get("failed", 0),
            "rss_before_kb": before, "rss_after_kb": after,
            "kb_per_conn": (after - before) / opened}


# The proxies the gateway is compared with (--peers), and the cases that need bench-tool.
PEERS = ("nginx", "haproxy")
TOOL_CASES = ("ws", "idle", "sse", "resume", "resume12")
ALL_CASES = ("h1", "h1-auth", "h2", "h2-t1", "gzip", "handshake", "resume", "resume12", "ws", "idle", "sse", "h1-log")


def count_lines(path, offset):
    n = 0
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cases", default=",".join(ALL_CASES),
                    help="comma-separated, from " + ",".join(ALL_CASES) + " (default: all); "
                         "h1-log is h1 with every proxy writing an access log")
    ap.add_argument("--peers", default=",".join(PEERS),
                    help="the proxies the gateway is compared with: nginx, haproxy or both (default)")
    ap.add_argument("--logging", choices=["on", "off"], default="off",
                    help="access logs (one combined line per request, to a file) in every case; "
                         "default off, case h1-log logs either way")
    ap.add_argument("--gateway", default=os.path.join(ROOT, "target/profiling/gateway"))
    ap.add_argument("--tool", default=os.path.join(ROOT, "target/profiling/bench-tool"))
    ap.add_argument("--idle-conns", type=int, default=10000)
    ap.add_argument("--out", default=os.path.join(ROOT, "target/bench"))
    ap.add_argument("--bare", action="store_true",
                    help="also run Pingora's stock proxy (bare-pingora) on h1, h2, handshake and idle")
    ap.add_argument("--reuseport", choices=["on", "off"],
                    help="the gateway's [server] reuseport (default: the gateway's default, on)")
    ap.add_argument("--serve", action="store_true",
                    help="start everything, print the ports and pids, and wait (for profiling by hand)")
    args = ap.parse_args()
    # A plain `kill` (or the CI's timeout) still stops every process started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    cases = [c for c in args.cases.split(",") if c]
    if unknown := [c for c in cases if c not in ALL_CASES]:
        raise SystemExit(f"unknown case(s) {','.join(unknown)}; cases: {','.join(ALL_CASES)}")
    peers = [p for p in PEERS if p in args.peers.split(",")]
    if not peers or set(args.peers.split(",")) - set(PEERS):
        raise SystemExit(f"--peers: one or more of {','.join(PEERS)}, not {args.peers!r}")
    progs = check_programs(["nginx", "wrk", "h2load"] + (["haproxy"] if "haproxy" in peers else []))
    build = "cargo build --profile profiling -p gateway -p gateway-benches --bins (benches/compare.sh does)"
    if not os.path.exists(args.gateway):
        raise SystemExit(f"no gateway binary at {args.gateway}: {build}, or pass --gateway")
    have_tool = os.path.exists(args.tool)
    if not have_tool and (need := [c for c in cases if c in TOOL_CASES and not args.serve] + (["--bare"] if args.bare else [])):
        raise SystemExit(f"no bench-tool at {args.tool} (needed by {', '.join(need)}): {build}, "
                         f"or pass --tool, or run only h1,h2,gzip,handshake,h1-log")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.mkdtemp(prefix="gateway-bench-")
    # nginx workers drop privileges (nobody) when started as root: keep the files readable.
    os.chmod(tmp, 0o755)
    os.makedirs(f"{tmp}/www", mode=0o755)
    with open(f"{tmp}/www/json", "wb") as f:
        f.write(JSON_BODY)
    os.makedirs(f"{tmp}/www/auth", exist_ok=True)
    with open(f"{tmp}/www/auth/json", "wb") as f:
        f.write(JSON_BODY)
    html = big_html()
    with open(f"{tmp}/www/page.html", "w") as f:
        f.write(html)
    cert, key = f"{tmp}/cert.pem", f"{tmp}/key.pem"
    if have_tool:
        subprocess.run([args.tool, "cert", cert, key], check=True)
    else:
        # The same kind of certificate as bench-tool's (ECDSA P-256 for localhost).
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    # HAProxy takes the certificate and its key in one file.
    pem = f"{tmp}/haproxy.pem"
    with open(pem, "w") as f:
        f.write(open(cert).read() + open(key).read())

    up, ws, sse = (free_port() for _ in range(3))
    procs = []

    def start(cmd, port, stdout=None):
        out = open(stdout, "ab") if stdout else subprocess.DEVNULL
        p = subprocess.Popen(cmd, stdout=out, stderr=open(f"{tmp}/{os.path.basename(cmd[0])}-{port}.log", "w"))
        procs.append(p)
        wait_port(port)
        return p

    def start_proxies(logs):
        """The proxies, each with access logs on (`logs`) or off: name -> (pid, port, log file)."""
        sfx = "-log" if logs else ""
        out = {}
        for name in peers + ["gateway"] + (["bare"] if args.bare and not logs else []):
            port = free_port()
            log = f"{tmp}/{name}{sfx}-access.log" if logs else None
            if name == "nginx":
                with open(f"{tmp}/nginx{sfx}.conf", "w") as f:
                    f.write(nginx_proxy_conf(tmp, port, up, ws, sse, cert, key, f"proxy{sfx}", log))
                p = start([progs["nginx"], "-c", f"{tmp}/nginx{sfx}.conf", "-p", tmp, "-g", "daemon off;"], port)
            elif name == "haproxy":
                with open(f"{tmp}/haproxy{sfx}.cfg", "w") as f:
                    f.write(haproxy_conf(port, up, ws, sse, pem, bool(logs)))
                p = start([progs["haproxy"], "-db", "-f", f"{tmp}/haproxy{sfx}.cfg"], port, stdout=log)
            elif name == "gateway":
                with open(f"{tmp}/proxy{sfx}.toml", "w") as f:
                    f.write(gateway_conf(tmp, port, up, ws, sse, cert, key, free_port(), args.reuseport, bool(logs), "h1-auth" in cases))
                p = start([args.gateway, "run", "--config", f"{tmp}/proxy{sfx}.toml", "--run-dir", f"{tmp}/run{sfx}"],
                          port, stdout=log)
            else:
                p = start([os.path.join(os.path.dirname(args.tool), "bare-pingora"), f"127.0.0.1:{port}",
                           f"127.0.0.1:{up}", cert, key], port)
            out[name] = (p.pid, port, log)
        return out

    try:
        with open(f"{tmp}/upstream.conf", "w") as f:
            f.write(upstream_conf(tmp, up))
        start([progs["nginx"], "-c", f"{tmp}/upstream.conf", "-p", tmp, "-g", "daemon off;"], up)
        if have_tool:
            start([args.tool, "ws-server", f"127.0.0.1:{ws}"], ws)
            start([args.tool, "sse-server", f"127.0.0.1:{sse}"], sse)
        # One set of proxies with access logs off, one with them on, as the cases need.
        logs_on = args.logging == "on"
        needed = {logs_on} if args.serve else {logs_on or c == "h1-log" for c in cases}
        sets = {logs: start_proxies(logs) for logs in sorted(needed)}
        versions = {"nginx": subprocess.run([progs["nginx"], "-v"], capture_output=True, text=True).stderr.strip()}
        not_comparable = {}
        if "haproxy" in peers:
            v = subprocess.run([progs["haproxy"], "-v"], capture_output=True, text=True).stdout.split()
            versions["haproxy"] = f"HAProxy {v[2]}" if len(v) > 2 else "HAProxy"
            if note := haproxy_gzip_note(progs["haproxy"]):
                not_comparable["gzip"] = {"haproxy": note}
        if args.serve:
            print(json.dumps({**{p: {"pid": pid, "port": port, "access_log": log}
                                 for p, (pid, port, log) in sets[logs_on].items()},
                              "upstream": up, "dir": tmp}), flush=True)
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
            return

        def measure(name, fn):
            proxies = sets[logs_on or name == "h1-log"]
            order = [p for p in proxies if p != "bare" or name in BARE_CASES]
            results = {p: [] for p in order}
            for rnd in range(args.rounds):
                for proxy in (order if rnd % 2 == 0 else order[::-1]):
                    pid, port, log = proxies[proxy]
                    offset = os.path.getsize(log) if log else 0
                    cpu0 = cpu_seconds(pid)
                    t0 = time.time()
                    r = fn(port, pid)
                    r["wall_s"] = time.time() - t0
                    if log:
                        time.sleep(0.3)  # the gateway writes its access log from a queue
                        r["log_lines"] = count_lines(log, offset)
                    r["cpu_s"] = cpu_seconds(pid) - cpu0
                    r["rss_kb"] = rss_kb(pid)
                    results[proxy].append(r)
                    print(f"  {name:10} round {rnd + 1} {proxy:8} {json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()})}", file=sys.stderr)
            return results

        s = args.secs
        base = "https://127.0.0.1:{}"
        spec = {
            "h1": ("1: HTTP/1.1 TLS, 44 B JSON, 64 conns", lambda port, pid: run_wrk(base.format(port) + "/json", s, 64)),
            "h1-auth": ("1A: as 1, on a route with basic auth (bcrypt, cached after the first request); peers proxy it without auth",
                        lambda port, pid: run_wrk(base.format(port) + "/auth/json", s, 64, ["Authorization: Basic YmVuY2g6YmVuY2g="])),
            "h2": ("2: HTTP/2, 44 B JSON, 16 conns x 16 streams", lambda port, pid: run_h2load(base.format(port) + "/json", s, tmp)),
            # One h2load thread: it saturates first, so the proxies get a lighter load that
            # batches less (the cost per request, not the peak).
            "h2-t1": ("2L: as 2, lighter offered load (h2load -t1)", lambda port, pid: run_h2load(base.format(port) + "/json", s, tmp, 1)),
            "gzip": ("3: 48 KB HTML, Accept-Encoding: gzip", lambda port, pid: run_wrk(base.format(port) + "/page.html", s, 64, ["Accept-Encoding: gzip"])),
            "handshake": ("4: new TLS connection per request", lambda port, pid: run_wrk(base.format(port) + "/json", max(2, s // 2), 16, ["Connection: close"])),
            "resume": ("4R: 5,000 returning clients, new TLS 1.3 connection per request (resumed)",
                       lambda port, pid: run_tool(args.tool, ["resume-load", f"127.0.0.1:{port}", "--clients", "5000",
                                                              "--secs", str(s)], s + 120)),
            "resume12": ("4R12: same, TLS 1.2 (session cache or tickets)",
                         lambda port, pid: run_tool(args.tool, ["resume-load", f"127.0.0.1:{port}", "--clients", "5000",
                                                                "--secs", str(s), "--tls12"], s + 120)),
            "ws": ("5: WebSocket echo, 64 conns", lambda port, pid: run_tool(args.tool, ["ws-load", f"127.0.0.1:{port}", "--conns", "64", "--secs", str(s)], s + 60)),
            "idle": (f"6: {args.idle_conns} idle keepalive TLS conns", lambda port, pid: case_idle(args.tool, port, pid, args.idle_conns)),
            "sse": ("7: SSE fan-out, 1000 streams", lambda port, pid: run_tool(args.tool, ["sse-load", f"127.0.0.1:{port}", "--conns", "1000", "--secs", str(s)], s + 60)),
            "h1-log": ("1L: HTTP/1.1 TLS, 44 B JSON, 64 conns, access log on (one combined line per request to a file)",
                       lambda port, pid: run_wrk(base.format(port) + "/json", s, 64)),
        }
        # Warm every proxy (upstream pools, allocator) before measuring.
        for proxies in sets.values():
            for _, port, _ in proxies.values():
                run_wrk(base.format(port) + "/json", 1, 16)
        report = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "nginx": versions["nginx"], "versions": versions,
                  "peers": peers, "logging": args.logging, "cpus": os.cpu_count(),
                  "secs": s, "rounds": args.rounds, "cases": {}}
        for c in cases:
            title, fn = spec[c]
            print(f"case {title}", file=sys.stderr)
            report["cases"][c] = {"title": title, "runs": measure(c, fn)}
            if c in not_comparable:
                report["cases"][c]["not_comparable"] = not_comparable[c]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    print_table(report)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"compare-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out, "compare-latest.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nJSON: {path}")


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def summarize(c, runs):
    """One row of numbers per proxy: throughput, latency, CPU, memory."""
    rate_key = {"ws": "rate", "sse": "rate"}.get(c, "rps")
    rate = mean([r.get(rate_key) for r in runs])
    cpu = mean([r.get("cpu_s") for r in runs])
    wall = mean([r.get("wall_s") for r in runs])
    done = mean([(r.get(rate_key) or 0) * r.get("wall_s", 0) for r in runs]) if c not in ("idle",) else None
    row = {
        "rate": rate,
        "p50_ms": mean([r.get("p50_ms") or (r.get("p50_us") / 1000 if r.get("p50_us") else None) for r in runs]),
        "p99_ms": mean([r.get("p99_ms") or (r.get("p99_us") / 1000 if r.get("p99_us") else None) for r in runs]),
        "cpu_s": cpu,
        "per_cpu_s": (done / cpu) if done and cpu else None,
        "rss_mb": mean([r.get("rss_kb") for r in runs]) / 1024,
        "errors": sum(r.get("errors", 0) or 0 for r in runs),
    }
    if c == "gzip":
        row["bytes_per_response"] = mean([r.get("bytes_per_response") for r in runs])
    if any(r.get("resumed") is not None for r in runs):
        row["resumed"] = mean([r.get("resumed") for r in runs])
    if any(r.get("log_lines") is not None for r in runs):
        lines = sum(r.get("log_lines") or 0 for r in runs)
        reqs = sum(r.get("requests") or 0 for r in runs)
        row["log_lines_per_request"] = lines / reqs if reqs else None
    if c == "idle":
        row["kb_per_conn"] = mean([r.get("kb_per_conn") for r in runs])
        row["rate"] = None
    _ = wall
    return row


def fmt(v, digits=1):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


# Cases the stock proxy can serve: it sends every path to the static upstream, without gzip.
BARE_CASES = ("h1", "h2", "h2-t1", "handshake", "resume", "resume12", "idle")
LABELS = {"nginx": "nginx", "haproxy": "HAProxy", "gateway": "gateway", "bare": "bare Pingora"}


def print_table(report):
    """Prints one table per case and adds `summary` and `ratios` (gateway / each other proxy)
    to the report. A proxy that did not run a case shows "-"; "n/c" marks a ratio that does
    not compare like with like (the case's `not_comparable` says why)."""
    cols = [("rate", "req/s (msg/s, ev/s)", True), ("p50_ms", "p50 ms", False), ("p99_ms", "p99 ms", False),
            ("cpu_s", "CPU s", False), ("per_cpu_s", "per CPU-s", True), ("rss_mb", "RSS MB", False),
            ("bytes_per_response", "bytes/resp", False), ("resumed", "resumed (fraction)", True),
            ("kb_per_conn", "KB/idle conn", False),
            ("log_lines_per_request", "log lines/request", False), ("errors", "errors", False)]
    peers = report.get("peers", ["nginx"])
    versions = report.get("versions", {"nginx": report["nginx"]})
    names = peers + ["gateway"]
    if any(d["runs"].get("bare") for d in report["cases"].values()):
        names.append("bare")
    refs = [p for p in names if p != "gateway"]
    logs = ", access logs on" if report.get("logging") == "on" else ""
    print(f"\n{', '.join(versions[p] for p in peers)} vs gateway, {report['cpus']} CPUs, {report['rounds']} "
          f"alternating rounds of {report['secs']} s{logs}, {report['date']}")

    def ratio(x, y, key):
        return (x[key] / y[key]) if x and y and y.get(key) and x.get(key) is not None else None

    for c, data in report["cases"].items():
        rows = {p: summarize(c, data["runs"][p]) for p in names if data["runs"].get(p)}
        nc = data.get("not_comparable", {})
        data["summary"] = rows
        data["ratios"] = {f"gateway/{p}": {k: ratio(rows.get("gateway"), rows[p], k) for k, _, _ in cols}
                          for p in refs if p in rows}
        print(f"\n{data['title']}")
        print(f"  {'metric':22}" + "".join(f" {LABELS[p]:>12}" for p in names)
              + "".join(f" {'gateway/' + p:>15}" for p in refs))
        for key, label, _higher in cols:
            if all(r.get(key) is None for r in rows.values()):
                continue
            line = f"  {label:22}" + "".join(f" {fmt(rows[p].get(key), 2) if p in rows else '-':>12}" for p in names)
            for p in refs:
                r = ratio(rows.get("gateway"), rows.get(p), key)
                line += f" {'n/c' if p in nc and r else (fmt(r, 2) + 'x' if r else '-'):>15}"
            print(line)
        for p, why in nc.items():
            print(f"  n/c: {LABELS[p]}: {why}")



if __name__ == "__main__":
    main()
