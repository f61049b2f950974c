"""InteractiveBox: a shell in a box wired to the local terminal (POSIX only)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any, Optional

from .runtime import Boxlite, ExecStdin, Execution
from .simplebox import SimpleBox


class InteractiveBox(SimpleBox):
    """``async with InteractiveBox(image=...) as box: await box.wait()``.

    With ``tty=True`` (default: whether stdin is a terminal) the local terminal is put in raw
    mode and forwarded both ways, window-size changes included; it is restored on every exit
    path. With ``tty=False`` the program drives the shell through ``stdin``/``stdout``."""

    def __init__(
        self,
        image: Optional[str] = None,
        shell: str = "/bin/sh",
        tty: Optional[bool] = None,
        memory_mib: Optional[int] = None,
        cpus: Optional[int] = None,
        runtime: Optional[Boxlite] = None,
        name: Optional[str] = None,
        auto_remove: bool = True,
        **kwargs: Any,
    ) -> None:
        self._shell_env = kwargs.pop("env", None)
        super().__init__(
            image=image,
            memory_mib=memory_mib,
            cpus=cpus,
            runtime=runtime,
            name=name,
            auto_remove=auto_remove,
            **kwargs,
        )
        self._shell = shell
        self._forward = sys.stdin.isatty() if tty is None else tty
        self._execution: Optional[Execution] = None
        self._stdin: Optional[ExecStdin] = None
        self._saved_termios: Optional[list[Any]] = None
        self._tasks: list["asyncio.Future[Any]"] = []
        self.error_message: Optional[str] = None
        self.exit_code: Optional[int] = None

    @property
    def execution(self) -> Execution:
        if self._execution is None:
            raise RuntimeError("the shell is not running: use 'async with' first")
        return self._execution

    async def __aenter__(self) -> "InteractiveBox":
        await super().__aenter__()
        try:
            self._execution = await self.box.exec(self._shell, [], self._shell_env, tty=True)
            if self._forward:
                self._start_forwarding()
        except BaseException:
            self._restore_terminal()
            await super().__aexit__(None, None, None)
            raise
        return self

    def _start_forwarding(self) -> None:
        import termios
        import tty

        execution = self.execution
        fd = sys.stdin.fileno()
        if os.isatty(fd):
            self._saved_termios = termios.tcgetattr(fd)
            tty.setraw(fd)
        self._stdin = execution.stdin()
        loop = asyncio.get_running_loop()
        stdin = self._stdin

        async def pump_in() -> None:
            queue: asyncio.Queue[bytes] = asyncio.Queue()

            def readable() -> None:
                data = os.read(fd, 1024)
                queue.put_nowait(data)
                if not data:
                    loop.remove_reader(fd)

            loop.add_reader(fd, readable)
            try:
                while True:
                    data = await queue.get()
                    if not data:
                        await stdin.close()
                        return
                    await stdin.send_input(data)
            finally:
                loop.remove_reader(fd)

        async def pump_out(stream: Any, out: Any) -> None:
            while True:
                chunk = await stream.read_bytes()
                if not chunk:
                    return
                out.write(chunk)
                out.flush()

        def resized() -> None:
            try:
                size = os.get_terminal_size(fd)
            except OSError:
                return
            if size.lines > 0 and size.columns > 0:  # a new pseudo-terminal may report 0x0
                asyncio.ensure_future(execution.resize_tty(size.lines, size.columns))

        if os.isatty(fd):
            resized()
            loop.add_signal_handler(signal.SIGWINCH, resized)
        self._tasks = [
            asyncio.ensure_future(pump_in()),
            asyncio.ensure_future(pump_out(execution.stdout(), sys.stdout.buffer)),
            asyncio.ensure_future(pump_out(execution.stderr(), sys.stderr.buffer)),
        ]

    def _restore_terminal(self) -> None:
        if self._saved_termios is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._saved_termios)
            self._saved_termios = None
        try:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGWINCH)
        except (RuntimeError, ValueError, NotImplementedError):
            pass

    async def wait(self) -> int:
        """Waits for the shell to exit and returns its exit code."""
        result = await self.execution.wait()
        self.exit_code = result.exit_code
        self.error_message = result.error_message
        return result.exit_code

    async def __aexit__(self, *exc: object) -> None:
        try:
            self._restore_terminal()
            if self._tasks:
                # The terminal's input never ends by itself: stop forwarding it, then give the
                # output up to 3 s to drain (as upstream).
                self._tasks[0].cancel()
                _, pending = await asyncio.wait(self._tasks, timeout=3)
                for task in pending:
                    task.cancel()
            if self.error_message:
                print(self.error_message, file=sys.stderr)
        finally:
            await super().__aexit__(*exc)


__all__ = ["InteractiveBox"]
