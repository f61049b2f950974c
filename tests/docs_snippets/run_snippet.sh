#!/usr/bin/env bash
# Runs one snippet program extracted from the docs (tests/docs_snippets/CMakeLists.txt) the way a
# user would on this machine: a fresh BOXLITE_HOME, the namespace engine, and ROOTFS naming a
# busybox root filesystem. It must exit 0 and print no error. Exit 77 (skipped) where the
# namespace engine cannot run (not root, no busybox-static).
#   run_snippet.sh <program> <build bin dir>
set -euo pipefail
program=$1
bin_dir=$2
if [[ $(id -u) -ne 0 ]]; then
  echo "skipped: the namespace engine needs root"; exit 77
fi
busybox=""
for candidate in /bin/busybox /usr/bin/busybox; do
  if [[ -x $candidate ]] && file -bL "$candidate" | grep -q 'static'; then busybox=$candidate; break; fi
done
if [[ -z $busybox ]]; then
  echo "skipped: busybox-static is not installed"; exit 77
fi
work=$(mktemp -d /tmp/boxlite-snippet-XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root}
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
  [[ $applet == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"

export BOXLITE_HOME=$work/home BOXLITE_ENGINE=namespace ROOTFS=$rootfs
export BOXLITE_SHIM=$bin_dir/boxlite-shim BOXLITE_AGENT=$bin_dir/boxlite-agent
status=0
"$program" >"$work/out" 2>"$work/err" || status=$?
cat "$work/out"
cat "$work/err" >&2
if [[ $status -ne 0 ]]; then
  echo "FAILED: the snippet exited with status $status" >&2; exit 1
fi
if grep -qi 'error' "$work/out" "$work/err"; then
  echo "FAILED: the snippet printed an error" >&2; exit 1
fi
echo "ok: the snippet ran and exited 0"
