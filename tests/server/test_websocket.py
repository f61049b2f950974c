"""WebSocket attach to an execution with the `websockets` client: the frames of upstream's §4.4
(binary stdin; binary output tagged 0x01 stdout / 0x02 stderr; JSON resize, signal, stdin_eof;
the exit frame, then a normal close), backlog replay, and one client at a time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import API_KEY, Server

websockets = pytest.importorskip("websockets", reason="precondition: the websockets package is not installed")
from websockets.exceptions import ConnectionClosedOK, InvalidStatus  # noqa: E402
from websockets.sync.client import ClientConnection, connect  # noqa: E402


def attach(server: Server, box: str, exec_id: str, key: str | None = API_KEY) -> ClientConnection:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return connect(f"ws://127.0.0.1:{server.port}/v1/boxes/{box}/executions/{exec_id}/attach",
                   additional_headers=headers, open_timeout=120, max_size=None)


def attach_main(server: Server, box: str, key: str | None = API_KEY) -> ClientConnection:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return connect(f"ws://127.0.0.1:{server.port}/v1/boxes/{box}/attach", additional_headers=headers,
                   open_timeout=120, max_size=None)


class Transcript:
    def __init__(self) -> None:
        self.stdout = b""
        self.stderr = b""
        self.texts: list[dict[str, Any]] = []
        self.exit_code: int | None = None


def drain(ws: ClientConnection, until_exit: bool = True, until_stdout: bytes | None = None) -> Transcript:
    """Reads frames until the exit frame and the close (or until stdout contains `until_stdout`)."""
    t = Transcript()
    out, err = bytearray(), bytearray()  # (bytes += would copy everything at each frame)
    try:
        while True:
            frame = ws.recv(timeout=300)
            if isinstance(frame, bytes):
                assert frame[0] in (1, 2), frame[:10]
                (out if frame[0] == 1 else err).extend(frame[1:])
                if until_stdout is not None and until_stdout in out:
                    t.stdout, t.stderr = bytes(out), bytes(err)
                    return t
            else:
                doc = json.loads(frame)
                t.texts.append(doc)
                if doc["type"] == "exit":
                    t.exit_code = doc["exit_code"]
    except ConnectionClosedOK as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 1000
        assert t.exit_code is not None, "closed without an exit frame"
        t.stdout, t.stderr = bytes(out), bytes(err)
        return t


def test_stdin_round_trip_and_exit_frame(server: Server, rootfs: str) -> None:
    box = server.create_box(rootfs)["box_id"]
    exec_id = server.exec(box, command="sh", args=["-c", "cat; echo bye >&2; exit 7"])
    with attach(server, box, exec_id) as ws:
        assert ws.response.headers["x-boxlite-execution-id"] == exec_id
        ws.send(b"hello over websocket\n")
        ws.send(b"second chunk\n")
        ws.send(json.dumps({"type": "stdin_eof"}))
        t = drain(ws)
    assert t.stdout == b"hello over websocket\nsecond chunk\n"
    assert t.stderr == b"bye\n"
    assert t.exit_code == 7


def test_ten_megabytes_of_output(server: Server, rootfs: str) -> None:
    box = server.create_box(rootfs)["box_id"]
    size = 10 * 1024 * 1024
    exec_id = server.exec(box, command="sh", args=["-c", f"read go; head -c {size} /dev/zero | tr '\\0' x"])
    with attach(server, box, exec_id) as ws:
        ws.send(b"go\n")
        t = drain(ws)
    assert len(t.stdout) == size
    assert t.stdout.count(b"x") == size
    assert t.exit_code == 0
    # The backlog keeps only the last 256 KiB.
    done = server.wait_execution(box, exec_id)
    assert done["stdout_truncated"] is True and len(done["stdout"]) == 256 * 1024


def test_resize_and_signal_frames(server: Server, rootfs: str) -> None:
    box = server.create_box(rootfs)["box_id"]
    exec_id = server.exec(box, command="sh", args=["-c", "read x; stty size; sleep 1000"], tty=True)
    with attach(server, box, exec_id) as ws:
        ws.send(json.dumps({"type": "resize", "rows": 41, "cols": 123}))
        ws.send(b"go\n")
        t = drain(ws, until_stdout=b"41 123")
        assert b"41 123" in t.stdout
        # A rejected signal is an error frame; the connection stays open.
        ws.send(json.dumps({"type": "signal", "sig": 9}))
        ws.send(json.dumps({"type": "bogus"}))
        ws.send("not json")
        errors = []
        while len(errors) < 3:
            frame = ws.recv(timeout=300)
            if isinstance(frame, str):
                doc = json.loads(frame)
                assert doc["type"] == "error", doc
                errors.append(doc["message"])
        assert "not allowed" in errors[0] and "bogus" in errors[1]
        ws.send(json.dumps({"type": "signal", "sig": 15}))
        t = drain(ws)
    assert t.exit_code == -15


def test_late_attach_replays_the_backlog_and_reconnect(server: Server, rootfs: str) -> None:
    box = server.create_box(rootfs)["box_id"]
    exec_id = server.exec(box, command="sh", args=["-c", "echo first; echo first-err >&2; read x; echo second $x"])
    while "first" not in server.request("GET", f"/v1/boxes/{box}/executions/{exec_id}/output").json()["stdout"]:
        pass
    with attach(server, box, exec_id) as ws:
        t = drain(ws, until_stdout=b"first\n")
        assert t.stdout == b"first\n"
    # The execution survives the client; a new client gets the backlog again, then live output.
    with attach(server, box, exec_id) as ws:
        ws.send(b"again\n")
        t = drain(ws)
    assert t.stdout == b"first\nsecond again\n"
    assert t.stderr == b"first-err\n"
    assert t.exit_code == 0
    # Attaching to a finished execution replays everything and ends with the exit frame.
    with attach(server, box, exec_id) as ws:
        t = drain(ws)
    assert t.stdout == b"first\nsecond again\n" and t.exit_code == 0


def test_a_client_that_leaves_and_attaches_again_at_once_is_attached(server: Server, rootfs: str) -> None:
    """Its close can reach the client before the server's end of the first session has detached:
    the new attach waits for that instead of being refused as a second client (409)."""
    box = server.create_box(rootfs)["box_id"]
    exec_id = server.exec(box, command="sh", args=["-c", "echo ready; sleep 1000"])
    for _ in range(int(os.environ.get("BOXLITE_TEST_REATTACHES", "300"))):
        with attach(server, box, exec_id) as ws:
            assert drain(ws, until_stdout=b"ready\n").stdout == b"ready\n"
    with attach(server, box, exec_id) as ws:
        ws.send(json.dumps({"type": "signal", "sig": 15}))
        assert drain(ws).exit_code == -15


def test_one_client_at_a_time_and_errors(server: Server, rootfs: str) -> None:
    box = server.create_box(rootfs)["box_id"]
    exec_id = server.exec(box, command="sleep", args=["1000"])
    with attach(server, box, exec_id) as first:
        with pytest.raises(InvalidStatus) as second:
            attach(server, box, exec_id)
        assert second.value.response.status_code == 409
        first.send(json.dumps({"type": "resize", "rows": 10, "cols": 10}))  # no tty: an error frame
        assert json.loads(first.recv(timeout=300))["type"] == "error"
    with pytest.raises(InvalidStatus) as unauthorised:
        attach(server, box, exec_id, key="wrong")
    assert unauthorised.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as missing:
        attach(server, box, "01NOSUCHEXECUTION")
    assert missing.value.response.status_code == 404
    # After the first client left, another may attach.
    with attach(server, box, exec_id) as ws:
        ws.send(json.dumps({"type": "signal", "sig": 15}))
        assert drain(ws).exit_code == -15


def test_orphaned_execution_is_reaped(home, rootfs: str) -> None:
    """A client that leaves and does not come back: SIGHUP after BOXLITE_RECONNECT_GRACE, SIGTERM
    after BOXLITE_SHUTDOWN_GRACE (upstream's reaper, with short periods)."""
    srv = Server(home, ["--allow-host-rootfs"], env={"BOXLITE_RECONNECT_GRACE": "0.5", "BOXLITE_SHUTDOWN_GRACE": "0.5"})
    try:
        box = srv.create_box(rootfs)["box_id"]
        exec_id = srv.exec(box, command="sh", args=["-c", "trap 'echo got-hup' HUP; echo ready; "
                                                          "while true; do sleep 0.1; done"])
        with attach(srv, box, exec_id) as ws:
            drain(ws, until_stdout=b"ready\n")
        done = srv.wait_execution(box, exec_id)
        assert "got-hup" in done["stdout"], done
        assert done["exit_code"] == -15, done
        # An execution nobody attached to is left alone (it may be polled); only the lifetime cap applies.
        quiet = srv.exec(box, command="sleep", args=["1000"])
        other = srv.exec(box, command="sh", args=["-c", "sleep 2; echo done"])
        assert srv.wait_execution(box, other)["stdout"] == "done\n"
        assert srv.request("GET", f"/v1/boxes/{box}/executions/{quiet}").json()["status"] == "running"
        srv.remove_all_boxes()
    finally:
        assert srv.stop() == 0


def test_session_lifetime_cap(home, rootfs: str) -> None:
    srv = Server(home, ["--allow-host-rootfs"], env={"BOXLITE_MAX_SESSION_LIFETIME": "1"})
    try:
        box = srv.create_box(rootfs)["box_id"]
        exec_id = srv.exec(box, command="sleep", args=["1000"])
        while srv.request("GET", f"/v1/boxes/{box}/executions/{exec_id}").status == 200:
            pass  # until the reaper killed and evicted it (ctest's timeout bounds this)
        assert srv.request("GET", f"/v1/boxes/{box}/executions/{exec_id}").status == 404
        srv.remove_all_boxes()
    finally:
        assert srv.stop() == 0


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_client_that_does_not_read_does_not_grow_the_server(server: Server, rootfs: str) -> None:
    box = server.create_box(rootfs)["box_id"]
    size = 64 * 1024 * 1024
    exec_id = server.exec(box, command="sh", args=["-c", f"read go; head -c {size} /dev/zero"])
    with attach(server, box, exec_id) as ws:
        before = rss_bytes(server.proc.pid)
        ws.send(b"go\n")
        # Read nothing for a while: the box's output must wait for us, not pile up in the server.
        peak = before
        for _ in range(20):
            time.sleep(0.1)
            peak = max(peak, rss_bytes(server.proc.pid))
        assert peak - before < 24 * 1024 * 1024, (before, peak)
        t = drain(ws)
    assert len(t.stdout) == size and t.exit_code == 0


def test_attach_to_the_main_command(server: Server, rootfs: str) -> None:
    box = server.create_box(rootfs, entrypoint=["sh", "-c"],
                            cmd=["read line; echo got $line; echo err >&2; exit 7"])["box_id"]
    assert "exit_code" not in server.request("GET", f"/v1/boxes/{box}").json()
    with attach_main(server, box) as ws:
        exec_id = ws.response.headers["x-boxlite-execution-id"]
        assert exec_id
        with pytest.raises(InvalidStatus) as second:
            attach_main(server, box)
        assert second.value.response.status_code == 409
        # The main command is an execution like the others: reachable by its id too.
        r = server.request("GET", f"/v1/boxes/{box}/executions/{exec_id}")
        assert r.status == 200 and r.json()["status"] == "running"
        ws.send(b"hello\n")
        t = drain(ws)
    assert (t.stdout, t.stderr, t.exit_code) == (b"got hello\n", b"err\n", 7)
    assert server.request("GET", f"/v1/boxes/{box}").json()["exit_code"] == 7
    listed = {b["box_id"]: b for b in server.request("GET", "/v1/boxes").json()["boxes"]}
    assert listed[box]["exit_code"] == 7
    # Late attach to the finished command: the same execution, its output replayed, its exit.
    with attach_main(server, box) as ws:
        assert ws.response.headers["x-boxlite-execution-id"] == exec_id
        t = drain(ws)
    assert (t.stdout, t.exit_code) == (b"got hello\n", 7)
    # Starting the box runs the command again: a new execution, no exit code until it exits.
    r = server.request("POST", f"/v1/boxes/{box}/start")
    assert r.status == 200 and "exit_code" not in r.json(), r
    with attach_main(server, box) as ws:
        assert ws.response.headers["x-boxlite-execution-id"] != exec_id
        ws.send(b"again\n")
        t = drain(ws)
    assert (t.stdout, t.exit_code) == (b"got again\n", 7)


def test_attach_to_a_box_without_a_main_command(server: Server, rootfs: str) -> None:
    box = server.create_box(rootfs)["box_id"]
    with pytest.raises(InvalidStatus) as refused:
        attach_main(server, box)
    assert refused.value.response.status_code == 409
    error = json.loads(refused.value.response.body)["error"]
    assert error["code"] == "invalid_state" and "no main command" in error["message"]
    # Starting such a box runs nothing, and it reports no exit code.
    r = server.request("POST", f"/v1/boxes/{box}/start")
    assert r.status == 200 and "exit_code" not in r.json(), r
    with pytest.raises(InvalidStatus) as missing:
        attach_main(server, "no-such-box")
    assert missing.value.response.status_code == 404


def test_main_command_comes_from_the_image(server: Server, rootfs: str, tmp_path: Path) -> None:
    """Without entrypoint/cmd in the request, the image's Entrypoint + Cmd are the main command;
    a request's cmd replaces the image's Cmd and keeps its Entrypoint (as docker run)."""
    if shutil.which("umoci") is None:
        pytest.skip("precondition: umoci is not installed")
    oci, bundle = tmp_path / "oci", tmp_path / "bundle"
    subprocess.run(["umoci", "init", "--layout", str(oci)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{oci}:main"], check=True)
    subprocess.run(["umoci", "unpack", "--image", f"{oci}:main", str(bundle)], check=True, capture_output=True)
    subprocess.run(["cp", "-a", f"{rootfs}/.", str(bundle / "rootfs")], check=True)
    subprocess.run(["umoci", "repack", "--image", f"{oci}:main", str(bundle)], check=True, capture_output=True)
    subprocess.run(["umoci", "config", "--image", f"{oci}:main", "--config.env", "PATH=/bin",
                    "--config.env", "GREETING=from-the-image-env",
                    "--config.entrypoint", "/bin/sh", "--config.entrypoint", "-c",
                    "--config.cmd", "echo from the image; exit 4"], check=True)
    loaded = subprocess.run([os.environ["BOXLITE_CLI"], "--home", str(server.home), "load", "-q", str(oci),
                             "--tag", "test/main:1"], check=True, capture_output=True, text=True)
    image = loaded.stdout.strip().splitlines()[-1]

    r = server.request("POST", "/v1/boxes", {"image": image})
    assert r.status == 201, r
    with attach_main(server, r.json()["box_id"]) as ws:
        t = drain(ws)
    assert (t.stdout, t.exit_code) == (b"from the image\n", 4)

    r = server.request("POST", "/v1/boxes", {"image": image, "cmd": ["echo overridden"]})
    assert r.status == 201, r
    with attach_main(server, r.json()["box_id"]) as ws:
        t = drain(ws)
    assert (t.stdout, t.exit_code) == (b"overridden\n", 0)

    # A box with its own entrypoint still gets the image's environment.
    r = server.request("POST", "/v1/boxes", {"image": image, "entrypoint": ["sh", "-c"], "cmd": ["echo $GREETING"]})
    assert r.status == 201, r
    with attach_main(server, r.json()["box_id"]) as ws:
        t = drain(ws)
    assert (t.stdout, t.exit_code) == (b"from-the-image-env\n", 0)


def test_main_command_on_a_pty(server: Server, rootfs: str) -> None:
    box = server.create_box(rootfs, tty=True, entrypoint=["sh", "-c"],
                            cmd=["read x; stty size; echo err >&2; exit 2"])["box_id"]
    with attach_main(server, box) as ws:
        ws.send(json.dumps({"type": "resize", "rows": 33, "cols": 101}))
        ws.send(b"go\r")
        t = drain(ws)
    # One channel on a PTY: stderr arrives as 0x01 too; the terminal echoes the input.
    assert t.stderr == b"" and b"33 101" in t.stdout and b"err" in t.stdout, t.stdout
    assert t.exit_code == 2
