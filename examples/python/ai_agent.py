"""Code execution for an AI agent: run model-written code in a box, feed the results back.

The "model" here is a list of snippets, one of them hostile and one that never ends; the box
contains the damage and the timeout ends the runaway one. With a Python image the same loop
runs Python through CodeBox.run().
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import boxlite
from _example import Checks, rootfs, runtime

MODEL_WRITTEN = [
    ("count the files in /etc", "ls /etc | wc -l"),
    ("try to damage the host", "rm -rf /etc && echo removed-in-the-box"),
    ("loop forever", "while true; do :; done"),
    ("compute", "echo $((6 * 7))"),
]


async def agent_loop(box: boxlite.SimpleBox) -> list[tuple[str, boxlite.ExecResult]]:
    transcript = []
    for goal, code in MODEL_WRITTEN:
        result = await box.exec("sh", "-c", code, timeout=2)
        status = "timed out" if result.timed_out else f"exit {result.exit_code}"
        print(f"[{goal}] {status}: {result.stdout.strip()!r}")
        transcript.append((goal, result))
    return transcript


async def main() -> int:
    checks = Checks("ai_agent")
    root = rootfs()
    async with boxlite.SimpleBox(rootfs_path=root, runtime=runtime()) as box:
        transcript = dict(await agent_loop(box))
        checks.expect(int(transcript["count the files in /etc"].stdout) >= 2, "files in the box's /etc")
        checks.expect("removed-in-the-box" in transcript["try to damage the host"].stdout, "the hostile snippet ran")
        checks.expect((await box.exec("ls", "/etc")).exit_code != 0, "/etc is gone inside the box")
        checks.expect(transcript["loop forever"].timed_out, "the runaway snippet was stopped by its timeout")
        checks.expect_eq(transcript["compute"].stdout, "42\n", "the computation")
    checks.expect((Path(root) / "etc/passwd").exists(), "the root filesystem on the host is untouched")
    return checks.finish()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
