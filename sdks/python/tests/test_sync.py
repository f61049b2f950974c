"""The sync API: in a plain script, and inside a running event loop (where upstream's refuses)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import boxlite
from boxlite.sync_api import SyncBoxlite, SyncCodeBox, SyncSimpleBox

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def _exercise(runtime: SyncBoxlite, rootfs: str, tmp: Path) -> None:
    box = runtime.create(boxlite.BoxOptions(rootfs_path=rootfs, auto_remove=False), name="sync")
    assert box.name == "sync"
    again, created = runtime.get_or_create(boxlite.BoxOptions(rootfs_path=rootfs), name="sync")
    assert again.id == box.id and created is False
    info = runtime.get_info("sync")
    assert info is not None and info.state.status == "configured"
    assert [i.id for i in runtime.list_info()] == [box.id]
    with box:
        assert box.info().state.running
        execution = box.exec("sh", ["-c", "cat; echo done >&2"])
        stdin = execution.stdin()
        stdin.send_input(b"round trip\n")
        stdin.close()
        assert stdin.is_closed()
        assert "".join(execution.stdout()) == "round trip\n"
        assert "".join(execution.stderr()) == "done\n"
        assert execution.wait().exit_code == 0
        sleeper = box.exec("sleep", ["60"])
        sleeper.signal(15)
        assert sleeper.wait().exit_code == -15
        killed = box.exec("sleep", ["60"])
        killed.kill()
        assert killed.wait().exit_code == -9
        tty = box.exec("sh", ["-c", "trap 'stty size; exit 0' WINCH; echo ready; while true; do sleep 0.05; done"],
                       tty=True)
        out = iter(tty.stdout())
        seen = ""
        while "ready" not in seen:
            seen += next(out)
        tty.resize_tty(24, 77)
        seen += "".join(out)
        assert "24 77" in seen
        (tmp / "in.txt").write_text("sync copy\n")
        box.copy_in(str(tmp / "in.txt"), "/root/in.txt")
        box.copy_out("/root/in.txt", str(tmp / "back.txt"))
        assert (tmp / "back.txt").read_text() == "sync copy\n"
        assert box.metrics().commands_executed_total >= 5
    assert box.info().state.status == "stopped"
    assert runtime.metrics().boxes_created_total >= 1
    with SyncSimpleBox(rootfs_path=rootfs, runtime=runtime) as simple:
        result = simple.exec("sh", "-c", "echo $X; echo e >&2; exit 4", env={"X": "y"})
        assert (result.exit_code, result.stdout, result.stderr) == (4, "y\n", "e\n")
        big = simple.exec("sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' a; head -c 3000000 /dev/zero >&2")
        assert big.stdout == "a" * 3_000_000 and len(big.stderr) == 3_000_000
        with pytest.raises(boxlite.ExecutionError, match="more than 4096 bytes"):
            simple.exec("sh", "-c", "while :; do echo out; done", max_output_bytes=4096)
        assert simple.exec("echo", "after").stdout == "after\n"
    runtime.remove("sync")
    with pytest.raises(boxlite.NotFoundError):
        runtime.remove("sync")


def test_sync_api(sync_runtime: SyncBoxlite, rootfs: str, tmp_path: Path) -> None:
    _exercise(sync_runtime, rootfs, tmp_path)


async def test_sync_api_inside_a_running_loop(home: str, rootfs: str, tmp_path: Path) -> None:
    assert asyncio.get_running_loop().is_running()
    runtime = SyncBoxlite(boxlite.Options(home_dir=home, engine="namespace"))
    _exercise(runtime, rootfs, tmp_path)


def test_sync_codebox_timeout_is_enforced(sync_runtime: SyncBoxlite, rootfs: str) -> None:
    # The busybox rootfs has no python3: the timeout is what is under test, with sh standing in.
    with SyncCodeBox(image=None, rootfs_path=rootfs, runtime=sync_runtime) as box:  # type: ignore[arg-type]
        result = box.exec("sleep", "30", timeout=0.3)
        assert result.timed_out


def _script_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PACKAGE_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_sync_api_in_a_plain_script(home: str, rootfs: str) -> None:
    script = textwrap.dedent(f"""
        import boxlite
        from boxlite.sync_api import SyncBoxlite, SyncSimpleBox
        runtime = SyncBoxlite(boxlite.Options(home_dir={home!r}, engine="namespace"))
        with SyncSimpleBox(rootfs_path={rootfs!r}, runtime=runtime) as box:
            print(box.exec("echo", "from a script").stdout, end="")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_script_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from a script\n"


def test_ctrl_c_interrupts_a_sync_wait(home: str, rootfs: str) -> None:
    script = textwrap.dedent(f"""
        import boxlite
        from boxlite.sync_api import SyncBoxlite
        runtime = SyncBoxlite(boxlite.Options(home_dir={home!r}, engine="namespace"))
        box = runtime.create(boxlite.BoxOptions(rootfs_path={rootfs!r}))
        execution = box.exec("sleep", ["600"])
        print("waiting", flush=True)
        try:
            execution.wait()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            execution.kill()
            print(execution.wait().exit_code, flush=True)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=_script_env())
    assert process.stdout is not None
    assert process.stdout.readline() == "waiting\n"
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate()
    assert process.returncode == 0, err
    assert out == "interrupted\n-9\n"
