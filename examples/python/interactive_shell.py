"""An interactive shell in a box.

    python3 interactive_shell.py --tty [rootfs]   your terminal, wired to a shell in the box

Without --tty the program drives the shell itself (what an agent does), which is also what CI
runs and checks.
"""

from __future__ import annotations

import asyncio
import sys

import boxlite
from _example import Checks, rootfs, runtime


async def main() -> int:
    forward = "--tty" in sys.argv
    if forward:
        sys.argv.remove("--tty")
    async with boxlite.InteractiveBox(rootfs_path=rootfs(), runtime=runtime(), tty=forward) as box:
        if forward:
            return await box.wait()
        checks = Checks("interactive_shell")
        execution = box.execution
        await execution.resize_tty(30, 90)
        stdin, stdout = execution.stdin(), execution.stdout()
        await stdin.send_input(b"stty size; echo $((20 + 22)); exit 3\n")
        transcript = "".join([chunk async for chunk in stdout])
        print(transcript.replace("\r", ""), end="")
        checks.expect("30 90" in transcript, "the terminal size the shell sees")
        checks.expect("42" in transcript, "the shell's arithmetic")
        checks.expect_eq(await box.wait(), 3, "the shell's exit code")
        return checks.finish()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
