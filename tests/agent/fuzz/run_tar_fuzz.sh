#!/usr/bin/env bash
# Runs the tar extractor fuzzer for a bounded time over seed archives, confined to a jail in the
# work directory (see tar_fuzzer.cpp).
#   run_tar_fuzz.sh <fuzzer> <work-dir> <seconds>
set -euo pipefail
fuzzer=$1 work=$2 seconds=$3
[[ -x "$fuzzer" ]] || { echo "FAILED: $fuzzer was not built, yet its test is registered" >&2; exit 1; }
rm -rf "$work/jail" "$work/src"
mkdir -p "$work/corpus" "$work/jail" "$work/src/tree/sub"
# Seeds (first byte: option flags, then the archive): a small tree with a symlink and a hard
# link, and 'd/' followed by 'd -> /etc/shadow' (two archives, the first without end blocks).
cd "$work/src"
printf 'data' > tree/a
printf 'more' > tree/sub/b
ln -sf a tree/link
ln -f tree/a tree/hard
chmod 4755 tree/sub/b
seed() { { printf "$1"; cat "$2"; } > "$work/corpus/$3"; }
tar --format=ustar -b1 -cf tree.tar tree
seed '\x00' tree.tar tree
seed '\x03' tree.tar tree-owner-renamed
mkdir -p evil/d && tar --format=ustar -b1 -cf dir.tar -C evil d
rm -rf evil/d && ln -s /etc/shadow evil/d && tar --format=ustar -b1 -cf link.tar -C evil d
head -c $(( $(stat -c %s dir.tar) - 1024 )) dir.tar > evil.tar && cat link.tar >> evil.tar
seed '\x00' evil.tar dir-then-symlink
cd "$work"
# No leak check: LeakSanitizer needs /proc, and the jail has none on purpose (its magic links,
# /proc/1/root, would lead a symlink-following bug straight out of the jail). For the same
# reason reports are not symbolized (no llvm-symbolizer in the jail).
export ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
BOXLITE_TAR_FUZZ_JAIL="$work/jail" exec "$fuzzer" -max_total_time="$seconds" -max_len=16384 -timeout=10 \
  -rss_limit_mb=1024 -detect_leaks=0 corpus
