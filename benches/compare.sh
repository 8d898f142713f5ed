#!/usr/bin/env bash
# One command for the side-by-side comparison with nginx (loopback only, about 5 minutes):
#   benches/compare.sh [--secs 5] [--rounds 2] [--cases h1,h2,gzip,handshake,ws,idle,sse]
# Needs Debian's nginx-light, wrk and nghttp2-client (h2load); `.ci/run` installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --profile profiling -p gateway -p gateway-benches --bins
exec python3 benches/compare.py "$@"
