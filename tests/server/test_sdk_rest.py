"""The Python SDK's remote runtime (Boxlite.rest / SyncBoxlite.rest) against a live `boxlite serve`:
create -> exec (streamed stdout, stdin, exit code) -> copy in/out -> stop -> remove, sync and
asyncio, plus the errors (wrong key -> AuthError, unknown box -> NotFoundError)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conftest import API_KEY, Server

import boxlite
from boxlite.sync_api import SyncBoxlite


def options(server: Server, key: str | None = API_KEY) -> boxlite.BoxliteRestOptions:
    credential = boxlite.ApiKeyCredential(key) if key else None
    return boxlite.BoxliteRestOptions(f"http://127.0.0.1:{server.port}", credential=credential)


def test_sync_lifecycle(server: Server, rootfs: str, tmp_path: Path) -> None:
    rt = SyncBoxlite.rest(options(server))
    box = rt.create(boxlite.BoxOptions(rootfs_path=rootfs), name="remote-sync")
    assert box.name == "remote-sync"
    assert [i.id for i in rt.list_info()] == [box.id]
    assert rt.get("remote-sync") is not None and rt.get("no-such-box") is None

    # Streamed stdout: a line at a time, while the process still runs.
    ex = box.exec("sh", ["-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done; echo oops >&2; exit 7"])
    out = "".join(ex.stdout())
    err = "".join(ex.stderr())
    assert out == "line1\nline2\nline3\n" and err == "oops\n"
    assert ex.wait().exit_code == 7

    # More output than the server's backlog, all of it (the server holds it until the attach).
    ex = box.exec("sh", ["-c", "head -c 3000000 /dev/zero"])
    assert sum(len(chunk) for chunk in iter(ex.stdout().read_bytes, b"")) == 3000000
    assert ex.wait().exit_code == 0

    # stdin, env and working directory.
    ex = box.exec("sh", ["-c", "cat; echo \"$GREETING\"; pwd"], env={"GREETING": "hi"}, cwd="/tmp")
    stdin = ex.stdin()
    stdin.send_input(b"from stdin\n")
    stdin.close()
    assert "".join(ex.stdout()) == "from stdin\nhi\n/tmp\n"
    assert ex.wait().exit_code == 0

    # Copies: a file and a folder in, then out again.
    (tmp_path / "in.txt").write_text("copied in\n")
    (tmp_path / "tree/sub").mkdir(parents=True)
    (tmp_path / "tree/sub/deep.txt").write_text("deep\n")
    box.copy_in(str(tmp_path / "in.txt"), "/tmp/remote.txt")
    box.copy_in(str(tmp_path / "tree"), "/tmp/tree")
    ex = box.exec("cat", ["/tmp/remote.txt", "/tmp/tree/sub/deep.txt"])
    assert "".join(ex.stdout()) == "copied in\ndeep\n"
    box.copy_out("/tmp/remote.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "copied in\n"
    box.copy_out("/tmp/tree", str(tmp_path / "tree-back"))
    assert (tmp_path / "tree-back/sub/deep.txt").read_text() == "deep\n"

    assert box.info().state.status == "running"
    assert box.metrics().commands_executed_total >= 3
    assert rt.metrics().total_commands_executed >= 3
    box.stop()
    assert box.info().state.status == "stopped"
    rt.remove(box.id)
    assert rt.get_info(box.id) is None
    with pytest.raises(boxlite.NotFoundError, match="no-such-box"):
        rt.remove("no-such-box")


def test_async_lifecycle(server: Server, rootfs: str, tmp_path: Path) -> None:
    async def main() -> None:
        rt = boxlite.Boxlite.rest(options(server))
        box = await rt.create(boxlite.BoxOptions(rootfs_path=rootfs))
        ex = await box.exec("sh", ["-c", "cat; echo done; exit 3"])
        stdin = ex.stdin()
        await stdin.send_input("async input\n")
        await stdin.close()
        chunks = [chunk async for chunk in ex.stdout()]
        assert "".join(chunks) == "async input\ndone\n"
        assert (await ex.wait()).exit_code == 3

        # A long-running process, killed.
        ex = await box.exec("sleep", ["1000"])
        await ex.kill()
        assert (await ex.wait()).exit_code != 0

        (tmp_path / "a.txt").write_text("async copy\n")
        await box.copy_in(str(tmp_path / "a.txt"), "/tmp/a.txt")
        await box.copy_out("/tmp/a.txt", str(tmp_path / "b.txt"))
        assert (tmp_path / "b.txt").read_text() == "async copy\n"

        await box.stop()
        assert (await box.info()).state.status == "stopped"
        await rt.remove(box.id)
        assert await rt.get(box.id) is None
        await rt.shutdown()

    asyncio.run(main())


def test_errors(server: Server, rootfs: str) -> None:
    with pytest.raises(boxlite.AuthError, match="API key"):
        SyncBoxlite.rest(options(server, "wrong-key")).list_info()
    with pytest.raises(boxlite.AuthError):
        SyncBoxlite.rest(options(server, None)).list_info()
    rt = SyncBoxlite.rest(options(server))
    rt.create(boxlite.BoxOptions(rootfs_path=rootfs), name="twice")
    with pytest.raises(boxlite.AlreadyExistsError, match="twice"):
        rt.create(boxlite.BoxOptions(rootfs_path=rootfs), name="twice")
    with pytest.raises(boxlite.InvalidArgumentError):
        boxlite.BoxliteRestOptions("ftp://example")
    with pytest.raises(boxlite.UnsupportedError, match="user"):
        rt.get("twice").exec("true", user="box")  # type: ignore[union-attr]


def test_attach_to_the_main_command(server: Server, rootfs: str) -> None:
    async def main() -> None:
        rt = boxlite.Boxlite.rest(options(server))
        box = await rt.create(boxlite.BoxOptions(rootfs_path=rootfs, entrypoint=["sh", "-c"],
                                                 cmd=["read line; echo main $line; exit 3"]))
        ex = await box.attach()
        stdin = ex.stdin()
        await stdin.send_input(b"up\n")
        out = "".join([chunk async for chunk in ex.stdout()])
        assert out == "main up\n"
        assert (await ex.wait()).exit_code == 3
        # Reattached by its execution id: the finished run's output and exit code again.
        again = await box.attach(ex.id())
        assert "".join([chunk async for chunk in again.stdout()]) == "main up\n"
        assert (await again.wait()).exit_code == 3
        await rt.remove(box.id, force=True)

    asyncio.run(main())

    rt = SyncBoxlite.rest(options(server))
    box = rt.create(boxlite.BoxOptions(rootfs_path=rootfs))
    with pytest.raises(boxlite.BoxliteError, match="no main command"):
        box.attach()
    rt.remove(box.id, force=True)
