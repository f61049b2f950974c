"""CodeBox: a SimpleBox for running Python code."""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from .errors import TimeoutError
from .runtime import Boxlite
from .simplebox import SimpleBox


class CodeBox(SimpleBox):
    """Runs Python in a box (``python3`` on the image's PATH). Unlike upstream, ``timeout`` is
    enforced: the code is killed and boxlite.TimeoutError raised when it runs longer."""

    def __init__(
        self,
        image: str = "python:slim",
        memory_mib: Optional[int] = None,
        cpus: Optional[int] = None,
        runtime: Optional[Boxlite] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(image=image, memory_mib=memory_mib, cpus=cpus, runtime=runtime, **kwargs)

    async def run(self, code: str, timeout: Optional[float] = None) -> str:
        """Runs ``code`` with ``python3 -c`` and returns its stdout."""
        result = await self.exec("python3", "-c", code, timeout=timeout)
        if result.timed_out:
            raise TimeoutError(f"the code did not finish within {timeout} s and was killed")
        return result.stdout

    async def run_script(self, script_path: str) -> str:
        def read() -> str:
            with open(script_path, encoding="utf-8") as f:
                return f.read()

        return await self.run(await asyncio.to_thread(read))

    async def install_package(self, package: str) -> str:
        return await self.install_packages(package)

    async def install_packages(self, *packages: str) -> str:
        """Runs ``pip install`` and returns what it printed (stdout + stderr), as upstream."""
        result = await self.exec("python3", "-m", "pip", "install", *packages)
        return result.stdout + result.stderr


__all__ = ["CodeBox"]
