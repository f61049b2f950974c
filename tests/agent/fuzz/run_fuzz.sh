#!/usr/bin/env bash
# Runs a libFuzzer binary for a bounded time over a seed corpus of valid frames (the frame and
# session fuzzers share it).
#   run_fuzz.sh <fuzzer> <work-dir> <seconds>
set -euo pipefail
fuzzer=$1 work=$2 seconds=$3
[[ -x "$fuzzer" ]] || { echo "FAILED: $fuzzer was not built, yet its test is registered" >&2; exit 1; }
mkdir -p "$work/corpus"
# Seeds: a hello, an exec header with a short payload, a credit frame.
printf '\x04\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01\x00' > "$work/corpus/hello"
# HelloAck of version 2 with its feature bits (the optional trailing u32)
printf '\x0b\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01\x00\x00\x00v\x01\x00\x00\x00' > "$work/corpus/hello-ack-features"
printf '\x05\x00\x00\x00\x16\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x01\x00' > "$work/corpus/credit"
printf '\x0a\x00\x00\x00\x19\x00\x00\x00\x02\x00\x00\x00\xf7\xff\xff\xff\x01\x00\x00\x00\x00\x00' > "$work/corpus/exit"
# A whole execution on stream 1 as an agent answers it: started, stdout "hi", stdin credit, exit 0.
printf '\x08\x00\x00\x00\x11\x00\x00\x00\x01\x00\x00\x00\x07\x00\x00\x00\x00\x00\x04\x00'\
'\x02\x00\x00\x00\x14\x00\x00\x00\x01\x00\x00\x00hi'\
'\x05\x00\x00\x00\x16\x00\x00\x00\x01\x00\x00\x00\x00\x64\x00\x00\x00'\
'\x09\x00\x00\x00\x19\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00' > "$work/corpus/execution"
exec "$fuzzer" -max_total_time="$seconds" -max_len=4096 -timeout=5 -rss_limit_mb=1024 "$work/corpus"
