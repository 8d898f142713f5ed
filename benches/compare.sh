#!/usr/bin/env bash
# One command for the side-by-side comparison with nginx and HAProxy (loopback only, about 8 minutes):
#   benches/compare.sh [--secs 5] [--rounds 2] [--cases h1,h2,gzip,handshake,ws,idle,sse,h1-log]
#                      [--peers nginx,haproxy] [--logging on|off] [--bare] [--reuseport on|off] [--serve]
# Needs Debian's nginx-light, wrk, nghttp2-client (h2load) and haproxy: compare.py checks them at
# start and names the packages to install (sudo apt-get install nginx-light wrk nghttp2-client haproxy).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --profile profiling -p gateway -p gateway-benches --bins
exec python3 benches/compare.py "$@"
