#!/usr/bin/env bash
# Runs the options JSON fuzzer for a bounded time over seeds copied into its work directory (so
# the inputs it finds never land in the source tree).
#   run_options_fuzz.sh <fuzzer> <work-dir> <seconds> <seed dir>
set -euo pipefail
fuzzer=$1 work=$2 seconds=$3 seeds=$4
[[ -x "$fuzzer" ]] || { echo "FAILED: $fuzzer was not built, yet its test is registered" >&2; exit 1; }
rm -rf "$work"
mkdir -p "$work/corpus"
cp "$seeds"/* "$work/corpus/"
exec "$fuzzer" -max_total_time="$seconds" -max_len=4096 -timeout=5 -rss_limit_mb=1024 \
  -dict="$seeds/../options.dict" "$work/corpus"
