#!/usr/bin/env bash
# Runs the QCOW2 libFuzzer target for a bounded time over the committed seed corpus plus seeds
# made by qemu-img now. Usage: run_fuzz.sh <fuzzer binary> <work dir> [seconds]
set -euo pipefail
fuzzer="$(realpath "$1")"; work="$2"; seconds="${3:-20}"
here="$(cd "$(dirname "$0")" && pwd)"
if [[ ! -x "$fuzzer" ]]; then
  echo "FAILED: $fuzzer was not built, yet its test is registered (only a build with clang++ and libFuzzer registers it)" >&2; exit 1
fi
rm -rf "$work"; mkdir -p "$work/corpus" "$work/seeds" "$work/artifacts"
cp "$here"/corpus/* "$work/seeds/"
if command -v qemu-img >/dev/null; then
  s="$work/seeds"
  qemu-img create -q -f qcow2 -o cluster_size=512 "$s/empty512.qcow2" 1M
  qemu-img create -q -f qcow2 -o cluster_size=512,compat=0.10 "$s/v2.qcow2" 64k
  qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=1 "$s/rc1.qcow2" 4M
  qemu-img create -q -f qcow2 -o cluster_size=1024 -u -b base.raw -F raw "$s/backing.qcow2" 1M
  cp "$s/empty512.qcow2" "$s/data512.qcow2"
  qemu-io -f qcow2 -c 'write -P 3 0 4k' -c 'write -z 8k 2k' "$s/data512.qcow2" >/dev/null
  head -c 16384 /dev/urandom | base64 > "$work/text.raw"
  qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=1024 "$work/text.raw" "$s/compressed.qcow2"
fi
cd "$work"
exec "$fuzzer" -max_total_time="$seconds" -timeout=10 -max_len=32768 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" "$work/seeds"
