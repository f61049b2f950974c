"""SimpleBox: a box created lazily on first use, with exec() that collects the output."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Mapping, NoReturn, Optional

from .info import BoxInfo, BoxMetrics, ExecResult
from .options import BoxOptions, CopyOptions
from ._native import core
from .errors import InvalidArgumentError
from .runtime import Box, Boxlite, Execution, _env_pairs, _ExecIO

#: The most stdout and stderr together that ``SimpleBox.exec`` keeps by default (as the C++
#: ``collect()``): a box that prints without end must not grow the caller's memory without end.
DEFAULT_MAX_OUTPUT_BYTES: int = core.DEFAULT_MAX_OUTPUT_BYTES


def _check_max_output_bytes(max_output_bytes: int) -> None:
    if isinstance(max_output_bytes, bool) or not isinstance(max_output_bytes, int) or max_output_bytes < 1:
        raise InvalidArgumentError(f"max_output_bytes must be an int of at least 1, not {max_output_bytes!r}")


class SimpleBox:
    """``async with SimpleBox(image="alpine:latest") as box: await box.exec("echo", "hi")``.

    One of ``image`` and ``rootfs_path`` is required. Other keywords go to BoxOptions. The box is
    created (or, with ``reuse_existing``, found by ``name``) on ``__aenter__``/``start()`` and
    stopped on exit, which removes it when ``auto_remove`` (the default)."""

    def __init__(
        self,
        image: Optional[str] = None,
        rootfs_path: Optional[str] = None,
        memory_mib: Optional[int] = None,
        cpus: Optional[int] = None,
        runtime: Optional[Boxlite] = None,
        name: Optional[str] = None,
        auto_remove: bool = True,
        reuse_existing: bool = False,
        **kwargs: Any,
    ) -> None:
        if image is None and rootfs_path is None:
            raise ValueError("SimpleBox needs an image or a rootfs_path")
        self._runtime = runtime
        self._name = name
        self._reuse_existing = reuse_existing
        self._options = BoxOptions(
            image=image, rootfs_path=rootfs_path, memory_mib=memory_mib, cpus=cpus, auto_remove=auto_remove, **kwargs
        )
        self._box: Optional[Box] = None
        self._created: Optional[bool] = None
        self._started = False

    @property
    def runtime(self) -> Boxlite:
        if self._runtime is None:
            self._runtime = Boxlite.default()
        return self._runtime

    async def __aenter__(self) -> "SimpleBox":
        if self._started:
            return self
        if self._box is None:
            if self._reuse_existing:
                self._box, self._created = await self.runtime.get_or_create(self._options, self._name)
            else:
                self._box = await self.runtime.create(self._options, self._name)
                self._created = True
        await self._box.__aenter__()
        self._started = True
        return self

    async def start(self) -> "SimpleBox":
        return await self.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _require(self) -> Box:
        if self._box is None:
            raise RuntimeError("the box is not started: use 'async with' or await start() first")
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

    @property
    def box(self) -> Box:
        """The underlying Box handle."""
        return self._require()

    async def info(self) -> BoxInfo:
        return await self._require().info()

    async def metrics(self) -> BoxMetrics:
        return await self._require().metrics()

    async def exec(
        self,
        cmd: str,
        *args: str,
        env: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        cwd: Optional[str] = None,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    ) -> ExecResult:
        """Runs ``cmd`` to completion, draining stdout and stderr concurrently. A non-zero exit
        is returned, never raised; ``timeout`` (seconds) kills the command when it runs longer
        (``timed_out`` is then set). A command whose stdout and stderr together pass
        ``max_output_bytes`` is killed and raises ``ExecutionError``: read a larger output as a
        stream (``Box.exec``) or raise the limit."""
        _check_max_output_bytes(max_output_bytes)
        box = self._require()
        agent = box._loop_agents.get(asyncio.get_running_loop())
        if agent is None or not agent.usable():
            agent = await box._loop_agent()
        if agent is not None:
            ident, fut = agent.exec(cmd, list(args), _env_pairs(env), user, cwd, timeout, max_output_bytes)
            try:
                return await fut
            except asyncio.CancelledError:
                agent.cancel(ident)
                raise
        native_box = box._native
        if not native_box.agent_alive():
            await box._runtime._run(native_box.ensure_agent)
        pending = native_box.begin_exec(cmd, list(args), _env_pairs(env), False, user, cwd, timeout)
        if pending is None:  # the connection died in between: the general path reconnects
            execution = await box.exec(cmd, list(args), env, user=user, timeout_secs=timeout, cwd=cwd)
            return await _collect(execution, max_output_bytes)
        return await _start_and_collect(pending, max_output_bytes)

    async def copy_in(
        self,
        host_path: str,
        container_dest: str,
        *,
        overwrite: bool = True,
        follow_symlinks: bool = False,
        include_parent: bool = True,
    ) -> None:
        await self._require().copy_in(
            host_path, container_dest, CopyOptions(True, overwrite, follow_symlinks, include_parent)
        )

    async def copy_out(
        self,
        container_src: str,
        host_dest: str,
        *,
        overwrite: bool = True,
        follow_symlinks: bool = False,
        include_parent: bool = True,
    ) -> None:
        await self._require().copy_out(
            container_src, host_dest, CopyOptions(True, overwrite, follow_symlinks, include_parent)
        )

    async def stop(self) -> None:
        if self._box is not None and self._started:
            self._started = False
            await self._box.stop()

    async def shutdown(self) -> None:
        await self.stop()


class _Collected:
    """What a collecting poller keeps of stdout and stderr: at most ``max_output_bytes`` of the
    two together."""

    def __init__(self, max_output_bytes: int) -> None:
        self.max_output_bytes = max_output_bytes
        self.streams: list[Any] = []  # the native stdout and stderr, once there
        self.parts: list[list[bytes]] = [[], []]
        self.open = [True, True]
        self.kept = 0
        self.over_limit = False

    def drain(self) -> bool:
        """Reads what has arrived; True once both streams have ended or the output passed the
        limit (``over_limit``)."""
        for i, stream in enumerate(self.streams):
            while self.open[i]:
                chunk = stream.try_read(256 * 1024)
                if chunk is None:
                    break
                if not chunk:
                    self.open[i] = False
                elif self.kept + len(chunk) > self.max_output_bytes:
                    self.over_limit = True
                    return True
                else:
                    self.kept += len(chunk)
                    self.parts[i].append(chunk)
        return not any(self.open)

    def give_up(self, kill: Callable[[], None]) -> NoReturn:
        """Past the limit: the command is killed, the rest of its output dropped as it comes
        (so its exit still can), and ExecutionError names the limit."""
        kill()
        for stream in self.streams:
            stream.discard()
        core._raise_output_limit(self.max_output_bytes)

    def result(self, code: int, message: Optional[str], timed_out: bool) -> ExecResult:
        stdout, stderr = (b"".join(p).decode("utf-8", errors="replace") for p in self.parts)
        return ExecResult(exit_code=code, stdout=stdout, stderr=stderr, error_message=message, timed_out=timed_out)


async def _start_and_collect(pending: Any, max_output_bytes: int) -> ExecResult:
    """exec + _collect in one poller: the start, the output and the exit are all handled on the
    execution's reactor token, with no task switch in between (the round trip SimpleBox.exec is
    measured by, benchmark/python)."""
    io = _ExecIO(pending)
    started: list[Any] = []
    collected = _Collected(max_output_bytes)

    def attempt() -> tuple[bool, Any]:
        if not started:
            native = pending.try_started()
            if native is None:
                return (False, None)
            started.append(native)
            native.take_stdin().close()
            collected.streams.extend([native.take_stdout(), native.take_stderr()])
        if not collected.drain():
            return (False, None)
        if collected.over_limit:
            return (True, None)
        status = started[0].try_wait()
        return (status is not None, status)

    fut = io.until(attempt)
    try:
        status = await fut
    except asyncio.CancelledError:
        if started:
            started[0].kill()
        else:
            pending.abandon()
        raise
    except Exception as error:  # noqa: BLE001 - a refused start raises; a failed wait is exit_code -1
        if not started:
            raise
        status = (-1, str(error), False)
    if collected.over_limit:
        collected.give_up(started[0].kill)
    return collected.result(*status)


async def _collect(execution: Execution, max_output_bytes: int) -> ExecResult:
    """Closes stdin, drains stdout and stderr as they arrive and waits for the exit, all in one
    poller on the execution's reactor token (one wake-up per batch of events, no extra tasks)."""
    execution.stdin()._native.close()
    collected = _Collected(max_output_bytes)
    collected.streams.extend([execution.stdout()._native, execution.stderr()._native])

    def attempt() -> tuple[bool, Any]:
        if not collected.drain():
            return (False, None)
        if collected.over_limit:
            return (True, None)
        status = execution._native.try_wait()
        return (status is not None, status)

    try:
        status = await execution._io.until(attempt)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - as upstream: a failed wait is exit_code -1
        status = (-1, str(error), False)
    if collected.over_limit:
        collected.give_up(execution._native.kill)
    return collected.result(*status)


__all__ = ["SimpleBox"]
