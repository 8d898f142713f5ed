#!/usr/bin/env bash
# Runs Pingora's own unit tests (`#[cfg(test)]` modules) of the vendored crates, for the modules
# the gateway patches, in a scratch workspace outside the gateway's: the vendored trees are
# copied there and the dev-dependencies those tests use are put back into their Cargo.toml
# (the vendored copies leave them out, patches/0001). Not part of ./test.sh or .ci/run by
# default: it builds pingora-core, -proxy, -runtime and -http a second time with extra
# dev-dependencies (vendor/README.md, "Pingora's unit tests").
#
#   vendor/test.sh            core, proxy, runtime and http
#   vendor/test.sh core       one of them (core, proxy, runtime, http)
#   vendor/test.sh --prepare  only write the scratch workspace (no cargo)
#
# Environment: GATEWAY_VENDOR_TEST_DIR (default target/vendor-test: the workspace and its
# target/, kept between runs so a second run only rebuilds what changed); CARGO_BUILD_JOBS.
set -euo pipefail

VENDOR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$VENDOR")"
DIR="${GATEWAY_VENDOR_TEST_DIR:-$ROOT/target/vendor-test}"
WS="$DIR/ws"

# The dev-dependencies the crates' unit tests use (grep of src/ for each published one);
# left out: criterion, hyper, hyper-util, http-body-util, hyperlocal, tikv-jemallocator
# (core: benches/examples/tests only), pingora-limits, pingora-load-balancing,
# pingora-prometheus, prometheus, reqwest, serde*, tokio-tungstenite, futures-util, httparse,
# hyper* (proxy: its tests/ and examples/ only).
declare -A DEV=(
    [pingora-core]="env_logger h2 reqwest rstest rustls tokio-stream"
    [pingora-proxy]="tokio-test"
    [pingora-runtime]=""
    [pingora-http]=""
)

# Tests that need the Internet (1.1.1.1, one.one.one.one) are skipped.
CORE_FILTERS=(protocols::http apps:: listeners::tls services:: server:: connectors::tests::test_connect_uds)
CORE_SKIP=(--skip test_connect_tls --skip test_connect_with_offload_timing)
# Tests of upstream behaviour a patch changes on purpose (PATCHED.md says why): patch 0015
# (refuse-unsafe-upstream-framing) answers 502 to an upstream response with Transfer-Encoding
# other than exactly `chunked`, several Transfer-Encoding fields, or TE with Content-Length,
# which these tests expect to be read leniently.
CORE_SKIP+=(--skip response_transfer_encoding_and_content_length_handling::case_3
    --skip response_transfer_encoding_and_content_length_handling::case_4
    --skip response_transfer_encoding_and_content_length_handling::case_7
    --skip response_transfer_encoding_and_content_length_handling::case_9
    --skip test_response_multiple_te_headers_chunked_not_last
    --skip test_response_multiple_transfer_encoding_headers)
# Their fixtures (tests/keys/server.crt, key.pem) are in Pingora's repository, not in the
# published crate.
CORE_SKIP+=(--skip test_from_server_config_handshake --skip test_handshake_complete_callback)

"$VENDOR/rebuild.sh" --check >&2

rm -rf "$WS"
mkdir -p "$WS"
for crate in pingora-core pingora-proxy pingora-runtime pingora-http; do
    mkdir -p "$WS/$crate"
    (cd "$VENDOR/$crate" && tar --exclude=./patches -cf - .) | (cd "$WS/$crate" && tar -xf -)
    "$VENDOR/rebuild.sh" --unpack "$crate" "$DIR/published-$crate.tmp"
    # Append the published [dev-dependencies.X] / [target.*.dev-dependencies.X] tables named in DEV.
    python3 - "$DIR/published-$crate.tmp/Cargo.toml" "$WS/$crate/Cargo.toml" ${DEV[$crate]} <<'EOF'
import re, sys
published, vendored, keep = sys.argv[1], sys.argv[2], set(sys.argv[3:])
tables, cur = [], None
for line in open(published).read().split("\n"):
    m = re.match(r'^\[(?:target\."[^"]+"\.)?dev-dependencies\.([A-Za-z0-9_-]+)\]$', line)
    if m:
        cur = [line] if m.group(1) in keep else None
        if cur is not None:
            tables.append(cur)
    elif line.startswith("["):
        cur = None
    elif cur is not None:
        cur.append(line)
found = {re.search(r'dev-dependencies\.([A-Za-z0-9_-]+)', t[0]).group(1) for t in tables}
missing = keep - found
if missing:
    sys.exit(f"vendor/test.sh: {published} has no dev-dependency {sorted(missing)}")
with open(vendored, "a") as f:
    f.write("\n# vendor/test.sh: the published crate's dev-dependencies its unit tests use\n")
    for t in tables:
        f.write("\n".join(t).rstrip("\n") + "\n\n")
EOF
    rm -rf "$DIR/published-$crate.tmp"
done
cat >"$WS/Cargo.toml" <<'EOF'
# Written by vendor/test.sh: the vendored Pingora crates with their unit tests' dev-dependencies.
[workspace]
members = ["pingora-core", "pingora-proxy", "pingora-runtime", "pingora-http"]
resolver = "2"

[patch.crates-io]
pingora-core = { path = "pingora-core" }
pingora-proxy = { path = "pingora-proxy" }
pingora-runtime = { path = "pingora-runtime" }
pingora-http = { path = "pingora-http" }
EOF
# The gateway's rustls (vendor/rustls: release_empty_buffers, used by pingora-core's patch 0022).
echo "rustls = { path = \"$ROOT/vendor/rustls\" }" >>"$WS/Cargo.toml"
# The gateway's versions of everything shared; cargo adds the dev-dependencies.
cp "$ROOT/Cargo.lock" "$WS/Cargo.lock"

if [[ ${1:-} == --prepare ]]; then
    echo "vendor/test.sh: workspace ready in $WS" >&2
    exit 0
fi
export CARGO_TARGET_DIR="$DIR/target"
run() { echo "+ $*" >&2; (cd "$WS" && "$@"); }
status=0
for which in "${@:-core proxy runtime http}"; do
    for w in $which; do
        case "$w" in
            core) run cargo test -p pingora-core --no-default-features --features rustls --lib -- \
                "${CORE_FILTERS[@]}" "${CORE_SKIP[@]}" || status=1 ;;
            proxy) run cargo test -p pingora-proxy --no-default-features --features rustls --lib || status=1 ;;
            runtime) run cargo test -p pingora-runtime --lib || status=1 ;;
            http) run cargo test -p pingora-http --lib || status=1 ;;
            *) echo "vendor/test.sh: unknown crate $w (core, proxy, runtime, http)" >&2; exit 2 ;;
        esac
    done
done
exit $status
