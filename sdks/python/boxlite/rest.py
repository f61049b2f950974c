"""The remote runtime: ``Boxlite.rest(BoxliteRestOptions(url, credential=ApiKeyCredential(key)))``.

It drives a ``boxlite serve`` (or any server of upstream's REST API) over HTTP and WebSocket and
gives the same ``Box`` and ``Execution`` API as the local runtime, async and sync
(``SyncBoxlite.rest(...)``). It is pure Python: http.client for the routes, ``websockets`` (its
threaded client) for an execution's streams.

The classes here play the part the native module plays for the local runtime: blocking calls,
which the async API runs on the runtime's thread pool, plus non-blocking stream reads whose
readiness an execution's reader thread posts to the awaiting event loop.

Errors come back as the SDK's classes (the envelope's ``type``), with the server's message; a
missing or wrong key raises AuthError.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import http.client
import io
import json
import os
import shutil
import ssl
import tarfile
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Optional

from . import errors
from .errors import AuthError, BoxliteError, InvalidArgumentError, InvalidStateError, UnsupportedError


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_at: Optional[int] = None


class Credential(abc.ABC):
    """Gives the bearer token sent with each request."""

    @abc.abstractmethod
    def get_token(self) -> AccessToken: ...


class ApiKeyCredential(Credential):
    """A fixed API key, sent as ``Authorization: Bearer <key>``."""

    def __init__(self, key: str) -> None:
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError("ApiKeyCredential needs a non-empty key")
        self._key = key

    @staticmethod
    def from_env() -> Optional["ApiKeyCredential"]:
        """``$BOXLITE_API_KEY``, or None when it is unset or empty."""
        key = os.environ.get("BOXLITE_API_KEY", "")
        return ApiKeyCredential(key) if key else None

    def get_token(self) -> AccessToken:
        return AccessToken(self._key, None)

    def __repr__(self) -> str:
        return "ApiKeyCredential(<hidden>)"


class BoxliteRestOptions:
    """Where the server is: ``url`` (http:// or https://), an optional credential and an optional
    path prefix (the ``{prefix}`` segment of multi-tenant servers: /v1/{prefix}/boxes)."""

    def __init__(self, url: str, credential: Optional[Credential] = None, path_prefix: Optional[str] = None) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InvalidArgumentError(f"BoxliteRestOptions: url must be http://HOST[:PORT] or https://..., got {url!r}")
        if path_prefix is not None and (not path_prefix or "/" in path_prefix):
            raise InvalidArgumentError(f"BoxliteRestOptions: path_prefix must be one non-empty segment, got {path_prefix!r}")
        self.url = url.rstrip("/")
        self.credential = credential
        self.path_prefix = path_prefix

    @staticmethod
    def from_env() -> "BoxliteRestOptions":
        """``$BOXLITE_REST_URL`` (required), ``$BOXLITE_API_KEY``, ``$BOXLITE_REST_PATH_PREFIX``."""
        url = os.environ.get("BOXLITE_REST_URL", "")
        if not url:
            raise InvalidArgumentError("BOXLITE_REST_URL is not set")
        return BoxliteRestOptions(url, ApiKeyCredential.from_env(), os.environ.get("BOXLITE_REST_PATH_PREFIX") or None)


# Envelope types the SDK has no class of the same name for.
_TYPE_ALIASES: dict[str, type[BoxliteError]] = {
    "AuthError": AuthError,
    "UpstreamUnavailableError": errors.RpcTransportError,
    "TimeoutError": errors.TimeoutError,
}
_STATUS_FALLBACK: dict[int, type[BoxliteError]] = {
    400: errors.InvalidArgumentError,
    401: AuthError,
    403: AuthError,
    404: errors.NotFoundError,
    409: errors.InvalidStateError,
    422: errors.InvalidArgumentError,
    501: errors.UnsupportedError,
    503: errors.RpcTransportError,
    504: errors.TimeoutError,
}


def _error_from(status: int, body: bytes) -> BoxliteError:
    message, kind = "", ""
    try:
        err = json.loads(body)["error"]
        message, kind = str(err["message"]), str(err["type"])
    except (ValueError, KeyError, TypeError):
        message = body[:500].decode("utf-8", "replace").strip()
    cls = _TYPE_ALIASES.get(kind)
    if cls is None:
        found = getattr(errors, kind, None) if kind.endswith("Error") else None
        cls = found if isinstance(found, type) and issubclass(found, BoxliteError) else None
    if cls is None:
        cls = _STATUS_FALLBACK.get(status, BoxliteError if status < 500 else errors.InternalError)
    return cls(message or f"HTTP {status} from the server")


class _Client:
    """One server: its address, auth and a request helper (a connection per request)."""

    def __init__(self, options: BoxliteRestOptions) -> None:
        parts = urllib.parse.urlsplit(options.url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        self.base = parts.path.rstrip("/") + "/v1" + (f"/{options.path_prefix}" if options.path_prefix else "")
        self.url = options.url
        self.credential = options.credential
        self.ssl_context = ssl.create_default_context() if self.tls else None

    def headers(self) -> dict[str, str]:
        if self.credential is None:
            return {}
        return {"Authorization": f"Bearer {self.credential.get_token().token}"}

    def request(self, method: str, path: str, body: Any = None, *, raw: Optional[bytes] = None,
                ok: tuple[int, ...] = (200, 201, 204)) -> tuple[int, bytes]:
        conn: http.client.HTTPConnection
        if self.tls:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port)
        try:
            hdrs = self.headers()
            data = raw
            if body is not None:
                data = json.dumps(body).encode()
                hdrs["Content-Type"] = "application/json"
            elif raw is not None:
                hdrs["Content-Type"] = "application/x-tar"
            try:
                conn.request(method, self.base + path, body=data, headers=hdrs)
                resp = conn.getresponse()
                payload = resp.read()
            except OSError as error:
                raise errors.RpcTransportError(f"cannot reach {self.url}: {error}") from error
            if resp.status not in ok:
                raise _error_from(resp.status, payload)
            return resp.status, payload
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None) -> Any:
        _, payload = self.request(method, path, body)
        return json.loads(payload) if payload else None

    def ws_url(self, path: str) -> str:
        return ("wss://" if self.tls else "ws://") + f"{self.host}:{self.port}" + self.base + path


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _info_dict(d: dict[str, Any]) -> dict[str, Any]:
    """A BoxResponse as the core's info dict (BoxInfo._from)."""
    status = str(d.get("status", "unknown"))
    return {
        "id": d["box_id"],
        "name": d.get("name"),
        "status": status,
        "running": status == "running",
        "pid": d.get("pid"),
        "created_at": d.get("created_at", ""),
        "image": d.get("image", ""),
        "cpus": d.get("cpus", 0),
        "memory_mib": d.get("memory_mib", 0),
        "engine": "rest",
        "started_at": None,
        "container_id": None,
        "labels": d.get("labels") or {},
    }


def _create_request(options_json: str, name: Optional[str]) -> dict[str, Any]:
    """The core's options JSON (BoxOptions.to_core_json) as upstream's CreateBoxRequest."""
    o = json.loads(options_json)
    body: dict[str, Any] = {}
    rootfs = o.pop("rootfs", None) or {}
    if "image" in rootfs:
        body["image"] = rootfs["image"]
    if "path" in rootfs:
        body["rootfs_path"] = rootfs["path"]
    for key in ("cpus", "memory_mib", "disk_size_gb", "working_dir", "detach", "entrypoint", "cmd", "user"):
        if key in o:
            body[key] = o.pop(key)
    if "env" in o:
        body["env"] = {k: v for k, v in o.pop("env")}
    if o.pop("auto_remove", None):
        raise UnsupportedError("auto_remove is not available through the REST API (use auto_delete on the server)")
    if o:
        raise UnsupportedError(f"the REST API does not accept these box options: {', '.join(sorted(o))}")
    if name is not None:
        body["name"] = name
    return body


# --- executions --------------------------------------------------------------------------------


class _Output:
    """One output stream of a remote execution: what the reader thread received, in order."""

    def __init__(self, execution: "_RestExecution") -> None:
        self._exec = execution
        self._chunks: collections.deque[bytes] = collections.deque()
        self.discarded = False

    def _push(self, data: bytes) -> None:  # under the execution's lock
        if not self.discarded:
            self._chunks.append(data)

    def _take(self, max_bytes: int) -> bytes:
        chunk = self._chunks.popleft()
        if len(chunk) > max_bytes:
            self._chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        return chunk

    def try_read(self, max_bytes: int) -> Optional[bytes]:
        """A chunk, b"" at the end, None when nothing is there yet."""
        with self._exec._cond:
            if self._chunks:
                return self._take(max_bytes)
            return b"" if self._exec._ended else None

    def read(self, max_bytes: int) -> bytes:
        with self._exec._cond:
            while not self._chunks and not self._exec._ended:
                self._exec._cond.wait()
            return self._take(max_bytes) if self._chunks else b""


class _Input:
    def __init__(self, execution: "_RestExecution") -> None:
        self._exec = execution
        self._closed = False

    def try_write(self, data: bytes, offset: int = 0) -> int:
        self.write(bytes(data[offset:]))
        return len(data) - offset

    def write(self, data: bytes) -> None:
        if self._closed:
            raise InvalidStateError("stdin is closed")
        if data:
            self._exec._send(bytes(data))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._exec._send(json.dumps({"type": "stdin_eof"}))


class _RestExecution:
    """A command running on the server, attached over its WebSocket."""

    pid = 0  # the REST API does not report the process id

    def __init__(self, client: _Client, box_id: str, exec_id: Optional[str]) -> None:
        """``exec_id`` None: the box's main command (GET /boxes/{id}/attach), whose execution id
        comes back in the handshake's ``x-boxlite-execution-id`` header."""
        from websockets.sync.client import connect

        self._client = client
        box_path = f"/boxes/{_quote(box_id)}"
        attach_path = f"{box_path}/executions/{_quote(exec_id)}/attach" if exec_id else f"{box_path}/attach"
        what = f"execution {exec_id}" if exec_id else f"the main command of box {box_id}"
        self._cond = threading.Condition()
        self._ended = False
        self._status: Optional[tuple[int, Optional[str], bool]] = None
        self._stdout = _Output(self)
        self._stderr = _Output(self)
        self._taken: set[str] = set()
        self._notify: Optional[Callable[[], None]] = None
        self._send_lock = threading.Lock()
        try:
            self._ws = connect(client.ws_url(attach_path), additional_headers=client.headers(),
                               ssl=client.ssl_context, max_size=None, open_timeout=30)
        except Exception as error:  # noqa: BLE001 - the handshake's refusal becomes the SDK's error
            status = getattr(getattr(error, "response", None), "status_code", None)
            body = getattr(getattr(error, "response", None), "body", b"") or b""
            if status is not None:
                raise _error_from(int(status), bytes(body)) from None
            raise errors.RpcTransportError(f"cannot attach to {what}: {error}") from error
        if not exec_id:
            exec_id = self._ws.response.headers.get("x-boxlite-execution-id") if self._ws.response else None
            if not exec_id:
                self._ws.close()
                raise errors.RpcTransportError(f"attaching to {what}: the server sent no x-boxlite-execution-id")
        self._path = f"{box_path}/executions/{_quote(exec_id)}"
        self.id = exec_id
        self._reader = threading.Thread(target=self._read_loop, name=f"boxlite-rest-{exec_id[:8]}", daemon=True)
        self._reader.start()

    # The async API's hook: called (from the reader thread) whenever something changed.
    def attach_loop(self, loop: asyncio.AbstractEventLoop, poll: Callable[[], None]) -> None:
        def notify() -> None:
            loop.call_soon_threadsafe(poll)

        with self._cond:
            self._notify = notify

    def _changed(self) -> None:  # under the lock
        self._cond.notify_all()
        if self._notify is not None:
            try:
                self._notify()
            except RuntimeError:  # the loop is closed
                self._notify = None

    def _read_loop(self) -> None:
        message: Optional[str] = None
        code: Optional[int] = None
        try:
            for frame in self._ws:
                if isinstance(frame, bytes):
                    if not frame:
                        continue
                    with self._cond:
                        (self._stderr if frame[0] == 2 else self._stdout)._push(frame[1:])
                        self._changed()
                    continue
                doc = json.loads(frame)
                if doc.get("type") == "exit":
                    code = int(doc["exit_code"])
                    break
                if doc.get("type") == "error":
                    message = str(doc.get("message"))
        except Exception as error:  # noqa: BLE001 - a dropped connection ends the streams
            message = message or f"connection to the server lost: {error}"
        finally:
            try:
                self._ws.close()
            except Exception:  # noqa: BLE001
                pass
        if code is None:
            try:
                doc = self._client.json("GET", self._path)
                if doc.get("status") == "completed" and doc.get("exit_code") is not None:
                    code = int(doc["exit_code"])
            except BoxliteError as error:
                message = message or str(error)
        with self._cond:
            self._ended = True
            self._status = (code if code is not None else -1, message if code is None else None, False)
            self._changed()

    def _send(self, data: Any) -> None:
        try:
            with self._send_lock:
                self._ws.send(data)
        except Exception as error:  # noqa: BLE001
            raise errors.RpcTransportError(f"cannot write to execution {self.id}: {error}") from error

    def take_stdin(self) -> Optional[_Input]:
        if "stdin" in self._taken:
            return None
        self._taken.add("stdin")
        return _Input(self)

    def _take(self, name: str, stream: _Output) -> Optional[_Output]:
        with self._cond:
            if name in self._taken:
                return None
            self._taken.add(name)
            return stream

    def take_stdout(self) -> Optional[_Output]:
        return self._take("stdout", self._stdout)

    def take_stderr(self) -> Optional[_Output]:
        return self._take("stderr", self._stderr)

    def _discard(self) -> None:
        with self._cond:
            for name, stream in (("stdout", self._stdout), ("stderr", self._stderr)):
                if name not in self._taken:
                    self._taken.add(name)
                    stream.discarded = True
                    stream._chunks.clear()

    def try_wait(self) -> Optional[tuple[int, Optional[str], bool]]:
        with self._cond:
            return self._status

    def wait(self) -> tuple[int, Optional[str], bool]:
        with self._cond:
            while self._status is None:
                self._cond.wait()
            return self._status

    def collect(self) -> tuple[bytes, bytes, tuple[int, Optional[str], bool]]:
        status = self.wait()
        with self._cond:
            out = b"".join(self._stdout._chunks)
            err = b"".join(self._stderr._chunks)
            self._stdout._chunks.clear()
            self._stderr._chunks.clear()
        return out, err, status

    def kill(self) -> None:
        try:
            self._client.request("DELETE", self._path)
        except errors.NotFoundError:
            pass  # ended and evicted already

    def signal(self, signo: int) -> None:
        self._client.request("POST", self._path + "/signal", {"signal": int(signo)})

    def resize_tty(self, rows: int, cols: int) -> None:
        self._client.request("POST", self._path + "/resize", {"rows": int(rows), "cols": int(cols)})


# --- boxes and the runtime ---------------------------------------------------------------------


class _RestBox:
    def __init__(self, client: _Client, doc: dict[str, Any]) -> None:
        self._client = client
        self.id: str = doc["box_id"]
        self.name: Optional[str] = doc.get("name")
        self._path = f"/boxes/{_quote(self.id)}"

    def info(self) -> dict[str, Any]:
        return _info_dict(self._client.json("GET", self._path))

    def start(self) -> None:
        self._client.request("POST", self._path + "/start")

    def stop(self) -> None:
        self._client.request("POST", self._path + "/stop")

    def metrics(self) -> dict[str, Any]:
        from .info import BoxMetrics

        doc = self._client.json("GET", self._path + "/metrics")
        known = set(BoxMetrics.__dataclass_fields__)
        return {k: v for k, v in doc.items() if k in known}

    def agent_alive(self) -> bool:
        return True  # nothing to connect first: exec() goes straight to the server

    def ensure_agent(self) -> None:
        pass

    def begin_exec(self, *args: Any) -> None:
        return None  # the async API then runs exec() on its pool

    def exec(self, program: str, args: list[str], env: list[tuple[str, str]], tty: bool, user: Optional[str],
             cwd: Optional[str], timeout_secs: Optional[float]) -> _RestExecution:
        if user is not None:
            raise UnsupportedError("exec(user=...) is not available through the REST API")
        body: dict[str, Any] = {"command": program, "args": list(args), "tty": bool(tty)}
        if env:
            body["env"] = {k: v for k, v in env}
        if cwd is not None:
            body["working_dir"] = cwd
        if timeout_secs is not None:
            body["timeout_seconds"] = float(timeout_secs)
        exec_id = str(self._client.json("POST", self._path + "/exec", body)["execution_id"])
        return _RestExecution(self._client, self.id, exec_id)

    def attach(self, execution_id: Optional[str] = None) -> _RestExecution:
        """Attaches to an execution, or with no id to the box's main command (its entrypoint and
        cmd), which the server starts when it is not running yet."""
        return _RestExecution(self._client, self.id, execution_id)

    def copy_in(self, host_path: str, box_path: str) -> None:
        """``box_path`` becomes a copy of the host file or folder ``host_path``."""
        dest = box_path.rstrip("/")
        parent, base = os.path.split(dest)
        if not dest.startswith("/") or not base:
            raise InvalidArgumentError(f"copy_in: the box path must be absolute and name a file or folder, got {box_path!r}")
        if not os.path.exists(host_path):
            raise errors.NotFoundError(f"copy_in: no such host path: {host_path}")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(host_path, arcname=base)
        self._client.request("PUT", f"{self._path}/files?path={urllib.parse.quote(parent or '/')}", raw=buf.getvalue())

    def copy_out(self, box_path: str, host_path: str) -> None:
        """``host_path`` becomes a copy of the box's file or folder ``box_path``."""
        _, payload = self._client.request("GET", f"{self._path}/files?path={urllib.parse.quote(box_path)}")
        base = os.path.basename(box_path.rstrip("/")) or "."
        scratch = tempfile.mkdtemp(prefix="boxlite-copy-out-", dir=os.path.dirname(os.path.abspath(host_path)))
        try:
            with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
                tar.extractall(scratch, filter="data")  # refuses absolute paths, .. and links out
            got = os.path.join(scratch, base)
            if not os.path.lexists(got):
                raise errors.StorageError(f"copy_out: the server's archive has no {base!r}")
            if os.path.isdir(host_path) and not os.path.isdir(got):
                os.replace(got, os.path.join(host_path, base))
            else:
                if os.path.isdir(host_path):
                    shutil.rmtree(host_path)
                os.replace(got, host_path)
        except tarfile.TarError as error:
            raise errors.StorageError(f"copy_out: the server's archive is unusable: {error}") from error
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


class _RestRuntime:
    """The REST counterpart of the native Runtime."""

    engine = "rest"

    def __init__(self, options: BoxliteRestOptions) -> None:
        if not isinstance(options, BoxliteRestOptions):
            raise InvalidArgumentError("Boxlite.rest() takes a BoxliteRestOptions")
        self._client = _Client(options)

    @property
    def home_dir(self) -> str:
        return self._client.url

    def create(self, options_json: str, name: Optional[str]) -> _RestBox:
        return _RestBox(self._client, self._client.json("POST", "/boxes", _create_request(options_json, name)))

    def _doc(self, id_or_name: str) -> Optional[dict[str, Any]]:
        try:
            doc: dict[str, Any] = self._client.json("GET", f"/boxes/{_quote(id_or_name)}")
            return doc
        except errors.NotFoundError:
            return None

    def get(self, id_or_name: str) -> Optional[_RestBox]:
        doc = self._doc(id_or_name)
        return None if doc is None else _RestBox(self._client, doc)

    def get_info(self, id_or_name: str) -> Optional[dict[str, Any]]:
        doc = self._doc(id_or_name)
        return None if doc is None else _info_dict(doc)

    def list_info(self) -> list[dict[str, Any]]:
        return [_info_dict(d) for d in self._client.json("GET", "/boxes")["boxes"]]

    def remove(self, id_or_name: str, force: bool = False) -> None:
        self._client.request("DELETE", f"/boxes/{_quote(id_or_name)}?force={'true' if force else 'false'}")

    def metrics(self) -> dict[str, Any]:
        from .info import RuntimeMetrics

        doc = self._client.json("GET", "/metrics")
        return {k: doc.get(k, 0) for k in RuntimeMetrics.__dataclass_fields__}

    def pull_image(self, reference: str) -> dict[str, Any]:
        raise UnsupportedError("images are not managed through the REST API (the server pulls on create)")

    def list_images(self) -> list[dict[str, Any]]:
        raise UnsupportedError("images are not managed through the REST API")

    def load_images(self, path: str, reference: Optional[str] = None) -> list[dict[str, Any]]:
        raise UnsupportedError("images are not managed through the REST API")


__all__ = ["AccessToken", "ApiKeyCredential", "BoxliteRestOptions", "Credential"]
