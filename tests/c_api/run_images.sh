#!/usr/bin/env bash
# c_api.images: the C API's image calls against a real registry — Debian's docker-registry on
# 127.0.0.1 serving a busybox image built with umoci (tests/image/registry_harness.sh) — then a
# box from that image and the simple API on it, all through c_api_program's "images" mode.
#   run_images.sh <c_api_program> <work dir> <registry_harness.sh>
set -euo pipefail
program=$1 work=$2 harness=$3
if [[ $EUID -ne 0 ]]; then
  echo "precondition: not root (the namespace engine needs root)"
  exit 77
fi
rm -rf "$work"
mkdir -p "$work"
bash "$harness" build "$work/images" >/dev/null
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
trap 'bash "$harness" stop "$work/registry" >/dev/null 2>&1 || true' EXIT
bash "$harness" start "$work/registry" "$port" >/dev/null
bash "$harness" push "$work/images/oci" single "$port" test/busybox:single
mkdir -p "$work/run"
"$program" "$work/run" images "127.0.0.1:$port/test/busybox:single"
