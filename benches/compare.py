#!/usr/bin/env python3
"""Side-by-side load comparison: the gateway against nginx, same routes, same certificate.

Started here, on loopback only:
  - a static upstream: nginx with 1 worker serving fixed files (/json: 44 bytes, /page.html: 48 KB);
  - a WebSocket echo and an SSE upstream (bench-tool);
  - the gateway (profiling build: release + line tables) and nginx as proxies, configured alike: same routes and
    security headers, gzip level 6, a keepalive upstream pool, TLS with one ECDSA P-256
    certificate, 2 workers / 2 threads each.

Rounds alternate (nginx, gateway, nginx, gateway...) and ratios are computed within this run.
Results: a table on stdout and JSON under target/bench/.

Usage: benches/compare.sh [--secs 5] [--rounds 2] [--cases h1,h2,gzip,handshake,ws,idle,sse] [--bare] [--reuseport on|off]
       benches/compare.sh --serve   (start both proxies and wait: profile them by hand)
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
    location / {{ default_type text/html; }}
  }}
}}
"""


def nginx_proxy_conf(tmp, port, up, ws, sse, cert, key):
    return f"""
worker_processes 2;
worker_rlimit_nofile 18000;
pid {tmp}/proxy.pid;
error_log {tmp}/proxy-error.log warn;
events {{ worker_connections 16000; }}
http {{
  access_log off;
  {nginx_temp(tmp, "px")}
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


def gateway_conf(tmp, port, up, ws, sse, cert, key, metrics, reuseport=None):
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
access_log = "off"
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
[[routes]]
prefix = "/ws/"
upstream = "ws"
read_timeout = "3600s"
[[routes]]
prefix = "/sse/"
upstream = "sse"
read_timeout = "3600s"
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


def run_h2load(url, secs, tmp):
    log = os.path.join(tmp, "h2load.log")
    cmd = ["h2load", "-c16", "-m16", "-t2", "-D", str(secs), f"--log-file={log}", url]
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cases", default="h1,h2,gzip,handshake,ws,idle,sse")
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
    cases = args.cases.split(",")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.mkdtemp(prefix="gateway-bench-")
    # nginx workers drop privileges (nobody) when started as root: keep the files readable.
    os.chmod(tmp, 0o755)
    os.makedirs(f"{tmp}/www", mode=0o755)
    with open(f"{tmp}/www/json", "wb") as f:
        f.write(JSON_BODY)
    html = big_html()
    with open(f"{tmp}/www/page.html", "w") as f:
        f.write(html)
    cert, key = f"{tmp}/cert.pem", f"{tmp}/key.pem"
    subprocess.run([args.tool, "cert", cert, key], check=True)

    up, ws, sse, pn, pg, metrics, pb = (free_port() for _ in range(7))
    procs = []

    def start(cmd, port, **kw):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/{os.path.basename(cmd[0])}-{port}.log", "w"), **kw)
        procs.append(p)
        wait_port(port)
        return p

    try:
        with open(f"{tmp}/upstream.conf", "w") as f:
            f.write(upstream_conf(tmp, up))
        start(["nginx", "-c", f"{tmp}/upstream.conf", "-p", tmp, "-g", "daemon off;"], up)
        start([args.tool, "ws-server", f"127.0.0.1:{ws}"], ws)
        start([args.tool, "sse-server", f"127.0.0.1:{sse}"], sse)
        with open(f"{tmp}/proxy.conf", "w") as f:
            f.write(nginx_proxy_conf(tmp, pn, up, ws, sse, cert, key))
        nginx = start(["nginx", "-c", f"{tmp}/proxy.conf", "-p", tmp, "-g", "daemon off;"], pn)
        with open(f"{tmp}/proxy.toml", "w") as f:
            f.write(gateway_conf(tmp, pg, up, ws, sse, cert, key, metrics, args.reuseport))
        gateway = start([args.gateway, "run", "--config", f"{tmp}/proxy.toml", "--run-dir", f"{tmp}/run"], pg)
        proxies = {"nginx": (nginx.pid, pn), "gateway": (gateway.pid, pg)}
        if args.bare:
            bare = start([os.path.join(os.path.dirname(args.tool), "bare-pingora"), f"127.0.0.1:{pb}",
                          f"127.0.0.1:{up}", cert, key], pb)
            proxies["bare"] = (bare.pid, pb)
        version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
        if args.serve:
            print(json.dumps({**{p: {"pid": pid, "port": port} for p, (pid, port) in proxies.items()},
                              "upstream": up, "metrics": metrics, "dir": tmp}), flush=True)
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
            return

        def measure(name, fn):
            order = ["nginx", "gateway"] + (["bare"] if "bare" in proxies and name in BARE_CASES else [])
            results = {p: [] for p in order}
            for rnd in range(args.rounds):
                for proxy in (order if rnd % 2 == 0 else order[::-1]):
                    pid, port = proxies[proxy]
                    cpu0 = cpu_seconds(pid)
                    t0 = time.time()
                    r = fn(port, pid)
                    r["wall_s"] = time.time() - t0
                    r["cpu_s"] = cpu_seconds(pid) - cpu0
                    r["rss_kb"] = rss_kb(pid)
                    results[proxy].append(r)
                    print(f"  {name:10} round {rnd + 1} {proxy:8} {json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()})}", file=sys.stderr)
            return results

        s = args.secs
        base = "https://127.0.0.1:{}"
        spec = {
            "h1": ("1: HTTP/1.1 TLS, 44 B JSON, 64 conns", lambda port, pid: run_wrk(base.format(port) + "/json", s, 64)),
            "h2": ("2: HTTP/2, 44 B JSON, 16 conns x 16 streams", lambda port, pid: run_h2load(base.format(port) + "/json", s, tmp)),
            "gzip": ("3: 48 KB HTML, Accept-Encoding: gzip", lambda port, pid: run_wrk(base.format(port) + "/page.html", s, 64, ["Accept-Encoding: gzip"])),
            "handshake": ("4: new TLS connection per request", lambda port, pid: run_wrk(base.format(port) + "/json", max(2, s // 2), 16, ["Connection: close"])),
            "ws": ("5: WebSocket echo, 64 conns", lambda port, pid: run_tool(args.tool, ["ws-load", f"127.0.0.1:{port}", "--conns", "64", "--secs", str(s)], s + 60)),
            "idle": (f"6: {args.idle_conns} idle keepalive TLS conns", lambda port, pid: case_idle(args.tool, port, pid, args.idle_conns)),
            "sse": ("7: SSE fan-out, 1000 streams", lambda port, pid: run_tool(args.tool, ["sse-load", f"127.0.0.1:{port}", "--conns", "1000", "--secs", str(s)], s + 60)),
        }
        # Warm both proxies (upstream pools, allocator) before measuring.
        for _, port in proxies.values():
            run_wrk(base.format(port) + "/json", 1, 16)
        report = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "nginx": version, "cpus": os.cpu_count(),
                  "secs": s, "rounds": args.rounds, "cases": {}}
        for c in cases:
            title, fn = spec[c]
            print(f"case {title}", file=sys.stderr)
            report["cases"][c] = {"title": title, "runs": measure(c, fn)}
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
BARE_CASES = ("h1", "h2", "handshake", "idle")


def print_table(report):
    cols = [("rate", "req/s (msg/s, ev/s)", True), ("p50_ms", "p50 ms", False), ("p99_ms", "p99 ms", False),
            ("cpu_s", "CPU s", False), ("per_cpu_s", "per CPU-s", True), ("rss_mb", "RSS MB", False),
            ("bytes_per_response", "bytes/resp", False), ("kb_per_conn", "KB/idle conn", False), ("errors", "errors", False)]
    print(f"\n{report['nginx']} vs gateway, {report['cpus']} CPUs, {report['rounds']} alternating rounds of {report['secs']} s, {report['date']}")
    for c, data in report["cases"].items():
        n = summarize(c, data["runs"]["nginx"])
        g = summarize(c, data["runs"]["gateway"])
        b = summarize(c, data["runs"]["bare"]) if data["runs"].get("bare") else None
        data["summary"] = {"nginx": n, "gateway": g, **({"bare": b} if b else {})}
        print(f"\n{data['title']}")
        extra = f" {'bare Pingora':>12} {'gateway/bare':>13}" if b else ""
        print(f"  {'metric':22} {'nginx':>12} {'gateway':>12} {'gateway/nginx':>14}{extra}")

        def ratio(x, y, key):
            r = (x[key] / y[key]) if y.get(key) and x.get(key) is not None else None
            return fmt(r, 2) + "x" if r else "-"

        for key, label, _higher in cols:
            if n.get(key) is None and g.get(key) is None:
                continue
            line = f"  {label:22} {fmt(n.get(key), 2):>12} {fmt(g.get(key), 2):>12} {ratio(g, n, key):>14}"
            if b:
                line += f" {fmt(b.get(key), 2):>12} {ratio(g, b, key):>13}"
            print(line)


if __name__ == "__main__":
    main()
