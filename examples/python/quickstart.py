"""The README's quick start: a box, a command, its output."""

from __future__ import annotations

import asyncio
import sys

import boxlite
from _example import Checks, rootfs, runtime


async def main() -> int:
    checks = Checks("quickstart")
    # With an image instead: boxlite.SimpleBox(image="alpine:latest")
    async with boxlite.SimpleBox(rootfs_path=rootfs(), runtime=runtime()) as box:
        result = await box.exec("echo", "Hello from BoxLite!")
        print(result.stdout, end="")
        checks.expect_eq(result.stdout, "Hello from BoxLite!\n", "echo's output")
        checks.expect_eq(result.exit_code, 0, "echo's exit code")

        info = await box.info()
        print(f"box {info.id} is {info.state.status}")
        checks.expect_eq(info.state.status, "running", "the box's status")
    return checks.finish()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
