"""The SDK's core scenarios on the qemu engine (ctest python_sdk_qemu, labels python and vm): a real
Linux guest under QEMU (TCG here: seconds per boot), booted from the busybox root filesystem
directory of conftest.py, which the engine turns into an ext4 disk. Bounded: one box per API
(asyncio and sync), each going create -> exec (streamed stdout/stderr, exit code) -> stdin ->
copy in/out -> stop/start keeps data -> remove."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

import boxlite
from boxlite.sync_api import SyncBoxlite

from conftest import SOURCE_ROOT, busybox_rootfs_path

HARNESS = SOURCE_ROOT / "tests/image/registry_harness.sh"

#No skip for a missing QEMU or guest kernel : scripts / setup installs both on every machine that
#runs the tests(as for tests / cli / cli_qemu_test.cpp); the engine's own error then fails the test.


def _guest_kernel_release() -> str:
    """The release of the kernel scripts/setup unpacked for guests, which `uname -r` in the box
    prints (so the box really is a VM, not the host's kernel)."""
    cache = os.environ.get("BOXLITE_KERNEL_CACHE") or "/var/cache/boxlite/kernel"
    modules = Path(cache) / "current/lib/modules"
    releases = sorted(p.name for p in modules.iterdir()) if modules.is_dir() else []
    assert releases, f"no guest kernel under {modules}: scripts/setup unpacks it"
    return releases[0]


def _processes_mentioning(needle: str) -> list[int]:
    """Pids of processes whose command line names `needle` (QEMU, the shim and virtiofsd name the
    box's files under the runtime's home)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass  # exited meanwhile
    return pids


@pytest.fixture
def vm_rootfs() -> str:
    return str(busybox_rootfs_path())


@pytest.fixture
def registry_image(tmp_path: Path) -> Iterator[str]:
    """tests/image/registry_harness.sh's busybox image "single" (umoci) in a docker-registry on a
    free loopback port: the reference to pull (loopback registries are spoken to over http)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    images, registry = tmp_path / "images", tmp_path / "registry"
    subprocess.run(["bash", str(HARNESS), "build", str(images)], check=True, capture_output=True)
    subprocess.run(["bash", str(HARNESS), "start", str(registry), str(port)], check=True, capture_output=True)
    try:
        subprocess.run(["bash", str(HARNESS), "push", str(images / "oci"), "single", str(port), "busybox:single"],
                       check=True, capture_output=True)
        yield f"127.0.0.1:{port}/busybox:single"
    finally:
        subprocess.run(["bash", str(HARNESS), "stop", str(registry)], capture_output=True)


@pytest.fixture
async def qemu_runtime(tmp_path: Path) -> AsyncIterator[boxlite.Boxlite]:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path / "home"), engine="qemu"))
    yield rt
    for info in await rt.list_info():
        await rt.remove(info.id, force=True)


@pytest.fixture
def qemu_sync_runtime(tmp_path: Path) -> Iterator[SyncBoxlite]:
    rt = SyncBoxlite(boxlite.Options(home_dir=str(tmp_path / "home"), engine="qemu"))
    yield rt
    for info in rt.list_info():
        rt.remove(info.id, force=True)


async def test_qemu_async_core(qemu_runtime: boxlite.Boxlite, vm_rootfs: str, tmp_path: Path) -> None:
    box = await qemu_runtime.create(boxlite.BoxOptions(rootfs_path=vm_rootfs, auto_remove=False), name="vm")
    assert (await qemu_runtime.get_info("vm")) is not None
    async with box:
        info = await box.info()
        assert info.state.status == "running" and info.state.running
        assert _processes_mentioning(box.id), "no process names the running box (the check below means nothing)"

#exec : stdout and stderr streamed separately, the exit code, the guest's own kernel.
        execution = await box.exec("sh", ["-c", "uname -r; echo to-err >&2; exit 7"])
        stdout, stderr = execution.stdout(), execution.stderr()
        out = "".join([chunk async for chunk in stdout])
        err = "".join([chunk async for chunk in stderr])
        assert out == _guest_kernel_release() + "\n"
        assert err == "to-err\n"
        assert (await execution.wait()).exit_code == 7

#stdin : sent, closed, read back through cat.
        cat = await box.exec("sh", ["-c", "cat; echo eof >&2"])
        stdin = cat.stdin()
        await stdin.send_input(b"line one\n")
        await stdin.send_input(b"line two\n")
        await stdin.close()
        assert "".join([c async for c in cat.stdout()]) == "line one\nline two\n"
        assert "".join([c async for c in cat.stderr()]) == "eof\n"
        assert (await cat.wait()).exit_code == 0

#copy in, then out again; and a file the box writes, copied out.
        (tmp_path / "in.txt").write_text("copied into the vm\n")
        await box.copy_in(str(tmp_path / "in.txt"), "/root/in.txt")
        shown = await box.exec("cat", ["/root/in.txt"])
        assert "".join([c async for c in shown.stdout()]) == "copied into the vm\n"
        assert (await shown.wait()).exit_code == 0
        made = await box.exec("sh", ["-c", "echo made in the vm > /root/kept.txt; sync"])
        assert (await made.wait()).exit_code == 0
        await box.copy_out("/root/kept.txt", str(tmp_path / "out.txt"))
        assert (tmp_path / "out.txt").read_text() == "made in the vm\n"
    assert (await box.info()).state.status == "stopped"

#stop / start keeps the box's writes (its disk survives the VM).
    await box.start()
    assert (await box.info()).state.running
    again = await box.exec("cat", ["/root/kept.txt", "/root/in.txt"])
    assert "".join([c async for c in again.stdout()]) == "made in the vm\ncopied into the vm\n"
    assert (await again.wait()).exit_code == 0
    await box.stop()

    await qemu_runtime.remove("vm")
    assert await qemu_runtime.get("vm") is None
    assert _processes_mentioning(box.id) == [], "QEMU or the shim outlived the removed box"
    with pytest.raises(boxlite.NotFoundError):
        await qemu_runtime.remove("vm")


def test_qemu_sync_core(qemu_sync_runtime: SyncBoxlite, vm_rootfs: str, tmp_path: Path) -> None:
    rt = qemu_sync_runtime
    box = rt.create(boxlite.BoxOptions(rootfs_path=vm_rootfs, auto_remove=False), name="vm-sync")
    with box:
        assert box.info().state.running
        execution = box.exec("sh", ["-c", "cat; uname -r; echo done >&2; exit 3"])
        stdin = execution.stdin()
        stdin.send_input(b"round trip\n")
        stdin.close()
        assert "".join(execution.stdout()) == "round trip\n" + _guest_kernel_release() + "\n"
        assert "".join(execution.stderr()) == "done\n"
        assert execution.wait().exit_code == 3

        (tmp_path / "in.txt").write_text("sync copy\n")
        box.copy_in(str(tmp_path / "in.txt"), "/root/in.txt")
        box.copy_out("/root/in.txt", str(tmp_path / "back.txt"))
        assert (tmp_path / "back.txt").read_text() == "sync copy\n"
        assert box.exec("sh", ["-c", "echo kept > /root/kept.txt; sync"]).wait().exit_code == 0
    assert box.info().state.status == "stopped"

    box.start()
    again = box.exec("cat", ["/root/kept.txt", "/root/in.txt"])
    assert "".join(again.stdout()) == "kept\nsync copy\n"
    assert again.wait().exit_code == 0
    box.stop()

    rt.remove("vm-sync")
    assert rt.get_info("vm-sync") is None
    with pytest.raises(boxlite.NotFoundError):
        rt.remove("vm-sync")


async def test_qemu_registry_image(qemu_runtime: boxlite.Boxlite, registry_image: str) -> None:
    await qemu_runtime.images.pull(registry_image)
    async with boxlite.SimpleBox(image=registry_image, runtime=qemu_runtime) as box:
        # The image's Env and WorkingDir apply; its layer's files are there; the kernel is the guest's.
        result = await box.exec("sh", "-c", "echo $FOO; pwd; cat /data/keep/file; uname -r")
        assert result.exit_code == 0, result.stderr
        assert result.stdout == f"bar\n/data\nkeep\n{_guest_kernel_release()}\n"
