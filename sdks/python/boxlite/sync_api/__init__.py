"""The sync API: SyncBoxlite, SyncBox, SyncExecution, SyncSimpleBox, SyncCodeBox.

Unlike upstream's (greenlet over the async API), these call the blocking C++ core directly, with
the GIL released while they wait. So they need no extra package, work inside a running asyncio
loop (they block it, as any blocking call does), and Ctrl-C interrupts their waits.
"""

from __future__ import annotations

import builtins
import codecs
import os
import threading
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Sequence, Union

from .._native import core
from ..errors import AlreadyExistsError, ExecutionError, InvalidStateError, TimeoutError, UnsupportedError
from ..info import BoxInfo, BoxMetrics, ExecResult, ImageInfo, ImagePullResult, RuntimeMetrics
from ..options import BoxOptions, CopyOptions, Options
from ..simplebox import DEFAULT_MAX_OUTPUT_BYTES, _check_max_output_bytes

if TYPE_CHECKING:
    from ..rest import BoxliteRestOptions

EnvArg = Optional[Union[Sequence[tuple[str, str]], Mapping[str, str]]]
_READ_CHUNK = 256 * 1024


def _env_pairs(env: EnvArg) -> list[tuple[str, str]]:
    if env is None:
        return []
    if isinstance(env, Mapping):
        return [(str(k), str(v)) for k, v in env.items()]
    return [(str(k), str(v)) for k, v in env]


class SyncExecStream:
    """``for chunk in execution.stdout()``: text chunks, as the async streams."""

    def __init__(self, native: Any) -> None:
        self._native = native
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._ended = False

    def read_bytes(self) -> bytes:
        return bytes(self._native.read(_READ_CHUNK))

    def __iter__(self) -> Iterator[str]:
        while not self._ended:
            chunk = self.read_bytes()
            if not chunk:
                self._ended = True
                tail = self._decoder.decode(b"", final=True)
                if tail:
                    yield tail
                return
            text = self._decoder.decode(chunk)
            if text:
                yield text


class SyncExecStdin:
    def __init__(self, native: Any) -> None:
        self._native = native
        self._closed = False

    def send_input(self, data: Union[bytes, bytearray, memoryview, str]) -> None:
        self._native.write(data.encode() if isinstance(data, str) else bytes(data))

    def close(self) -> None:
        self._closed = True
        self._native.close()

    def is_closed(self) -> bool:
        return self._closed


class SyncExecution:
    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def id(self) -> str:
        return str(self._native.id)

    @property
    def pid(self) -> int:
        return int(self._native.pid)

    def stdin(self) -> SyncExecStdin:
        native = self._native.take_stdin()
        if native is None:
            raise InvalidStateError("stdin stream not available (already taken)")
        return SyncExecStdin(native)

    def stdout(self) -> SyncExecStream:
        native = self._native.take_stdout()
        if native is None:
            raise InvalidStateError("stdout stream not available (already taken)")
        return SyncExecStream(native)

    def stderr(self) -> SyncExecStream:
        native = self._native.take_stderr()
        if native is None:
            raise InvalidStateError("stderr stream not available (already taken)")
        return SyncExecStream(native)

    def wait(self) -> ExecResult:
        if hasattr(self._native, "_discard"):  # the REST runtime's execution
            self._native._discard()
        self._native.take_stdout()
        self._native.take_stderr()
        code, message, timed_out = self._native.wait()
        return ExecResult(exit_code=code, error_message=message, timed_out=timed_out)

    def kill(self) -> None:
        self._native.kill()

    def signal(self, signal: int) -> None:
        self._native.signal(int(signal))

    def resize_tty(self, rows: int, cols: int) -> None:
        self._native.resize_tty(int(rows), int(cols))


class SyncBox:
    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def id(self) -> str:
        return str(self._native.id)

    @property
    def name(self) -> Optional[str]:
        name: Optional[str] = self._native.name
        return name

    def info(self) -> BoxInfo:
        return BoxInfo._from(self._native.info())

    def start(self) -> None:
        self._native.start()

    def stop(self) -> None:
        self._native.stop()

    def metrics(self) -> BoxMetrics:
        return BoxMetrics(**self._native.metrics())

    def exec(
        self,
        cmd: str,
        args: Optional[Sequence[str]] = None,
        env: EnvArg = None,
        tty: bool = False,
        user: Optional[str] = None,
        timeout_secs: Optional[float] = None,
        cwd: Optional[str] = None,
    ) -> SyncExecution:
        native = self._native.exec(cmd, [str(a) for a in (args or [])], _env_pairs(env), tty, user, cwd, timeout_secs)
        return SyncExecution(native)

    def attach(self, execution_id: Optional[str] = None) -> SyncExecution:
        """Box.attach(): an execution by id, or the box's main command (``Boxlite.rest`` only)."""
        attach = getattr(self._native, "attach", None)
        if attach is None:
            raise UnsupportedError(
                "Box.attach() needs a runtime from Boxlite.rest(...): locally, keep the Execution that exec() returns"
            )
        return SyncExecution(attach(execution_id))

    def copy_in(self, host_path: str, container_dest: str, copy_options: Optional[CopyOptions] = None) -> None:
        (copy_options or CopyOptions()).check()
        self._native.copy_in(os.fspath(host_path), container_dest)

    def copy_out(self, container_src: str, host_dest: str, copy_options: Optional[CopyOptions] = None) -> None:
        (copy_options or CopyOptions()).check()
        self._native.copy_out(container_src, os.fspath(host_dest))

    def __enter__(self) -> "SyncBox":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SyncImageHandle:
    def __init__(self, native: Any) -> None:
        self._native = native

    def pull(self, reference: str) -> ImagePullResult:
        d = self._native.pull_image(reference)
        return ImagePullResult(d["reference"], d["id"], d["layer_count"])

    def list(self) -> list[ImageInfo]:
        return [ImageInfo._from(d) for d in self._native.list_images()]

    def load(self, path: str, reference: Optional[str] = None) -> "builtins.list[ImageInfo]":
        return [ImageInfo._from(d) for d in self._native.load_images(path, reference)]


_default_lock = threading.Lock()
_default_options: Optional[Options] = None
_default: Optional["SyncBoxlite"] = None


class SyncBoxlite:
    """The runtime, blocking. ``start()``/``stop()`` and ``with`` are accepted as upstream (no
    dispatcher is needed here)."""

    def __init__(self, options: Optional[Options] = None, *, _native: Any = None) -> None:
        if _native is None:
            options = options or Options()
            _native = core.Runtime.open(options.home_dir, options.registry_hosts(), options.engine)
        self._native = _native
        self._handed_out: list[SyncBox] = []

    @staticmethod
    def rest(options: "BoxliteRestOptions") -> "SyncBoxlite":
        """A runtime driving a remote ``boxlite serve`` (see boxlite.rest), blocking."""
        from ..rest import _RestRuntime

        return SyncBoxlite(_native=_RestRuntime(options))

    @staticmethod
    def default() -> "SyncBoxlite":
        global _default
        with _default_lock:
            if _default is None:
                if _default_options is not None:
                    _default = SyncBoxlite(_default_options)
                else:
                    _default = SyncBoxlite(_native=core.Runtime.default())
            return _default

    @staticmethod
    def init_default(options: Options) -> None:
        global _default_options
        with _default_lock:
            if _default is not None:
                raise InvalidStateError("the default runtime is already in use; init_default() must come first")
            _default_options = options

    @property
    def runtime(self) -> "SyncBoxlite":
        return self

    @property
    def home_dir(self) -> str:
        return str(self._native.home_dir)

    @property
    def images(self) -> SyncImageHandle:
        return SyncImageHandle(self._native)

    def start(self) -> "SyncBoxlite":
        return self

    def stop(self) -> None:
        pass

    def __enter__(self) -> "SyncBoxlite":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def create(self, options: Optional[BoxOptions] = None, name: Optional[str] = None) -> SyncBox:
        box = SyncBox(self._native.create((options or BoxOptions()).to_core_json(), name))
        self._handed_out.append(box)
        return box

    def get_or_create(self, options: Optional[BoxOptions] = None, name: Optional[str] = None) -> tuple[SyncBox, bool]:
        if name is not None:
            existing = self.get(name)
            if existing is not None:
                return existing, False
        try:
            return self.create(options, name), True
        except AlreadyExistsError:
            existing = self.get(name) if name is not None else None
            if existing is None:
                raise
            return existing, False

    def get(self, id_or_name: str) -> Optional[SyncBox]:
        native = self._native.get(id_or_name)
        return None if native is None else SyncBox(native)

    def get_info(self, id_or_name: str) -> Optional[BoxInfo]:
        d = self._native.get_info(id_or_name)
        return None if d is None else BoxInfo._from(d)

    def list_info(self) -> list[BoxInfo]:
        return [BoxInfo._from(d) for d in self._native.list_info()]

    def metrics(self) -> RuntimeMetrics:
        return RuntimeMetrics(**self._native.metrics())

    def remove(self, id_or_name: str, force: bool = False) -> None:
        self._native.remove(id_or_name, force)

    def shutdown(self, timeout: Optional[int] = None) -> None:
        for box in self._handed_out:
            try:
                box.stop()
            except Exception:  # noqa: BLE001 - already removed or stopped elsewhere
                pass
        self._handed_out.clear()

    def close(self) -> None:
        pass


class SyncSimpleBox:
    """The blocking SimpleBox: ``with SyncSimpleBox(image=...) as box: box.exec("echo", "hi")``."""

    def __init__(
        self,
        image: Optional[str] = None,
        rootfs_path: Optional[str] = None,
        memory_mib: Optional[int] = None,
        cpus: Optional[int] = None,
        runtime: Optional[SyncBoxlite] = None,
        name: Optional[str] = None,
        auto_remove: bool = True,
        reuse_existing: bool = False,
        **kwargs: Any,
    ) -> None:
        if image is None and rootfs_path is None:
            raise ValueError("SyncSimpleBox needs an image or a rootfs_path")
        self._runtime = runtime
        self._name = name
        self._reuse_existing = reuse_existing
        self._options = BoxOptions(
            image=image, rootfs_path=rootfs_path, memory_mib=memory_mib, cpus=cpus, auto_remove=auto_remove, **kwargs
        )
        self._box: Optional[SyncBox] = None
        self._created: Optional[bool] = None
        self._started = False

    @property
    def runtime(self) -> SyncBoxlite:
        if self._runtime is None:
            self._runtime = SyncBoxlite.default()
        return self._runtime

    def start(self) -> "SyncSimpleBox":
        if self._started:
            return self
        if self._box is None:
            if self._reuse_existing:
                self._box, self._created = self.runtime.get_or_create(self._options, self._name)
            else:
                self._box = self.runtime.create(self._options, self._name)
                self._created = True
        self._box.start()
        self._started = True
        return self

    def __enter__(self) -> "SyncSimpleBox":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _require(self) -> SyncBox:
        if self._box is None:
            raise RuntimeError("the box is not started: use 'with' or start() first")
        return self._box

    @property
    def id(self) -> str:
        return self._require().id

    @property
    def name(self) -> Optional[str]:
        return self._box.name if self._box is not None else self._name

    @property
    def created(self) -> Optional[bool]:
        return self._created

    def info(self) -> BoxInfo:
        return self._require().info()

    def metrics(self) -> BoxMetrics:
        return self._require().metrics()

    def exec(
        self,
        cmd: str,
        *args: str,
        env: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        cwd: Optional[str] = None,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    ) -> ExecResult:
        """As SimpleBox.exec: a command whose stdout and stderr together pass
        ``max_output_bytes`` is killed and raises ``ExecutionError``."""
        _check_max_output_bytes(max_output_bytes)
        execution = self._require().exec(cmd, list(args), env, user=user, timeout_secs=timeout, cwd=cwd)
        # Both streams are drained as they arrive, on this thread, so neither pipe can fill up.
        try:
            out, err, (code, message, timed_out) = execution._native.collect(max_output_bytes)
        except (KeyboardInterrupt, ExecutionError):
            raise
        except Exception as error:  # noqa: BLE001 - as upstream: a failed wait is exit_code -1
            return ExecResult(exit_code=-1, error_message=str(error))
        return ExecResult(
            exit_code=code,
            stdout=out.decode("utf-8", errors="replace"),
            stderr=err.decode("utf-8", errors="replace"),
            error_message=message,
            timed_out=timed_out,
        )

    def copy_in(self, host_path: str, container_dest: str, **kwargs: bool) -> None:
        self._require().copy_in(host_path, container_dest, CopyOptions(True, **kwargs))

    def copy_out(self, container_src: str, host_dest: str, **kwargs: bool) -> None:
        self._require().copy_out(container_src, host_dest, CopyOptions(True, **kwargs))

    def stop(self) -> None:
        if self._box is not None and self._started:
            self._started = False
            self._box.stop()


class SyncCodeBox(SyncSimpleBox):
    """The blocking CodeBox; ``timeout`` is enforced (boxlite.TimeoutError)."""

    def __init__(
        self,
        image: str = "python:slim",
        memory_mib: Optional[int] = None,
        cpus: Optional[int] = None,
        runtime: Optional[SyncBoxlite] = None,
        name: Optional[str] = None,
        auto_remove: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            image=image, memory_mib=memory_mib, cpus=cpus, runtime=runtime, name=name, auto_remove=auto_remove, **kwargs
        )

    def run(self, code: str, timeout: Optional[float] = None) -> str:
        result = self.exec("python3", "-c", code, timeout=timeout)
        if result.timed_out:
            raise TimeoutError(f"the code did not finish within {timeout} s and was killed")
        return result.stdout

    def run_script(self, script_path: str) -> str:
        with open(script_path, encoding="utf-8") as f:
            return self.run(f.read())

    def install_package(self, package: str) -> str:
        return self.install_packages(package)

    def install_packages(self, *packages: str) -> str:
        result = self.exec("python3", "-m", "pip", "install", *packages)
        return result.stdout + result.stderr


__all__ = [
    "SyncBoxlite",
    "SyncBox",
    "SyncExecution",
    "SyncExecStdin",
    "SyncExecStream",
    "SyncImageHandle",
    "SyncSimpleBox",
    "SyncCodeBox",
]
