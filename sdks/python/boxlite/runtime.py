"""The async API: Boxlite, Box, Execution, ExecStdin, ExecStdout, ExecStderr, ImageHandle.

How it waits without blocking the event loop:
  - Calls that wait on the host (create, start, stop, copies, info, opening a box's agent
    connection) run on the runtime's bounded thread pool (4 threads), with the GIL released
    inside the core.
  - Executions never wait in a thread. Each event loop has one Reactor: an eventfd the loop
    itself watches (loop.add_reader). exec() sends its request on the box's shared agent
    connection and returns to the loop; the core's connection reader posts an execution's token
    to the reactor whenever it changes (started, output, stdin credit, exit), and the loop then
    retries that execution's pending start, reads, writes and waits with non-blocking calls.
    No thread is made per execution.

Cancelling an awaiting task never loses data or leaves a half-done step: a cancelled read
consumes nothing; cancelling wait() leaves the process running; a cancelled exec() kills the
process if it was already starting; a cancelled create() removes the box it was making.
"""

from __future__ import annotations

import builtins
import asyncio
import codecs
import functools
import itertools
import os
import threading
import time
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, TypeVar, Union

from ._native import core
from .errors import InvalidStateError, StoppedError, UnsupportedError
from .info import BoxInfo, BoxMetrics, ExecResult, ImageInfo, ImagePullResult, RuntimeMetrics
from .options import BoxOptions, CopyOptions, Options

if TYPE_CHECKING:
    from .rest import BoxliteRestOptions

T = TypeVar("T")
EnvArg = Optional[Union[Sequence[tuple[str, str]], Mapping[str, str]]]

_READ_CHUNK = 256 * 1024
_tokens = itertools.count(1)


def _env_pairs(env: EnvArg) -> list[tuple[str, str]]:
    if env is None:
        return []
    if isinstance(env, Mapping):
        return [(str(k), str(v)) for k, v in env.items()]
    return [(str(k), str(v)) for k, v in env]


# --- per-loop reactor ---------------------------------------------------------------------------


class _LoopIO:
    """One event loop's Reactor: its eventfd is watched by the loop itself."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop_ref = weakref.ref(loop)
        self.reactor = core.Reactor()
        self.execs: "weakref.WeakValueDictionary[int, _ExecIO]" = weakref.WeakValueDictionary()
        loop.add_reader(self.reactor.fd, self._on_ready)

    def _on_ready(self) -> None:
        for token in self.reactor.drain():
            io = self.execs.get(token)
            if io is not None:
                io.poll()


_loops: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopIO]" = weakref.WeakKeyDictionary()


def _loop_io() -> _LoopIO:
    loop = asyncio.get_running_loop()
    io = _loops.get(loop)
    if io is None:
        io = _LoopIO(loop)
        _loops[loop] = io
    return io


class _ExecIO:
    """An execution's pending operations, retried on each notice from the core."""

    def __init__(self, native: Any) -> None:
        self.native = native
        self.pollers: list[Callable[[], bool]] = []
        self.loop_io: Optional[_LoopIO] = None

    def _bind(self) -> None:
        io = _loop_io()
        if self.loop_io is None:
            token = next(_tokens)
            io.execs[token] = self
            if hasattr(self.native, "attach_loop"):  # the REST runtime's: its reader thread posts
                self.native.attach_loop(asyncio.get_running_loop(), self.poll)
            else:
                self.native.attach(io.reactor, token)
            self.loop_io = io
        elif self.loop_io is not io:
            raise InvalidStateError("an execution is used from the event loop that first awaited it, not another")

    def poll(self) -> None:
        pending, self.pollers = self.pollers, []
        for poller in pending:
            if not poller():
                self.pollers.append(poller)

    def until(self, attempt: Callable[[], tuple[bool, T]]) -> "asyncio.Future[T]":
        """A future resolved by the first attempt() that reports done (retried on notices)."""
        self._bind()
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        def poller() -> bool:
            if fut.done():  # cancelled: drop without consuming anything
                return True
            try:
                done, value = attempt()
            except BaseException as error:  # noqa: BLE001 - handed to the awaiting task
                fut.set_exception(error)
                return True
            if done:
                fut.set_result(value)
            return done

        if not poller():
            self.pollers.append(poller)
        return fut


# --- executions ---------------------------------------------------------------------------------


class _OutputStream:
    def __init__(self, io: _ExecIO, native: Any) -> None:
        self._io = io
        self._native = native
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._ended = False

    def __aiter__(self) -> "_OutputStream":
        return self

    async def read_bytes(self) -> bytes:
        """The next chunk of raw bytes; b"" at the end of the stream."""
        chunk = self._native.try_read(_READ_CHUNK)
        if chunk is None:
            chunk = await self._io.until(self._attempt)
        return bytes(chunk)

    def _attempt(self) -> tuple[bool, bytes]:
        chunk = self._native.try_read(_READ_CHUNK)
        return (chunk is not None, chunk if chunk is not None else b"")

    async def __anext__(self) -> str:
        while not self._ended:
            chunk = await self.read_bytes()
            if not chunk:
                self._ended = True
                tail = self._decoder.decode(b"", final=True)
                if tail:
                    return tail
                break
            text = self._decoder.decode(chunk)
            if text:
                return text
        raise StopAsyncIteration


class ExecStdout(_OutputStream):
    """``async for chunk in execution.stdout()``: text chunks (UTF-8, invalid bytes replaced)."""


class ExecStderr(_OutputStream):
    """``async for chunk in execution.stderr()``: text chunks (UTF-8, invalid bytes replaced)."""


class ExecStdin:
    """The process's stdin: ``await send_input(b"...")``, then ``await close()`` for EOF."""

    def __init__(self, io: _ExecIO, native: Any) -> None:
        self._io = io
        self._native = native
        self._closed = False

    async def send_input(self, data: Union[bytes, bytearray, memoryview, str]) -> None:
        payload = data.encode() if isinstance(data, str) else bytes(data)
        offset = 0

        def attempt() -> tuple[bool, None]:
            nonlocal offset
            offset += self._native.try_write(payload, offset)
            return (offset >= len(payload), None)

        if not attempt()[0]:
            await self._io.until(attempt)

    async def write(self, data: Union[bytes, bytearray, memoryview, str]) -> None:
        """Alias of send_input()."""
        await self.send_input(data)

    async def close(self) -> None:
        self._closed = True
        self._native.close()

    async def is_closed(self) -> bool:
        return self._closed


class Execution:
    """A command running in a box. Its streams can each be taken once."""

    def __init__(self, native: Any) -> None:
        self._native = native
        self._io = _ExecIO(native)

    def id(self) -> str:
        """The execution's unique id (a method, as upstream)."""
        return str(self._native.id)

    @property
    def pid(self) -> int:
        """The process id inside the box."""
        return int(self._native.pid)

    def stdin(self) -> ExecStdin:
        native = self._native.take_stdin()
        if native is None:
            raise InvalidStateError("stdin stream not available (already taken)")
        return ExecStdin(self._io, native)

    def stdout(self) -> ExecStdout:
        native = self._native.take_stdout()
        if native is None:
            raise InvalidStateError("stdout stream not available (already taken)")
        return ExecStdout(self._io, native)

    def stderr(self) -> ExecStderr:
        native = self._native.take_stderr()
        if native is None:
            raise InvalidStateError("stderr stream not available (already taken)")
        return ExecStderr(self._io, native)

    def _discard_untaken(self) -> None:
        # Output nobody will read must not stall the process: drop what was never taken.
        if hasattr(self._native, "_discard"):  # the REST runtime's execution
            self._native._discard()
            return
        self._native.take_stdout()
        self._native.take_stderr()

    async def wait(self) -> ExecResult:
        """Waits for the process to end; streams not taken by then are discarded. Cancelling
        the wait leaves the process running."""
        self._discard_untaken()

        def attempt() -> tuple[bool, Optional[tuple[int, Optional[str], bool]]]:
            status = self._native.try_wait()
            return (status is not None, status)

        status = await self._io.until(attempt)
        assert status is not None
        code, message, timed_out = status
        return ExecResult(exit_code=code, error_message=message, timed_out=timed_out)

    async def kill(self, signal: Optional[int] = None) -> None:
        """SIGKILL to the process group. Upstream takes no argument; the v0.4.4 README's
        ``kill(signal=N)`` is accepted and sends signal N (see signal())."""
        if signal is None:
            self._native.kill()
        else:
            self._native.signal(int(signal))

    async def signal(self, signal: int) -> None:
        self._native.signal(int(signal))

    async def resize_tty(self, rows: int, cols: int) -> None:
        self._native.resize_tty(int(rows), int(cols))


class _LoopAgent:
    """A box's agent connection driven by one event loop's own thread (core.LoopAgent), for
    SimpleBox.exec: the loop watches the connection's socket itself, sends the exec request and
    decodes the Started / output / Exit frames in its reader callback, and resolves the exec's
    future when Exit has come, with everything the command printed. No thread wakes the loop:
    the socket's readiness does. Executions that stream (Box.exec) keep the shared connection."""

    def __init__(self, box: "Box", loop: asyncio.AbstractEventLoop, native: Any) -> None:
        self.box_ref = weakref.ref(box)
        self.loop = loop
        self.native = native
        self.fd: int = native.fd
        self.writing = False
        self.attached = True
        loop.add_reader(self.fd, self._on_readable)

    def usable(self) -> bool:
        if self.attached and not self.native.usable():
            self._on_readable()  # takes the end of the connection in: pending executions end
        return self.attached

    def exec(
        self,
        cmd: str,
        args: list[str],
        env: list[tuple[str, str]],
        user: Optional[str],
        cwd: Optional[str],
        timeout: Optional[float],
        max_output_bytes: int = core.DEFAULT_MAX_OUTPUT_BYTES,
    ) -> tuple[int, "asyncio.Future[ExecResult]"]:
        fut: asyncio.Future[ExecResult] = self.loop.create_future()
        ident: int = self.native.exec(fut, cmd, args, env, user, cwd, timeout, max_output_bytes)
        if self.native.wants_write and not self.writing:
            self.writing = True
            self.loop.add_writer(self.fd, self._on_writable)
        return ident, fut

    def cancel(self, ident: int) -> None:
        """The awaiting task was cancelled: the command is killed (now, or once started)."""
        if self.attached:
            self.native.cancel(ident)
            self._settle()

    def close(self) -> None:
        if self.attached:
            self.native.close()
            self._settle()

    def _on_readable(self) -> None:
        # The native side resolves the futures; 0 / 1: whether it still has bytes to send
        # (compared with the writer's registration), 2: the connection has ended.
        if self.native.on_readable() != self.writing:
            self._settle()

    def _on_writable(self) -> None:
        self.native.on_writable()
        self._settle()

    def _settle(self) -> None:
        native = self.native
        if not native.alive:
            self.loop.remove_reader(self.fd)
            if self.writing:
                self.loop.remove_writer(self.fd)
            self.writing = False
            self.attached = False
            box = self.box_ref()
            if box is not None and box._loop_agents.get(self.loop) is self:
                del box._loop_agents[self.loop]
            return
        if self.writing != native.wants_write:
            if self.writing:
                self.loop.remove_writer(self.fd)
            else:
                self.loop.add_writer(self.fd, self._on_writable)
            self.writing = not self.writing


# --- boxes and the runtime ----------------------------------------------------------------------


class Box:
    """A handle to one box. ``async with box:`` starts it and stops it on exit."""

    def __init__(self, runtime: "Boxlite", native: Any) -> None:
        self._runtime = runtime
        self._native = native
        # SimpleBox.exec's connections, one per event loop (see _LoopAgent).
        self._loop_agents: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopAgent]" = (
            weakref.WeakKeyDictionary()
        )
        self._loop_agent_opening: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[_LoopAgent]]" = (
            weakref.WeakKeyDictionary()
        )

    async def _loop_agent(self) -> Optional[_LoopAgent]:
        """This loop's agent connection for SimpleBox.exec, opened on first use (off the loop:
        it may start the box); None for a box of the REST runtime."""
        loop = asyncio.get_running_loop()
        agent = self._loop_agents.get(loop)
        if agent is not None and agent.usable():
            return agent
        if not isinstance(self._native, core.Box):
            return None
        opening = self._loop_agent_opening.get(loop)
        if opening is None:
            # A task of its own, shared by concurrent first execs: a cancelled caller does not
            # cancel the others' connection.
            opening = loop.create_task(self._open_loop_agent(loop))
            self._loop_agent_opening[loop] = opening
        return await asyncio.shield(opening)

    async def _open_loop_agent(self, loop: asyncio.AbstractEventLoop) -> _LoopAgent:
        try:
            native = await self._runtime._submit(functools.partial(core.LoopAgent.open, self._native, ExecResult))
            agent = _LoopAgent(self, loop, native)
            self._loop_agents[loop] = agent
            return agent
        finally:
            del self._loop_agent_opening[loop]

    @property
    def id(self) -> str:
        return str(self._native.id)

    @property
    def name(self) -> Optional[str]:
        name: Optional[str] = self._native.name
        return name

    async def info(self) -> BoxInfo:
        return BoxInfo._from(await self._runtime._run(self._native.info))

    async def start(self) -> None:
        await self._runtime._run(self._native.start)

    async def stop(self) -> None:
        agent = self._loop_agents.get(asyncio.get_running_loop()) if self._loop_agents else None
        if agent is not None:
            agent.close()
        await self._runtime._run(self._native.stop)

    async def metrics(self) -> BoxMetrics:
        return BoxMetrics(**(await self._runtime._run(self._native.metrics)))

    async def exec(
        self,
        command: str,
        args: Optional[Sequence[str]] = None,
        env: EnvArg = None,
        tty: bool = False,
        user: Optional[str] = None,
        timeout_secs: Optional[float] = None,
        cwd: Optional[str] = None,
    ) -> Execution:
        """Starts ``command`` (starting the box first if needed). ``timeout_secs`` is enforced
        in the box: the process is killed when it runs longer. Cancelled while starting, the
        process is killed as soon as it has started."""
        # The v0.4.4 README passes one argument as a string (box.exec("echo", "Hello")).
        argv = [args] if isinstance(args, str) else [str(a) for a in (args or [])]
        pairs = _env_pairs(env)
        native_box = self._native
        if not native_box.agent_alive():
            # Starts the box when needed and connects to its agent: blocking, so on the pool.
            await self._runtime._run(native_box.ensure_agent)
        # Asks the agent to start the process without waiting; its answer comes through the
        # loop's reactor like any other execution event.
        pending = native_box.begin_exec(command, argv, pairs, tty, user, cwd, timeout_secs)
        if pending is None:  # the connection died in between: the blocking path reconnects
            return await self._exec_blocking(command, argv, pairs, tty, user, cwd, timeout_secs)
        io = _ExecIO(pending)

        def attempt() -> tuple[bool, Any]:
            native = pending.try_started()
            return (native is not None, native)

        fut = io.until(attempt)
        try:
            native = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                fut.result().kill()  # started, but the caller will never see it
            else:
                pending.abandon()
            raise
        return Execution(native)

    async def _exec_blocking(
        self,
        command: str,
        args: list[str],
        env: list[tuple[str, str]],
        tty: bool,
        user: Optional[str],
        cwd: Optional[str],
        timeout_secs: Optional[float],
    ) -> Execution:
        call = functools.partial(self._native.exec, command, args, env, tty, user, cwd, timeout_secs)
        fut = self._runtime._submit(call)
        try:
            native = await asyncio.shield(fut)
        except asyncio.CancelledError:
            # The caller will never see this execution: end it if it got started.
            def kill_if_started(done: "asyncio.Future[Any]") -> None:
                if not done.cancelled() and done.exception() is None:
                    try:
                        done.result().kill()
                    except Exception:  # noqa: BLE001 - it may have ended already
                        pass

            fut.add_done_callback(kill_if_started)
            raise
        return Execution(native)

    async def attach(self, execution_id: Optional[str] = None) -> Execution:
        """Attaches to an execution by id, or with no id to the box's main command (its
        entrypoint and cmd). Through ``Boxlite.rest(...)`` only: a local runtime's executions
        belong to the ``Execution`` that ``exec()`` returned, and its boxes run no main command."""
        attach = getattr(self._native, "attach", None)
        if attach is None:
            raise UnsupportedError(
                "Box.attach() needs a runtime from Boxlite.rest(...): locally, keep the Execution that exec() returns"
            )
        return Execution(await self._runtime._run(attach, execution_id))

    async def remove(self) -> None:
        """The v0.4.4 README's ``box.remove()``: ``runtime.remove(box.id, force=True)``."""
        await self._runtime.remove(self.id, force=True)

    async def copy_in(self, host_path: str, container_dest: str, copy_options: Optional[CopyOptions] = None) -> None:
        (copy_options or CopyOptions()).check()
        await self._runtime._run(self._native.copy_in, os.fspath(host_path), container_dest)

    async def copy_out(self, container_src: str, host_dest: str, copy_options: Optional[CopyOptions] = None) -> None:
        (copy_options or CopyOptions()).check()
        await self._runtime._run(self._native.copy_out, container_src, os.fspath(host_dest))

    async def __aenter__(self) -> "Box":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"Box(id={self.id!r}, name={self.name!r})"


class ImageHandle:
    """``runtime.images``: pull and list the images in the runtime's home."""

    def __init__(self, runtime: "Boxlite") -> None:
        self._runtime = runtime

    async def pull(self, reference: str) -> ImagePullResult:
        d = await self._runtime._run(self._runtime._native.pull_image, reference)
        return ImagePullResult(d["reference"], d["id"], d["layer_count"])

    async def list(self) -> list[ImageInfo]:
        return [ImageInfo._from(d) for d in await self._runtime._run(self._runtime._native.list_images)]

    async def load(self, path: str, reference: Optional[str] = None) -> "builtins.list[ImageInfo]":
        """Loads an OCI layout, OCI archive or ``docker save`` tarball from disk, named
        ``reference`` when it holds one image (an extension: ``boxlite load``)."""
        loaded = await self._runtime._run(self._runtime._native.load_images, path, reference)
        return [ImageInfo._from(d) for d in loaded]


def _remove_abandoned_box(native_runtime: Any, box_id: str) -> None:
    """Removes a box whose create() was cancelled. Retried: a busy database (another process
    writing the home) must not leave the box behind; only a box already gone ends it early."""
    from .errors import BoxliteError, NotFoundError

    for attempt in range(20):
        try:
            native_runtime.remove(box_id, True)
            return
        except NotFoundError:
            return
        except BoxliteError as error:
            if attempt == 19:
                warnings.warn(f"boxlite: could not remove box {box_id} after its create() was cancelled: {error}",
                              RuntimeWarning, stacklevel=1)
            time.sleep(0.05 * (attempt + 1))


_default_lock = threading.Lock()
_default_options: Optional[Options] = None
_default_runtime: Optional["Boxlite"] = None


class Boxlite:
    """The runtime: creates, finds, lists and removes boxes in one home directory."""

    def __init__(self, options: Optional[Options] = None, *, _native: Any = None) -> None:
        if _native is None:
            options = options or Options()
            _native = core.Runtime.open(options.home_dir, options.registry_hosts(), options.engine)
        self._native = _native
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="boxlite")
        self._handed_out: "weakref.WeakSet[Box]" = weakref.WeakSet()
        self._shut_down = False

    @staticmethod
    def default() -> "Boxlite":
        """The process-wide runtime (``$BOXLITE_HOME`` or ``~/.boxlite``, ``$BOXLITE_ENGINE``)."""
        global _default_runtime
        with _default_lock:
            if _default_runtime is None:
                if _default_options is not None:
                    _default_runtime = Boxlite(_default_options)
                else:
                    _default_runtime = Boxlite(_native=core.Runtime.default())
            return _default_runtime

    @staticmethod
    def rest(options: "BoxliteRestOptions") -> "Boxlite":
        """A runtime driving a remote ``boxlite serve`` over HTTP and WebSocket (boxlite.rest):
        the same Box and Execution API."""
        from .rest import _RestRuntime

        return Boxlite(_native=_RestRuntime(options))

    @staticmethod
    def init_default(options: Options) -> None:
        """Sets the options of the default runtime; only before its first use."""
        global _default_options
        with _default_lock:
            if _default_runtime is not None:
                raise InvalidStateError("the default runtime is already in use; init_default() must come first")
            _default_options = options

    @property
    def home_dir(self) -> str:
        return str(self._native.home_dir)

    @property
    def images(self) -> ImageHandle:
        return ImageHandle(self)

    def _submit(self, fn: Callable[[], T]) -> "asyncio.Future[T]":
        if self._shut_down:
            raise StoppedError("the runtime has been shut down")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._submit(functools.partial(fn, *args))

    def _box(self, native: Any) -> Box:
        box = Box(self, native)
        self._handed_out.add(box)
        return box

    async def create(self, options: Optional[BoxOptions] = None, name: Optional[str] = None) -> Box:
        """Records a new box (pulling its image when needed); it starts on start() or the
        first exec. Cancelled while under way, the box being made is removed."""
        options_json = (options or BoxOptions()).to_core_json()
        fut = self._submit(functools.partial(self._native.create, options_json, name))
        try:
            native = await asyncio.shield(fut)
        except asyncio.CancelledError as cancelled:
            # Finish what was started and take it back, so that when the cancelled await
            # returns, no box is left behind (a create takes milliseconds).
            loop = asyncio.get_running_loop()
            try:
                made = await asyncio.shield(fut)
            except asyncio.CancelledError:  # cancelled again: clean up in the background
                fut.add_done_callback(
                    lambda done: None
                    if done.cancelled() or done.exception() is not None
                    else self._executor.submit(_remove_abandoned_box, self._native, done.result().id)
                )
                raise cancelled
            except Exception:  # noqa: BLE001 - the create failed: nothing to take back
                raise cancelled
            await asyncio.shield(loop.run_in_executor(self._executor, _remove_abandoned_box, self._native, made.id))
            raise cancelled
        return self._box(native)

    async def get_or_create(self, options: Optional[BoxOptions] = None, name: Optional[str] = None) -> tuple[Box, bool]:
        """The box named ``name`` if it exists (created=False), else a new one (created=True)."""
        from .errors import AlreadyExistsError

        if name is not None:
            existing = await self.get(name)
            if existing is not None:
                return existing, False
        try:
            return await self.create(options, name), True
        except AlreadyExistsError:
            assert name is not None
            existing = await self.get(name)
            if existing is None:
                raise
            return existing, False

    async def get(self, id_or_name: str) -> Optional[Box]:
        native = await self._run(self._native.get, id_or_name)
        return None if native is None else self._box(native)

    async def get_info(self, id_or_name: str) -> Optional[BoxInfo]:
        d = await self._run(self._native.get_info, id_or_name)
        return None if d is None else BoxInfo._from(d)

    async def list_info(self, _state: object = None) -> list[BoxInfo]:
        return [BoxInfo._from(d) for d in await self._run(self._native.list_info)]

    async def list(self) -> "builtins.list[BoxInfo]":
        """The v0.4.4 README's ``runtime.list()``: list_info()."""
        return await self.list_info()

    async def metrics(self) -> RuntimeMetrics:
        return RuntimeMetrics(**(await self._run(self._native.metrics)))

    async def remove(self, id_or_name: str, force: bool = False) -> None:
        await self._run(self._native.remove, id_or_name, force)

    async def shutdown(self, timeout: Optional[int] = None) -> None:
        """Stops every box this runtime handed out that is still running (each is given the
        core's stop timeout; ``timeout`` bounds the whole in seconds, -1 = no bound), then
        refuses further calls with StoppedError."""
        boxes = list(self._handed_out)
        self._shut_down = True
        loop = asyncio.get_running_loop()
        stops = [loop.run_in_executor(self._executor, b._native.stop) for b in boxes]
        if stops:
            bound = None if timeout == -1 else float(timeout if timeout is not None else 10)
            done, pending = await asyncio.wait(stops, timeout=bound)
            for fut in done:
                if fut.exception() is not None and not isinstance(fut.exception(), Exception):
                    raise fut.exception()  # type: ignore[misc]
        self._executor.shutdown(wait=False)

    def close(self) -> None:
        """No-op, as upstream."""

    def __enter__(self) -> "Boxlite":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "Boxlite",
    "Box",
    "Execution",
    "ExecStdin",
    "ExecStdout",
    "ExecStderr",
    "ImageHandle",
]
