"""Shared set-up of the Python examples: a runtime on the namespace engine in a temporary home,
and a root filesystem (argv[1], or a busybox tree built from /bin/busybox).

Without root or busybox-static an example prints "precondition: ..." and exits 77, which ctest
reports as skipped. Each example checks its own output: a wrong result prints "FAILED: ..." and
exits 1.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import boxlite

SKIP = 77


def skip(reason: str) -> None:
    print(f"precondition: {reason}")
    sys.exit(SKIP)


def rootfs() -> str:
    if len(sys.argv) > 1:
        return sys.argv[1]
    if os.geteuid() != 0:
        skip("not root (the namespace engine needs root)")
    root = Path(tempfile.gettempdir()) / f"boxlite-busybox-rootfs-v1-{os.getuid()}"
    if (root / ".complete").exists():
        return str(root)
    busybox = shutil.which("busybox") or "/bin/busybox"
    kind = subprocess.run(["file", "-bL", busybox], capture_output=True, text=True).stdout
    if "statically linked" not in kind and "static-pie" not in kind:
        skip("busybox-static is not installed")
    made = tempfile.mkdtemp(prefix="boxlite-example-rootfs")
    atexit.register(shutil.rmtree, made, ignore_errors=True)
    tree = Path(made) / "rootfs"
    (tree / "bin").mkdir(parents=True)
    for d in ("etc", "proc", "sys", "dev", "tmp", "root"):
        (tree / d).mkdir()
    shutil.copy(busybox, tree / "bin/busybox")
    for applet in subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout.split():
        if applet != "busybox":
            os.symlink("busybox", tree / "bin" / applet)
    (tree / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (tree / "etc/group").write_text("root:x:0:\n")
    os.chmod(tree / "tmp", 0o1777)
    return str(tree)


def runtime() -> boxlite.Boxlite:
    """A runtime in a fresh temporary home (never the user's ~/.boxlite), removed at exit."""
    if os.geteuid() != 0:
        skip("not root (the namespace engine needs root)")
    home = tempfile.mkdtemp(prefix="boxlite-example-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    return boxlite.Boxlite(boxlite.Options(home_dir=home, engine="namespace"))


class Checks:
    def __init__(self, name: str) -> None:
        self.name = name
        self.failed = 0

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.failed += 1
            print(f"FAILED: {what}")

    def expect_eq(self, got: object, want: object, what: str) -> None:
        if got != want:
            self.failed += 1
            print(f"FAILED: {what} (got {got!r}, expected {want!r})")

    def finish(self) -> int:
        if self.failed == 0:
            print(f"{self.name}: ok")
            return 0
        return 1
