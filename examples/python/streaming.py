"""Streaming output: read a command's stdout and stderr as they are produced, with async for,
while feeding its stdin."""

from __future__ import annotations

import asyncio
import sys

import boxlite
from _example import Checks, rootfs, runtime


async def main() -> int:
    checks = Checks("streaming")
    async with boxlite.SimpleBox(rootfs_path=rootfs(), runtime=runtime()) as simple:
        box = simple.box
        execution = await box.exec("sh", ["-c", "for i in 1 2 3; do echo tick $i; sleep 0.1; done; "
                                                "echo warning >&2; while read line; do echo echo: $line; done"])
        stdin = execution.stdin()

        async def feed() -> None:
            for word in ("alpha", "beta"):
                await stdin.send_input(f"{word}\n".encode())
            await stdin.close()

        async def collect(stream: boxlite.ExecStdout | boxlite.ExecStderr, label: str) -> str:
            seen = ""
            async for chunk in stream:
                for line in chunk.splitlines():
                    print(f"{label}: {line}")
                seen += chunk
            return seen

        _, out, err = await asyncio.gather(feed(), collect(execution.stdout(), "out"),
                                           collect(execution.stderr(), "err"))
        result = await execution.wait()
        checks.expect_eq(out, "tick 1\ntick 2\ntick 3\necho: alpha\necho: beta\n", "stdout")
        checks.expect_eq(err, "warning\n", "stderr")
        checks.expect_eq(result.exit_code, 0, "exit code")
    return checks.finish()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
