#!/usr/bin/env bash
# Runs the vhost-user libFuzzer target for a bounded time over the committed seed corpus
# (copied, so the fuzzer's new inputs never land in the source tree).
# Usage: run_fuzz.sh <fuzzer binary> <work dir> [seconds] [fuzzer arguments...]
set -euo pipefail
fuzzer="$(realpath "$1")"; work="$2"; seconds="${3:-20}"; shift 3 || shift $#
here="$(cd "$(dirname "$0")" && pwd)"
if [[ ! -x "$fuzzer" ]]; then
  echo "FAILED: $fuzzer was not built, yet its test is registered (only a build with clang++ and libFuzzer registers it)" >&2; exit 1
fi
rm -rf "$work"; mkdir -p "$work/corpus" "$work/seeds" "$work/artifacts"
cp "$here"/corpus/*.bin "$work/seeds/"
cd "$work"
exec "$fuzzer" -max_total_time="$seconds" -timeout=10 -max_len=65536 \
  -artifact_prefix="$work/artifacts/" "$@" "$work/corpus" "$work/seeds"
