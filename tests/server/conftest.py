"""Fixtures for the `boxlite serve` tests: the busybox rootfs (as tests/support builds it), and a
server started from this build's CLI on a free loopback port with a temporary home, on the
namespace engine. A test that cannot run here skips with a reason that starts with
"precondition: "."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

API_KEY = "test-key-0123456789"


sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "support" / "python"))
from busybox_rootfs import busybox_rootfs_path  # noqa: E402  (the busybox rootfs, shared)


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def error(self) -> dict[str, Any]:
        """The envelope's error object; fails the test when the body is not the envelope."""
        doc = self.json()
        assert set(doc) == {"error"}, doc
        err = doc["error"]
        assert isinstance(err["message"], str) and err["message"], err
        assert isinstance(err["type"], str) and err["type"][0].isupper(), err
        assert isinstance(err["code"], str) and err["code"] == err["code"].lower(), err
        return err

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.body[:300]!r})"


class Server:
    """A running `boxlite serve` and a small client for it."""

    def __init__(self, home: Path, extra: list[str], tls: ssl.SSLContext | None = None,
                 api_key: str | None = API_KEY, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.api_key = api_key
        self.tls = tls
        cli = os.environ.get("BOXLITE_CLI")
        if not cli:
            pytest.fail("BOXLITE_CLI is not set (run through ctest)")
        args = [cli, "--home", str(home), "--engine", "namespace", "serve", "--port", "0", *extra]
        if api_key:
            args += ["--api-key", api_key]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            _, err = self.proc.communicate()
            pytest.fail(f"boxlite serve did not start: {line!r} {err!r}")
        self.port = int(line.strip().rsplit(":", 1)[1])

    def connection(self) -> http.client.HTTPConnection:
        if self.tls is not None:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=120, context=self.tls)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def request(self, method: str, path: str, body: Any = None, *, auth: str | None = "default",
                headers: dict[str, str] | None = None, raw: bytes | None = None) -> Response:
        conn = self.connection()
        try:
            hdrs = dict(headers or {})
            if auth == "default" and self.api_key:
                hdrs["Authorization"] = f"Bearer {self.api_key}"
            elif auth not in (None, "default"):
                hdrs["Authorization"] = auth
            data: bytes | None = raw
            if body is not None:
                data = json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload)
        finally:
            conn.close()

    def create_box(self, rootfs: str, **fields: Any) -> dict[str, Any]:
        r = self.request("POST", "/v1/boxes", {"rootfs_path": rootfs, **fields})
        assert r.status == 201, r
        return r.json()  # type: ignore[no-any-return]

    def exec(self, box: str, **fields: Any) -> str:
        r = self.request("POST", f"/v1/boxes/{box}/exec", fields)
        assert r.status == 201, r
        return r.json()["execution_id"]  # type: ignore[no-any-return]

    def wait_execution(self, box: str, exec_id: str) -> dict[str, Any]:
        """Polls until the execution completed (no time bound: ctest's timeout is the bound)."""
        while True:
            r = self.request("GET", f"/v1/boxes/{box}/executions/{exec_id}/output")
            assert r.status == 200, r
            doc = r.json()
            if doc["status"] == "completed":
                return doc  # type: ignore[no-any-return]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def remove_all_boxes(self) -> None:
        if self.proc.poll() is not None:
            return
        r = self.request("GET", "/v1/boxes")
        if r.status != 200:
            return
        for box in r.json()["boxes"]:
            self.request("DELETE", f"/v1/boxes/{box['box_id']}?force=true")


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("precondition: not root (the namespace engine needs root)")


@pytest.fixture
def rootfs() -> str:
    require_root()
    return str(busybox_rootfs_path())


@pytest.fixture
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="boxlite-serve-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(home: Path, rootfs: str) -> Iterator[Server]:
    srv = Server(home, ["--allow-host-rootfs"])
    yield srv
    srv.remove_all_boxes()
    assert srv.stop() == 0
