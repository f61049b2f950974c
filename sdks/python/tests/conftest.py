"""Fixtures: a busybox root filesystem (as tests/support builds it) and a runtime on the
namespace engine in a temporary home. A test that cannot run here skips with a reason that
starts with "precondition: "."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

import boxlite
from boxlite.sync_api import SyncBoxlite

SOURCE_ROOT = Path(__file__).resolve().parents[3]


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


def require_namespace_engine() -> None:
    if os.geteuid() != 0:
        pytest.skip("precondition: not root (the namespace engine needs root)")


@pytest.fixture
def rootfs() -> str:
    require_namespace_engine()
    return str(busybox_rootfs_path())


@pytest.fixture
def home(tmp_path: Path) -> str:
    return str(tmp_path / "home")


@pytest.fixture
async def runtime(home: str) -> AsyncIterator[boxlite.Boxlite]:
    require_namespace_engine()
    rt = boxlite.Boxlite(boxlite.Options(home_dir=home, engine="namespace"))
    yield rt
    for info in await rt.list_info():
        await rt.remove(info.id, force=True)


@pytest.fixture
def sync_runtime(home: str) -> Iterator[SyncBoxlite]:
    require_namespace_engine()
    rt = SyncBoxlite(boxlite.Options(home_dir=home, engine="namespace"))
    yield rt
    for info in rt.list_info():
        rt.remove(info.id, force=True)


def _apt_mirror() -> tuple[str, str]:
    """The Debian mirror and suite apt is configured with (deb822 .sources or sources.list)."""
    entries: list[tuple[str, str]] = []
    sources_d = Path("/etc/apt/sources.list.d")
    for path in sorted(sources_d.glob("*.sources")) if sources_d.is_dir() else []:
        for stanza in path.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith("#"):
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("uris") and fields.get("suites"):
                entries.append((fields["uris"].split()[0], fields["suites"].split()[0]))
    for path in [Path("/etc/apt/sources.list"), *sorted(sources_d.glob("*.list"))]:
        if path.is_file():
            for line in path.read_text().splitlines():
                words = [w for w in line.split() if not w.startswith("[")] if not line.startswith("[") else []
                if len(words) >= 3 and words[0] == "deb":
                    entries.append((words[1], words[2]))
    for uri, suite in entries:
        if "security" not in uri and "security" not in suite:
            return uri, suite
    pytest.fail("no Debian mirror found in apt's sources")


def python_image_layout() -> Path:
    """An OCI image layout (tag "python") of a Debian minbase with python3: debootstrap from
    apt's mirror, then umoci. Built once and cached ($BOXLITE_TEST_CACHE, default
    ~/.cache/boxlite-tests), since it costs minutes."""
    cache = Path(os.environ.get("BOXLITE_TEST_CACHE", Path.home() / ".cache/boxlite-tests"))
    layout = cache / "python-image-v1"
    if (layout / ".complete").exists():
        return layout
    for tool in ("debootstrap", "umoci"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            pytest.fail(f"{tool} is missing: scripts/setup installs it")
    mirror, suite = _apt_mirror()
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="python-image-", dir=cache))
    rootfs = staging / "rootfs"
    subprocess.run(["debootstrap", "--variant=minbase", "--include=python3", suite, str(rootfs), mirror],
                   check=True, capture_output=True)
    oci = staging / "layout"
    subprocess.run(["umoci", "init", "--layout", str(oci)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{oci}:python"], check=True)
    bundle = staging / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{oci}:python", str(bundle)], check=True, capture_output=True)
    subprocess.run(["cp", "-a", f"{rootfs}/.", str(bundle / "rootfs")], check=True)
    subprocess.run(["umoci", "repack", "--image", f"{oci}:python", str(bundle)], check=True, capture_output=True)
    subprocess.run(["umoci", "config", "--image", f"{oci}:python", "--config.cmd", "python3",
                    "--config.env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], check=True)
    (oci / ".complete").write_text("")
    try:
        os.rename(oci, layout)
    except OSError:
        pass  # built concurrently elsewhere
    shutil.rmtree(staging, ignore_errors=True)
    return layout
