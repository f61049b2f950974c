#!/usr/bin/env bash
# benchmark/run --save then --compare, end to end, on the selftest suite (not timed: the injected
# regression is ten times the measured sleep, far outside any noise):
#   1. --save base stores figures.json and a copy of the suite;
#   2. --compare base runs A B A B and prints a verdict for selftest_sleep;
#   3. with a 20 ms delay injected into this tree's suite only, --compare base exits 3 and
#      flags selftest_sleep as worse beyond the noise.
#   save_compare_test.sh <boxlite_selftest_bench> <work dir>
set -euo pipefail
suite=$1 work=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$work"
mkdir -p "$work/build/benchmark/bin" "$work/results"
cp "$suite" "$work/build/benchmark/bin/"
export BOXLITE_BENCH_BUILD="$work/build" BOXLITE_BENCH_RESULTS="$work/results" BOXLITE_BENCH_REPETITIONS=1 \
       BOXLITE_BENCH_PEER_RUNS=9 BOXLITE_BENCH_AB_ROUNDS=2
fail() { echo "FAIL: $*" >&2; exit 1; }

"$root/benchmark/run" --no-build --filter selftest --save base >"$work/save.log" 2>&1 ||
  { cat "$work/save.log"; fail "--save exited $?"; }
grep -q '"selftest_sleep (2 ms + injected delay vs 2 ms)"' "$work/results/base/figures.json" ||
  { cat "$work/save.log" "$work/results/base/figures.json"; fail "figures.json lacks selftest_sleep"; }
[[ -x "$work/results/base/build/benchmark/bin/boxlite_selftest_bench" ]] || fail "the baseline kept no copy of the suite"
echo "ok: --save stored $(grep -c '"ratio"' "$work/results/base/figures.json") figure(s) and the suite"

status=0
"$root/benchmark/run" --no-build --compare base >"$work/compare.log" 2>&1 || status=$?
cat "$work/compare.log"
[[ $status == 0 || $status == 3 ]] || fail "--compare (nothing injected) exited $status"
grep -Eq '^selftest_sleep .*: baseline [0-9.]+ \[.*\], current [0-9.]+ \[.*\], current/baseline [0-9.]+: ' \
  "$work/compare.log" || fail "--compare printed no verdict for selftest_sleep"
[[ $(grep -c '^=== round .*: A (baseline base)' "$work/compare.log") == 2 ]] || fail "--compare did not run 2 A rounds"
echo "ok: --compare with nothing injected exited $status"

echo 20000 >"$work/build/benchmark/bin/boxlite_selftest_bench.delay_us"
status=0
"$root/benchmark/run" --no-build --compare base >"$work/regressed.log" 2>&1 || status=$?
cat "$work/regressed.log"
[[ $status == 3 ]] || fail "--compare with an injected 20 ms delay exited $status, expected 3"
grep -Eq '^selftest_sleep .*: WORSE beyond the noise$' "$work/regressed.log" || fail "selftest_sleep was not flagged"
echo "ok: the injected regression was flagged"

status=0
"$root/benchmark/run" --no-build --compare missing >"$work/missing.log" 2>&1 || status=$?
[[ $status == 2 ]] && grep -q "no baseline 'missing'" "$work/missing.log" || fail "an unknown baseline: exit $status"
status=0
"$root/benchmark/run" --no-build --save '../x' >"$work/bad.log" 2>&1 || status=$?
[[ $status == 2 ]] && grep -q "must be letters" "$work/bad.log" || fail "a bad baseline name: exit $status"
echo "ok: unknown and bad baseline names are refused"
