"""InteractiveBox with real terminal forwarding: a script on a pseudo-terminal, driven from
the other end; the terminal's settings are restored when the shell exits."""

from __future__ import annotations

import os
import pty
import select
import sys
import textwrap

import pytest

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read_until(fd: int, needle: bytes, seen: bytearray) -> None:
    while needle not in seen:
        ready, _, _ = select.select([fd], [], [], 60)
        assert ready, f"no output; so far {bytes(seen)!r}"
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen.extend(chunk)


@pytest.mark.parametrize("exit_code", [0, 5])
def test_forwarding_through_a_pseudo_terminal(home: str, rootfs: str, exit_code: int) -> None:
    script = textwrap.dedent(f"""
        import asyncio, sys, termios
        import boxlite
        before = termios.tcgetattr(0)
        async def main():
            runtime = boxlite.Boxlite(boxlite.Options(home_dir={home!r}, engine="namespace"))
            async with boxlite.InteractiveBox(rootfs_path={rootfs!r}, runtime=runtime) as box:
                code = await box.wait()
            return code
        code = asyncio.run(main())
        restored = termios.tcgetattr(0) == before
        print(f"\\nSHELL-EXIT={{code}} RESTORED={{restored}}", flush=True)
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout and stderr are the pseudo-terminal
        os.execve(sys.executable, [sys.executable, "-c", script], env)
    seen = bytearray()
    try:
        _read_until(fd, b"# ", seen)  # busybox sh's prompt: forwarding works
        os.write(fd, b"stty size; echo marker-$((6*7))\r")
        _read_until(fd, b"marker-42", seen)
        os.write(fd, f"exit {exit_code}\r".encode())
        _read_until(fd, b"RESTORED=", seen)
        _read_until(fd, b"\n", seen)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = bytes(seen).decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert f"SHELL-EXIT={exit_code} RESTORED=True" in text, text
