"""Fixtures: a busybox root filesystem (as tests/support builds it) and a runtime on the
namespace engine in a temporary home. A test that cannot run here skips with a reason that
starts with "precondition: "."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

import boxlite
from boxlite.sync_api import SyncBoxlite

SOURCE_ROOT = Path(__file__).resolve().parents[3]


sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "support" / "python"))
from busybox_rootfs import busybox_rootfs_path  # noqa: E402  (the busybox rootfs, shared)


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
