#!/usr/bin/env bash
# Runs every test of the workspace, as CI does (`.ci/run` calls this after fmt and clippy).
#
# The integration tests start real programs on loopback: Pebble (an ACME CA) and its
# challenge server, BIND (`named`, the authoritative DNS server of the DNS-01 tests, and
# `nsupdate`), Prometheus and promtool, nginx (the routing oracle), openssl and
# fail2ban-regex (its shipped nginx filters read the access log), python3 with venv (moto,
# the local S3 server, installed from PyPI by the tests), g++ and make (n8n's sqlite3 driver,
# built with node-gyp). This
# script installs the Debian packages that provide the missing ones (with sudo when not
# root), then runs `cargo test --workspace`; extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")"

# program -> Debian package
tools=(
    "pebble pebble"
    "pebble-challtestsrv pebble"
    "prometheus prometheus"
    "promtool prometheus"
    "nginx nginx-light"
    "openssl openssl"
    "fail2ban-regex fail2ban"
    "systemd-analyze systemd"
    "systemd-sysusers systemd"
    "setpriv util-linux"
    "named bind9"
    "nsupdate bind9-dnsutils"
    "node nodejs"
    "npm npm"
    "python3 python3"
    "g++ g++"
    "make make"
)
missing=()
for entry in "${tools[@]}"; do
    read -r program package <<<"$entry"
    if ! command -v "$program" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$program" ]; then
        case " ${missing[*]-} " in *" $package "*) ;; *) missing+=("$package") ;; esac
    fi
done

# moto (the local S3 server of the object-storage tests) is installed by the tests with
# pip into a virtual environment: Debian's python3 needs python3-venv for that.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=("python3-venv")
fi

if [ "${#missing[@]}" -gt 0 ]; then
    echo "test.sh: installing the Debian packages the tests use: ${missing[*]}" >&2
    if [ "$(id -u)" = 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "test.sh: not root and no sudo: install them first: apt-get install ${missing[*]}" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: no apt-get here: install these Debian packages (or their equivalents) first: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" ca-certificates >/dev/null
fi

exec cargo test --workspace "$@"
