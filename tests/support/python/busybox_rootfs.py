"""The busybox rootfs shared by the Python test suites (sdks/python/tests, tests/server).

Same place and same content as `busybox_rootfs()` in tests/support/support.hpp, so the C++ and
Python suites build it once between them. Each conftest puts this folder on sys.path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


def _busybox_binary() -> Path | None:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(candidate):
            kind = subprocess.run(["file", "-bL", candidate], capture_output=True, text=True).stdout
            if "statically linked" in kind or "static-pie" in kind:
                return Path(candidate)
    return None


def busybox_rootfs_path() -> Path:
    """The shared busybox rootfs of tests/support/support.hpp (same place, same content)."""
    root = Path(tempfile.gettempdir()) / f"boxlite-busybox-rootfs-v1-{os.getuid()}"
    if (root / ".complete").exists():
        return root
    busybox = _busybox_binary()
    if busybox is None:
        pytest.skip("precondition: busybox-static is not installed")
    staging = Path(tempfile.mkdtemp(prefix="boxlite-rootfs-staging"))
    tree = staging / "rootfs"
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "home/box",
              "var/tmp", "mnt"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(busybox, tree / "bin/busybox")
    os.chmod(tree / "bin/busybox", 0o755)
    applets = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True).stdout.split()
    for applet in applets:
        if applet == "bin/busybox":
            continue
        link = tree / applet
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.symlink("/bin/busybox", link)
    (tree / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nbox:x:1000:1000:box:/home/box:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (tree / "etc/group").write_text("root:x:0:\nbox:x:1000:\nnogroup:x:65534:\n")
    (tree / "etc/hostname").write_text("busybox\n")
    os.chmod(tree / "tmp", 0o1777)
    os.chown(tree / "home/box", 1000, 1000)
    (tree / ".complete").write_text("")
    try:
        os.rename(tree, root)
    except OSError:
        pass  # another process won the race
    shutil.rmtree(staging, ignore_errors=True)
    return root
