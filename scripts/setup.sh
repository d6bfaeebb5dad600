#!/usr/bin/env bash
# Installs everything the build and the tests need on a fresh Debian 12 machine.
# Idempotent: safe to run again. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(
  build-essential pkg-config clang libclang-rt-14-dev
  libcmocka-dev          # C test framework
  libpcre2-dev           # pre-tokenizer regexes (UTF + UCP + JIT)
  libutf8proc-dev        # NFC normalization, Unicode categories
  libjansson-dev         # JSON
  libmicrohttpd-dev      # HTTP server
  libopenblas-dev        # float GEMM on the CPU backend
  libcurl4-openssl-dev   # bench client
  python3 python3-pip python3-jinja2
)

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Test-only Python packages (never used by the server itself).
PY=${PYTHON:-python3}
$PY -m pip install -q --disable-pip-version-check -r tests/requirements.txt
