"""The async API on the namespace engine: every public method, concurrency, streaming,
signals, tty, cancellation, and that nothing blocks the event loop."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

import boxlite


async def test_runtime_methods(runtime: boxlite.Boxlite, rootfs: str) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=rootfs, auto_remove=False), name="web")
    assert box.name == "web" and len(box.id) == 26
    info = await runtime.get_info("web")
    assert info is not None and info.id == box.id and info.state.status == "configured"
    assert info.image == rootfs and not info.state.running
    assert [i.id for i in await runtime.list_info()] == [box.id]
    again = await runtime.get(box.id)
    assert again is not None and again.id == box.id
    assert await runtime.get("missing") is None
    assert await runtime.get_info("missing") is None
    same, created = await runtime.get_or_create(boxlite.BoxOptions(rootfs_path=rootfs), name="web")
    assert same.id == box.id and created is False
    other, created = await runtime.get_or_create(boxlite.BoxOptions(rootfs_path=rootfs), name="other")
    assert created is True and other.id != box.id
    metrics = await runtime.metrics()
    assert metrics.boxes_created_total >= 2
    await runtime.remove("other")
    assert await runtime.get("other") is None
    with pytest.raises(boxlite.NotFoundError, match="other"):
        await runtime.remove("other")
    with pytest.raises(boxlite.AlreadyExistsError):
        await runtime.create(boxlite.BoxOptions(rootfs_path=rootfs), name="web")
    with pytest.raises(boxlite.ConfigError, match="CPU"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=rootfs, cpus=100000))
    assert runtime.home_dir.endswith("home")


async def test_box_methods(runtime: boxlite.Boxlite, rootfs: str, tmp_path: Path) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=rootfs, auto_remove=False))
    async with box:
        info = await box.info()
        assert info.state.status == "running" and info.state.running and info.state.pid
        source = tmp_path / "in.txt"
        source.write_text("copied in\n")
        await box.copy_in(str(source), "/root/in.txt")
        execution = await box.exec("cat", ["/root/in.txt"])
        out = "".join([chunk async for chunk in execution.stdout()])
        assert out == "copied in\n"
        assert (await execution.wait()).exit_code == 0
        await (await box.exec("sh", ["-c", "echo made in box > /root/out.txt"])).wait()
        await box.copy_out("/root/out.txt", str(tmp_path / "out.txt"))
        assert (tmp_path / "out.txt").read_text() == "made in box\n"
        metrics = await box.metrics()
        assert metrics.commands_executed_total >= 4
    assert (await box.info()).state.status == "stopped"
    await box.start()
    assert (await box.info()).state.running
    await box.stop()
    # attach() is the REST runtime's (tests/server/test_sdk_rest.py): locally it says so.
    with pytest.raises(boxlite.UnsupportedError, match="Boxlite.rest"):
        await box.attach()


async def test_exec_streams_env_user_cwd(runtime: boxlite.Boxlite, rootfs: str) -> None:
    async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime) as box:
        execution = await box.box.exec(
            "sh", ["-c", "echo $GREETING; id -u; pwd; echo oops >&2; exit 3"],
            env=[("GREETING", "hi")], user="1000", cwd="/tmp")
        assert len(execution.id()) == 26 and execution.pid > 0
        stdout, stderr = execution.stdout(), execution.stderr()
        with pytest.raises(boxlite.InvalidStateError):
            execution.stdout()
        out = "".join([c async for c in stdout])
        err = "".join([c async for c in stderr])
        assert out == "hi\n1000\n/tmp\n" and err == "oops\n"
        result = await execution.wait()
        assert result.exit_code == 3 and result.error_message is None


async def test_simplebox_exec(runtime: boxlite.Boxlite, rootfs: str) -> None:
    with pytest.raises(ValueError):
        boxlite.SimpleBox()
    async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime, name="simple") as box:
        assert box.created is True and box.name == "simple"
        result = await box.exec("sh", "-c", "echo out; echo err >&2; exit 5", env={"A": "1"})
        assert (result.exit_code, result.stdout, result.stderr) == (5, "out\n", "err\n")
        slow = await box.exec("sleep", "30", timeout=0.5)
        assert slow.timed_out and slow.exit_code != 0
        assert (await box.info()).name == "simple"
        box_id = box.id
    # auto_remove: gone once stopped
    assert await runtime.get(box_id) is None


async def test_reuse_existing(runtime: boxlite.Boxlite, rootfs: str) -> None:
    first = boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime, name="kept", auto_remove=False)
    async with first:
        pass
    second = boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime, name="kept", auto_remove=False, reuse_existing=True)
    async with second:
        assert second.created is False and second.id == first.id


async def test_hundred_concurrent_executions(runtime: boxlite.Boxlite, rootfs: str) -> None:
    async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime) as box:
        results = await asyncio.gather(
            *[box.exec("sh", "-c", f"echo out-{i}; echo err-{i} >&2; exit {i % 7}") for i in range(100)])
        for i, result in enumerate(results):
            assert (result.stdout, result.stderr, result.exit_code) == (f"out-{i}\n", f"err-{i}\n", i % 7)


def _task_count() -> int:
    return len(os.listdir("/proc/self/task"))


async def test_no_thread_per_execution(runtime: boxlite.Boxlite, rootfs: str) -> None:
    async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime) as box:
        await box.exec("true")
        before = _task_count()
        executions = [await box.box.exec("sleep", ["30"]) for _ in range(50)]
        during = _task_count()
        for execution in executions:
            await execution.kill()
        for execution in executions:
            assert (await execution.wait()).exit_code == -9
    # The executor's threads (at most 4) and nothing per execution.
    assert during - before <= 4, (before, during)


async def test_hundred_megabytes_of_stdout(runtime: boxlite.Boxlite, rootfs: str) -> None:
    async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime) as box:
        execution = await box.box.exec("sh", ["-c", "head -c 100000000 /dev/zero | tr '\\0' 'x'"])
        total = 0
        async for chunk in execution.stdout():
            assert chunk == "x" * len(chunk)
            total += len(chunk)
        assert total == 100_000_000
        assert (await execution.wait()).exit_code == 0


async def test_stdin_round_trip(runtime: boxlite.Boxlite, rootfs: str) -> None:
    async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime) as box:
        execution = await box.box.exec("cat")
        stdin, stdout = execution.stdin(), execution.stdout()
        payload = bytes(range(256)) * 8192  # 2 MiB, more than the flow-control window
        received = bytearray()

        async def read_all() -> None:
            while chunk := await stdout.read_bytes():
                received.extend(chunk)

        reader = asyncio.ensure_future(read_all())
        await stdin.send_input(payload)
        assert not await stdin.is_closed()
        await stdin.close()
        assert await stdin.is_closed()
        await reader
        assert bytes(received) == payload
        assert (await execution.wait()).exit_code == 0


async def test_kill_and_signal(runtime: boxlite.Boxlite, rootfs: str) -> None:
    async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime) as box:
        victim = await box.box.exec("sleep", ["60"])
        await victim.kill()
        assert (await victim.wait()).exit_code == -9
        trapper = await box.box.exec("sh", ["-c", "trap 'echo got TERM; exit 7' TERM; echo ready; "
                                                  "while true; do sleep 0.05; done"])
        stdout = trapper.stdout()
        assert await stdout.__anext__() == "ready\n"
        await trapper.signal(15)
        assert "".join([c async for c in stdout]) == "got TERM\n"
        assert (await trapper.wait()).exit_code == 7
        with pytest.raises(boxlite.InvalidArgumentError):
            await trapper.signal(0)


async def test_tty_resize(runtime: boxlite.Boxlite, rootfs: str) -> None:
    async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime) as box:
        execution = await box.box.exec(
            "sh", ["-c", "trap 'stty size' WINCH; echo ready; while true; do sleep 0.05; done"], tty=True)
        stdout = execution.stdout()
        seen = ""
        while "ready" not in seen:
            seen += await stdout.__anext__()
        await execution.resize_tty(33, 101)
        while "33 101" not in seen:
            seen += await stdout.__anext__()
        with pytest.raises(boxlite.InvalidArgumentError):
            await execution.resize_tty(0, 10)
        await execution.kill()
        assert (await execution.wait()).exit_code == -9


async def test_event_loop_keeps_running_during_waits(runtime: boxlite.Boxlite, rootfs: str) -> None:
    async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime) as box:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(ticker())
        execution = await box.box.exec("sleep", ["0.3"])
        await execution.wait()
        stop.set()
        await task
        assert ticks > 10


async def test_cancel_wait_leaves_the_process_running(runtime: boxlite.Boxlite, rootfs: str) -> None:
    async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime) as box:
        execution = await box.box.exec("sh", ["-c", "read line; echo got $line"])
        stdout = execution.stdout()
        waiter = asyncio.ensure_future(execution.wait())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        stdin = execution.stdin()
        await stdin.send_input(b"still here\n")
        assert "".join([c async for c in stdout]) == "got still here\n"
        assert (await execution.wait()).exit_code == 0


async def test_cancel_read_loses_nothing(runtime: boxlite.Boxlite, rootfs: str) -> None:
    async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime) as box:
        execution = await box.box.exec("sh", ["-c", "read line; echo $line"])
        stdout = execution.stdout()
        reader = asyncio.ensure_future(stdout.__anext__())
        await asyncio.sleep(0)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        await execution.stdin().send_input(b"after cancel\n")
        assert "".join([c async for c in stdout]) == "after cancel\n"


async def test_cancel_send_input(runtime: boxlite.Boxlite, rootfs: str) -> None:
    async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime) as box:
        # Nobody reads: the box's pipe and the flow-control window fill, and send_input waits.
        execution = await box.box.exec("sleep", ["60"])
        stdin = execution.stdin()
        sender = asyncio.ensure_future(stdin.send_input(b"x" * (64 << 20)))
        await asyncio.sleep(0.05)
        assert not sender.done()
        sender.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sender
        await execution.kill()
        assert (await execution.wait()).exit_code == -9


async def _sleepers(box: boxlite.SimpleBox) -> str:
    return (await box.exec("sh", "-c", "pgrep -f 'sleep 1234' || true")).stdout


async def test_cancel_exec_starts_nothing_that_survives(runtime: boxlite.Boxlite, rootfs: str) -> None:
    async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime) as box:
        await box.exec("true")
        task = asyncio.ensure_future(box.box.exec("sleep", ["1234"]))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The exec may have been under way: it is killed as soon as it has started.
        for _ in range(2000):
            if await _sleepers(box) == "":
                break
            await asyncio.sleep(0.01)
        assert await _sleepers(box) == ""


async def test_cancel_create_leaves_no_box(runtime: boxlite.Boxlite, rootfs: str) -> None:
    task = asyncio.ensure_future(runtime.create(boxlite.BoxOptions(rootfs_path=rootfs), name="cancelled"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Taken back before the cancellation reached us: no waiting needed.
    assert await runtime.get("cancelled") is None
    assert await runtime.list_info() == []


async def test_cancel_start_and_stop_leave_a_consistent_box(runtime: boxlite.Boxlite, rootfs: str) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=rootfs, auto_remove=False))
    for operation in (box.start, box.stop, box.info, box.metrics):
        task = asyncio.ensure_future(operation())
        await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    # Whatever was cancelled finished or never began: the box still starts, runs and stops.
    async with box:
        execution = await box.exec("echo", ["fine"])
        assert "".join([c async for c in execution.stdout()]) == "fine\n"
    assert (await box.info()).state.status == "stopped"


async def test_shutdown_stops_boxes_and_refuses_more(home: str, rootfs: str) -> None:
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=home, engine="namespace"))
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=rootfs, auto_remove=False), name="s")
    await box.start()
    await runtime.shutdown()
    with pytest.raises(boxlite.StoppedError):
        await runtime.list_info()
    check = boxlite.Boxlite(boxlite.Options(home_dir=home, engine="namespace"))
    info = await check.get_info("s")
    assert info is not None and info.state.status == "stopped"
    await check.remove("s")


async def test_images_list_is_empty_in_a_new_home(runtime: boxlite.Boxlite) -> None:
    assert await runtime.images.list() == []
    with pytest.raises(boxlite.BoxliteError):
        await runtime.images.pull("127.0.0.1:1/nothing:here")


async def test_readme_spellings_are_accepted(runtime: boxlite.Boxlite, rootfs: str) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=rootfs, auto_remove=False))
    assert [info.id for info in await runtime.list()] == [box.id]
    execution = await box.exec("echo", "Hello")  # one argument as a string
    assert "".join([c async for c in execution.stdout()]) == "Hello\n"
    assert (await box.info()).status == "running"
    victim = await box.exec("sleep", ["60"])
    await victim.kill(signal=15)
    assert (await victim.wait()).exit_code == -15
    await box.stop()
    await box.remove()
    assert await runtime.get(box.id) is None


def test_default_runtime_and_init_default(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = f"""
import asyncio, boxlite
from boxlite.sync_api import SyncBoxlite
boxlite.Boxlite.init_default(boxlite.Options(home_dir={str(tmp_path / 'a')!r}, engine="namespace"))
runtime = boxlite.Boxlite.default()
assert runtime is boxlite.Boxlite.default()
assert runtime.home_dir == {str(tmp_path / 'a')!r}, runtime.home_dir
try:
    boxlite.Boxlite.init_default(boxlite.Options())
except boxlite.InvalidStateError:
    pass
else:
    raise SystemExit("init_default after first use was accepted")
assert asyncio.run(runtime.list_info()) == []
SyncBoxlite.init_default(boxlite.Options(home_dir={str(tmp_path / 'b')!r}, engine="namespace"))
assert SyncBoxlite.default().home_dir == {str(tmp_path / 'b')!r}
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


async def test_cancel_simplebox_exec_kills_what_it_started(runtime: boxlite.Boxlite, rootfs: str) -> None:
    async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime) as box:
        await box.exec("true")
        for delay in (0.0, 0.2):  # cancelled while starting, and while running
            task = asyncio.ensure_future(box.exec("sleep", "1234"))
            await asyncio.sleep(delay)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(2000):
                if await _sleepers(box) == "":
                    break
                await asyncio.sleep(0.01)
            assert await _sleepers(box) == ""
        with pytest.raises(boxlite.ExecutionError, match="/no/such/program"):
            await box.exec("/no/such/program")  # a start that fails raises, as upstream
        assert (await box.exec("echo", "after")).stdout == "after\n"


async def test_simplebox_exec_bounds_what_it_keeps(runtime: boxlite.Boxlite, rootfs: str) -> None:
    """A box that prints without end must not grow the caller's memory without end: past
    max_output_bytes (stdout and stderr together) the command is killed and ExecutionError
    names the limit, on the loop's own connection and on a streaming Execution's collect."""
    from boxlite.simplebox import _collect

    assert boxlite.DEFAULT_MAX_OUTPUT_BYTES == 256 << 20
    sixteen = ("sh", "-c", "printf 12345678; printf abcdefgh >&2")
    async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime) as box:
        exact = await box.exec(*sixteen, max_output_bytes=16)
        assert (exact.exit_code, exact.stdout, exact.stderr) == (0, "12345678", "abcdefgh")
        with pytest.raises(boxlite.ExecutionError, match="more than 15 bytes"):
            await box.exec(*sixteen, max_output_bytes=15)
        endless = "while :; do echo out; echo err >&2; done"
        with pytest.raises(boxlite.ExecutionError, match=r"more than 1048576 bytes .*max_output_bytes"):
            await box.exec("sh", "-c", endless, "collect-limit", max_output_bytes=1 << 20)
        # The regex's brackets keep the search's own command line from matching it.
        printers = "pgrep -f 'collect[-]limit' || true"
        for _ in range(500):
            if (await box.exec("sh", "-c", printers)).stdout == "":
                break
            await asyncio.sleep(0.01)
        assert (await box.exec("sh", "-c", printers)).stdout == ""
        execution = await box.box.exec("sh", ["-c", endless, "collect-limit"])
        with pytest.raises(boxlite.ExecutionError, match="more than 4096 bytes"):
            await _collect(execution, 4096)
        assert (await execution.wait()).exit_code == -9
        with pytest.raises(boxlite.InvalidArgumentError, match="max_output_bytes"):
            await box.exec("true", max_output_bytes=0)
        assert (await box.exec("echo", "after")).stdout == "after\n"


async def test_simplebox_exec_on_the_loops_own_connection(runtime: boxlite.Boxlite, rootfs: str) -> None:
    """SimpleBox.exec reads the agent's socket on the event loop itself (one connection per
    loop): large output on both streams (flow-control credit returned as it arrives), bytes
    that are not UTF-8, metrics, and a connection whose box was stopped and started again
    through another handle (the next exec reconnects)."""
    async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime, auto_remove=False) as box:
        before = (await box.metrics()).commands_executed_total
        big = await box.exec("sh", "-c", "head -c 6000000 /dev/zero; head -c 5000000 /dev/zero >&2")
        assert (big.exit_code, len(big.stdout), len(big.stderr)) == (0, 6_000_000, 5_000_000)
        assert set(big.stdout) == {"\0"}
        odd = await box.exec("printf", "a\\377b")
        assert odd.stdout == "a\ufffdb"
        assert (await box.metrics()).commands_executed_total >= before + 2
        other = await runtime.get(box.id)
        assert other is not None
        await other.stop()
        await other.start()
        assert (await box.exec("echo", "again")).stdout == "again\n"
        assert [r.stdout for r in await asyncio.gather(*[box.exec("echo", str(i)) for i in range(20)])] == [
            f"{i}\n" for i in range(20)
        ]
        # More requests at once than the socket takes (its send buffer made small): the loop's
        # writer callback sends the rest.
        agent = box.box._loop_agents[asyncio.get_running_loop()]
        with socket.socket(fileno=os.dup(agent.fd)) as same:
            same.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        results = await asyncio.gather(
            *[box.exec("sh", "-c", 'echo "${#1}"', "sh", chr(ord("a") + i % 26) * 120_000) for i in range(64)]
        )
        assert [(r.exit_code, r.stdout) for r in results] == [(0, "120000\n")] * 64
    await runtime.remove(box.id, force=True)
