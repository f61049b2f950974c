"""Every REST route of `boxlite serve` through http.client, with its error paths."""

from __future__ import annotations

import io
import tarfile

import pytest

from conftest import API_KEY, Server


def make_tar(entries: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Auth, config, me, metrics
# ---------------------------------------------------------------------------------------------

def test_config_is_public_and_everything_else_needs_the_key(server: Server) -> None:
    r = server.request("GET", "/v1/config", auth=None)
    assert r.status == 200, r
    caps = r.json()["capabilities"]
    assert set(caps) == {"linux_capabilities_enabled", "snapshots_enabled", "clone_enabled", "export_enabled",
                         "import_enabled"}
    for path in ("/v1/me", "/v1/metrics", "/v1/boxes", "/v1/boxes/x", "/v1/volumes"):
        for auth in (None, "Bearer wrong-key", f"Basic {API_KEY}", "Bearer ", f"Bearer {API_KEY}x"):
            r = server.request("GET", path, auth=auth)
            assert r.status == 401, (path, auth, r)
            err = r.error()
            assert (err["type"], err["code"]) == ("AuthError", "unauthenticated")
            assert err["message"] == "invalid or missing API key"
    assert server.request("GET", "/v1/me", auth=f"bearer {API_KEY}").status == 200


def test_me_and_runtime_metrics(server: Server, rootfs: str) -> None:
    me = server.request("GET", "/v1/me").json()
    assert me["sub"] == "local-anonymous"
    assert me["principal_type"] == "service_account"
    assert "box:exec" in me["scopes"] and me["prefix"] is None and me["expires_at"] is None
    before = server.request("GET", "/v1/metrics").json()
    assert set(before) == {"boxes_created_total", "boxes_failed_total", "boxes_stopped_total", "num_running_boxes",
                           "total_commands_executed", "total_exec_errors"}
    box = server.create_box(rootfs)
    server.wait_execution(box["box_id"], server.exec(box["box_id"], command="true"))
    after = server.request("GET", "/v1/metrics").json()
    assert after["boxes_created_total"] == before["boxes_created_total"] + 1
    assert after["total_commands_executed"] >= before["total_commands_executed"] + 1
    assert after["num_running_boxes"] == 1


def test_request_id_is_echoed_or_made(server: Server) -> None:
    r = server.request("GET", "/v1/boxes/nope", headers={"X-Request-Id": "abc-123"})
    assert r.status == 404
    assert r.headers["x-request-id"] == "abc-123"
    assert r.error()["request_id"] == "abc-123"
    r = server.request("GET", "/v1/boxes")
    assert len(r.headers["x-request-id"]) == 36


# ---------------------------------------------------------------------------------------------
# Boxes
# ---------------------------------------------------------------------------------------------

def test_box_lifecycle(server: Server, rootfs: str) -> None:
    box = server.create_box(rootfs, name="web", cpus=1, memory_mib=256, env={"A": "1"}, auto_delete=0)
    assert box["name"] == "web" and box["status"] == "configured" and box["pid"] is None
    assert box["cpus"] == 1 and box["memory_mib"] == 256 and box["image"] == rootfs
    assert set(box) >= {"box_id", "created_at", "updated_at", "labels", "auto_pause", "auto_delete", "auto_resume"}
    box_id = box["box_id"]

    listed = server.request("GET", "/v1/boxes").json()["boxes"]
    assert [b["box_id"] for b in listed] == [box_id]
    assert server.request("GET", f"/v1/boxes/{box_id}").json()["name"] == "web"
    assert server.request("GET", "/v1/boxes/web").json()["box_id"] == box_id  # by name too
    head = server.request("HEAD", "/v1/boxes/web")
    assert head.status == 204 and head.body == b""
    assert server.request("HEAD", "/v1/boxes/nothing-here").status == 404

    again = server.request("POST", "/v1/boxes", {"rootfs_path": rootfs, "name": "web"})
    assert again.status == 409, again
    assert again.error()["code"] == "already_exists"

    started = server.request("POST", f"/v1/boxes/{box_id}/start")
    assert started.status == 200, started
    assert started.json()["status"] == "running" and started.json()["pid"] is not None
    metrics = server.request("GET", f"/v1/boxes/{box_id}/metrics")
    assert metrics.status == 200
    assert set(metrics.json()) >= {"commands_executed_total", "exec_errors_total", "bytes_sent_total",
                                   "bytes_received_total", "cpu_percent", "memory_bytes", "boot_timing"}
    stopped = server.request("POST", f"/v1/boxes/{box_id}/stop")
    assert stopped.status == 200, stopped
    assert stopped.json()["status"] == "stopped"
    assert server.request("GET", "/v1/metrics").json()["boxes_stopped_total"] == 1

    assert server.request("DELETE", f"/v1/boxes/{box_id}").status == 204
    gone = server.request("GET", f"/v1/boxes/{box_id}")
    assert gone.status == 404
    assert gone.error()["code"] == "not_found"
    assert server.request("DELETE", f"/v1/boxes/{box_id}").status == 404


def test_delete_running_box_needs_force(server: Server, rootfs: str) -> None:
    box = server.create_box(rootfs)
    assert server.request("POST", f"/v1/boxes/{box['box_id']}/start").status == 200
    refused = server.request("DELETE", f"/v1/boxes/{box['box_id']}")
    assert refused.status == 409, refused
    assert refused.error()["code"] == "invalid_state"
    assert server.request("DELETE", f"/v1/boxes/{box['box_id']}?force=maybe").status == 400
    assert server.request("DELETE", f"/v1/boxes/{box['box_id']}?force=true").status == 204


@pytest.mark.parametrize("body,status,fragment", [
    ({"bogus": 1}, 422, "unknown field 'bogus'"),
    ({"security": "maximum"}, 422, "unknown field 'security'"),
    ({"volumes": []}, 422, "unknown field 'volumes'"),
    ({"secrets": []}, 422, "unknown field 'secrets'"),
    ({"ports": []}, 422, "unknown field 'ports'"),
    ({"cpus": "two"}, 422, "'cpus'"),
    ({"cpus": -1}, 422, "'cpus'"),
    ({"env": ["A=1"]}, 422, "'env'"),
    ({"cmd": "ls"}, 422, "'cmd'"),
    ({"network": {"mode": "sometimes"}}, 422, "network.mode"),
    ({"network": {"bogus": 1}}, 422, "network.bogus"),
    ({"advanced": {"capabilities": {"add": ["SYS_ADMIN"]}}}, 400, "capabilities"),
    ({"tty": "yes"}, 422, "'tty'"),
    ({"rootfs_path": "relative/dir"}, 400, "rootfs_path"),
    ({"rootfs_path": "/nonexistent-dir"}, 400, "rootfs_path"),
    ({"memory_mib": 1}, 400, "memory"),
    ({"name": "bad name!"}, 400, "name"),
])
def test_create_rejects_bad_bodies(server: Server, body: dict, status: int, fragment: str) -> None:
    r = server.request("POST", "/v1/boxes", body)
    assert r.status == status, r
    err = r.error()
    assert fragment in err["message"], err
    assert server.request("GET", "/v1/boxes").json()["boxes"] == []


def test_malformed_json_is_400(server: Server) -> None:
    for raw in (b"{bad", b"[1,2", b"\xff\xfe"):
        r = server.request("POST", "/v1/boxes", raw=raw, headers={"Content-Type": "application/json"})
        assert r.status == 400, r
        assert r.error()["code"] == "invalid_argument"
    r = server.request("POST", "/v1/boxes", raw=b"[1]")
    assert r.status == 422, r


def test_rootfs_path_is_off_unless_allowed(home, rootfs: str) -> None:
    srv = Server(home, [])
    try:
        r = srv.request("POST", "/v1/boxes", {"rootfs_path": rootfs})
        assert r.status == 400, r
        assert "--allow-host-rootfs" in r.error()["message"]
    finally:
        assert srv.stop() == 0


# ---------------------------------------------------------------------------------------------
# Executions
# ---------------------------------------------------------------------------------------------

def test_exec_output_exit_code_stdin_env_workdir(server: Server, rootfs: str) -> None:
    box = server.create_box(rootfs)["box_id"]
    exec_id = server.exec(box, command="sh", args=["-c", "echo out; echo err >&2; exit 3"])
    done = server.wait_execution(box, exec_id)
    assert (done["stdout"], done["stderr"], done["exit_code"]) == ("out\n", "err\n", 3)
    status = server.request("GET", f"/v1/boxes/{box}/executions/{exec_id}").json()
    assert status == {"execution_id": exec_id, "status": "completed", "exit_code": 3}

    exec_id = server.exec(box, command="sh", args=["-c", 'cat; echo "$GREETING"; pwd'], stdin="from stdin\n",
                          env={"GREETING": "hello"}, working_dir="/tmp", timeout_seconds=60)
    done = server.wait_execution(box, exec_id)
    assert done["stdout"] == "from stdin\nhello\n/tmp\n"
    assert done["exit_code"] == 0


def test_exec_signal_kill_and_resize(server: Server, rootfs: str) -> None:
    box = server.create_box(rootfs)["box_id"]
    exec_id = server.exec(box, command="sleep", args=["1000"])
    running = server.request("GET", f"/v1/boxes/{box}/executions/{exec_id}").json()
    assert running == {"execution_id": exec_id, "status": "running"}
    base = f"/v1/boxes/{box}/executions/{exec_id}"
    for bad in (9, 19, 0, 99):
        r = server.request("POST", f"{base}/signal", {"signal": bad})
        assert r.status == 400, (bad, r)
        assert "not allowed" in r.error()["message"]
    assert server.request("POST", f"{base}/signal", {"signal": "TERM"}).status == 422
    assert server.request("POST", f"{base}/signal", {"sig": 15}).status == 422
    r = server.request("POST", f"{base}/resize", {"cols": 80, "rows": 24})
    assert r.status == 409, r  # no terminal
    assert server.request("POST", f"{base}/signal", {"signal": 15}).status == 204
    assert server.wait_execution(box, exec_id)["exit_code"] == -15
    assert server.request("POST", f"{base}/signal", {"signal": 15}).status == 409

    tty_id = server.exec(box, command="sh", args=["-c", "read x; stty size"], tty=True)
    tbase = f"/v1/boxes/{box}/executions/{tty_id}"
    assert server.request("POST", f"{tbase}/resize", {"cols": 0, "rows": 24}).status == 400
    assert server.request("POST", f"{tbase}/resize", {"cols": 132}).status == 422
    assert server.request("POST", f"{tbase}/resize", {"cols": 132, "rows": 43}).status == 204
    assert server.request("DELETE", tbase).status == 204  # SIGKILL + evict
    assert server.request("GET", tbase).status == 404


def test_exec_errors(server: Server, rootfs: str) -> None:
    assert server.request("POST", "/v1/boxes/nope/exec", {"command": "true"}).status == 404
    box = server.create_box(rootfs)["box_id"]
    for body, status in (({}, 422), ({"command": ""}, 422), ({"command": "ls", "user": "root"}, 422),
                         ({"command": "ls", "args": "-l"}, 422), ({"command": "ls", "timeout_seconds": -1}, 422),
                         ({"command": "ls", "tty": "yes"}, 422)):
        r = server.request("POST", f"/v1/boxes/{box}/exec", body)
        assert r.status == status, (body, r)
        r.error()
    r = server.request("GET", f"/v1/boxes/{box}/executions/01NOTANEXECUTION")
    assert r.status == 404 and r.error()["code"] == "not_found"
    other = server.create_box(rootfs)["box_id"]
    exec_id = server.exec(box, command="true")
    # An execution is reached through its own box only.
    assert server.request("GET", f"/v1/boxes/{other}/executions/{exec_id}").status == 404
    r = server.request("GET", f"/v1/boxes/{box}/executions/{exec_id}/attach")
    assert r.status == 400 and "WebSocket" in r.error()["message"]
    r = server.request("GET", f"/v1/boxes/{box}/attach")
    assert r.status == 400 and "WebSocket" in r.error()["message"]


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def test_files_put_and_get(server: Server, rootfs: str) -> None:
    box = server.create_box(rootfs)["box_id"]
    upload = make_tar({"hello.txt": b"hello files\n", "sub/dir/deep.txt": b"deep\n"}, symlinks={"link": "hello.txt"})
    r = server.request("PUT", f"/v1/boxes/{box}/files?path=/tmp/up", raw=upload)
    assert r.status == 204, r
    done = server.wait_execution(box, server.exec(box, command="sh", args=[
        "-c", "cat /tmp/up/hello.txt /tmp/up/sub/dir/deep.txt; readlink /tmp/up/link"]))
    assert done["stdout"] == "hello files\ndeep\nhello.txt\n", done

    r = server.request("GET", f"/v1/boxes/{box}/files?path=/tmp/up")
    assert r.status == 200, r
    assert r.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(r.body)) as tar:
        names = set(tar.getnames())
        assert {"up/hello.txt", "up/sub/dir/deep.txt", "up/link"} <= names, names
        member = tar.extractfile("up/hello.txt")
        assert member is not None and member.read() == b"hello files\n"
    r = server.request("GET", f"/v1/boxes/{box}/files?path=/etc/hostname")
    with tarfile.open(fileobj=io.BytesIO(r.body)) as tar:
        assert tar.getnames() == ["hostname"]
    missing = server.request("GET", f"/v1/boxes/{box}/files?path=/no/such/file")
    assert missing.status >= 400, missing
    missing.error()


@pytest.mark.parametrize("query", ["path=/tmp/../etc", "path=../etc", "path=tmp", "", "path=",
                                   "path=%2Ftmp%2F..%2Fetc"])
def test_files_refuse_bad_paths(server: Server, rootfs: str, query: str) -> None:
    box = server.create_box(rootfs)["box_id"]
    for method, raw in (("PUT", make_tar({"a": b"a"})), ("GET", None)):
        r = server.request(method, f"/v1/boxes/{box}/files?{query}", raw=raw)
        assert r.status == 400, (method, query, r)
        r.error()


@pytest.mark.parametrize("name", ["../escape.txt", "/abs/escape.txt", "ok/../../escape.txt"])
def test_files_refuse_traversal_in_the_tar(server: Server, rootfs: str, name: str) -> None:
    box = server.create_box(rootfs)["box_id"]
    r = server.request("PUT", f"/v1/boxes/{box}/files?path=/tmp/t", raw=make_tar({name: b"x"}))
    assert r.status == 400, r
    assert "outside" in r.error()["message"]
    done = server.wait_execution(box, server.exec(box, command="sh", args=["-c", "ls /tmp/t /escape.txt /tmp/escape.txt"]))
    assert "escape" not in done["stdout"]


def test_files_refuse_a_bad_tar(server: Server, rootfs: str) -> None:
    box = server.create_box(rootfs)["box_id"]
    r = server.request("PUT", f"/v1/boxes/{box}/files?path=/tmp", raw=b"this is not a tar archive" * 40)
    assert r.status == 400, r
    r.error()


# ---------------------------------------------------------------------------------------------
# Routes not implemented, unknown routes, wrong methods
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("POST", "/v1/volumes"), ("GET", "/v1/volumes"), ("GET", "/v1/volumes/v1"), ("DELETE", "/v1/volumes/v1"),
    ("POST", "/v1/boxes/{box}/snapshots"), ("GET", "/v1/boxes/{box}/snapshots"),
    ("GET", "/v1/boxes/{box}/snapshots/s1"), ("DELETE", "/v1/boxes/{box}/snapshots/s1"),
    ("POST", "/v1/boxes/{box}/snapshots/s1/restore"), ("POST", "/v1/boxes/{box}/clone"),
    ("POST", "/v1/boxes/{box}/export"), ("POST", "/v1/boxes/import"),
])
def test_not_implemented_routes_answer_501(server: Server, rootfs: str, method: str, path: str) -> None:
    box = server.create_box(rootfs)["box_id"]
    r = server.request(method, path.format(box=box))
    assert r.status == 501, r
    assert r.error()["code"] == "not_implemented"


def test_unknown_routes_and_methods(server: Server) -> None:
    for path in ("/", "/v2/boxes", "/v1/nothing", "/v1/boxes/x/y/z/w/v/u"):
        r = server.request("GET", path)
        assert r.status == 404, (path, r)
        assert r.error()["code"] == "not_found"
    r = server.request("PATCH", "/v1/boxes")
    assert r.status == 405, r
    assert r.error()["code"] == "method_not_allowed"
    assert "GET" in r.headers["allow"]
    assert server.request("DELETE", "/v1/config").status == 405
    for method, path in (("TRACE", "/v1/boxes/b/snapshots"), ("PUT", "/v1/boxes/b/snapshots/s"),
                         ("GET", "/v1/boxes/b/snapshots/s/restore"), ("PUT", "/v1/volumes"),
                         ("POST", "/v1/volumes/v"), ("GET", "/v1/boxes/b/clone"), ("DELETE", "/v1/boxes/import")):
        r = server.request(method, path)
        assert r.status == 405, (method, path, r)
        r.error()


def test_keep_alive_serves_several_requests_on_one_connection(server: Server) -> None:
    conn = server.connection()
    try:
        for _ in range(20):
            conn.request("GET", "/v1/boxes", headers={"Authorization": f"Bearer {API_KEY}"})
            resp = conn.getresponse()
            assert resp.status == 200
            resp.read()
    finally:
        conn.close()
