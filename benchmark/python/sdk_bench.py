"""The Python SDK against the C++ core, in one process, on one box (namespace engine):

  exec round trip   SimpleBox.exec("true") (async), SyncSimpleBox.exec("true"), and the same
                    exec + collect from C++ over the same agent connection. Aim: <= 1.15x C++.
  stdout throughput 100 MB through `async for` (text), through read_bytes(), and C++ read_some.
                    Aim: >= 0.8x C++.

Repetitions are interleaved (Python, C++, Python, ...); each line gives the median and the
interquartile range over repetitions, and each ratio the median of the per-repetition ratios.

    BOXLITE_NATIVE_DIR=build/rel/sdks/python/native PYTHONPATH=sdks/python \\
        build/pyenv/bin/python benchmark/python/sdk_bench.py [--reps 9] [--n 200] [--mb 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples/python"))

import boxlite  # noqa: E402
from _example import rootfs  # noqa: E402
from boxlite.sync_api import SyncBoxlite, SyncSimpleBox  # noqa: E402


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return q[0], statistics.median(values), q[2]


def line(name: str, values: list[float], unit: str) -> None:
    lo, mid, hi = quartiles(values)
    print(f"{name:<44} median {mid:10.1f} {unit}  IQR [{lo:.1f}, {hi:.1f}]")


def ratio(name: str, ours: list[float], theirs: list[float]) -> None:
    lo, mid, hi = quartiles([a / b for a, b in zip(ours, theirs)])
    print(f"ratio {name:<38} {mid:.3f}x  IQR [{lo:.3f}, {hi:.3f}]")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--n", type=int, default=200, help="round trips per repetition")
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("precondition: not root (the namespace engine needs root)")
        return
    sys.argv = sys.argv[:1]  # _example.rootfs() reads a path from argv[1]
    root = rootfs()
    home = tempfile.mkdtemp(prefix="boxlite-bench-")
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=home, engine="namespace"))
    sync_runtime = SyncBoxlite(boxlite.Options(home_dir=home, engine="namespace"))
    async with boxlite.SimpleBox(rootfs_path=root, runtime=runtime, name="bench") as box:
        native = box.box._native
        sync_box = SyncSimpleBox(rootfs_path=root, runtime=sync_runtime, reuse_existing=True, name="bench").start()
        for _ in range(20):  # warm-up: connection, page cache
            await box.exec("true")
            native._bench_cpp_roundtrips("true", 1)

        py_async: list[float] = []
        py_sync: list[float] = []
        cpp: list[float] = []
        for _ in range(args.reps):
            samples = []
            for _ in range(args.n):
                t0 = time.perf_counter_ns()
                await box.exec("true")
                samples.append(time.perf_counter_ns() - t0)
            py_async.append(statistics.median(samples) / 1000)
            cpp.append(statistics.median(native._bench_cpp_roundtrips("true", args.n)) / 1000)
            samples = []
            for _ in range(args.n):
                t0 = time.perf_counter_ns()
                sync_box.exec("true")
                samples.append(time.perf_counter_ns() - t0)
            py_sync.append(statistics.median(samples) / 1000)
        print(f"exec('true') round trip, {args.reps} repetitions x {args.n}:")
        line("  Python async SimpleBox.exec", py_async, "us")
        line("  Python sync SyncSimpleBox.exec", py_sync, "us")
        line("  C++ exec + collect", cpp, "us")
        ratio("async Python / C++", py_async, cpp)
        ratio("sync Python / C++", py_sync, cpp)

        script = f"head -c {args.mb * 1_000_000} /dev/zero"
        text_rates: list[float] = []
        bytes_rates: list[float] = []
        cpp_rates: list[float] = []

        async def python_stream(read: Callable[[boxlite.ExecStdout], object]) -> float:
            t0 = time.perf_counter_ns()
            execution = await box.box.exec("sh", ["-c", script])
            total = int(await read(execution.stdout()))  # type: ignore[misc]
            await execution.wait()
            assert total == args.mb * 1_000_000, total
            return float(total) / ((time.perf_counter_ns() - t0) / 1e9) / 1e6

        async def as_text(stream: boxlite.ExecStdout) -> int:
            return sum([len(chunk) async for chunk in stream])

        async def as_bytes(stream: boxlite.ExecStdout) -> int:
            total = 0
            while chunk := await stream.read_bytes():
                total += len(chunk)
            return total

        for _ in range(max(3, args.reps // 2)):
            text_rates.append(await python_stream(as_text))
            total, ns = native._bench_cpp_stdout(script)
            assert total == args.mb * 1_000_000
            cpp_rates.append(total / (ns / 1e9) / 1e6)
            bytes_rates.append(await python_stream(as_bytes))
        print(f"stdout throughput, {args.mb} MB:")
        line("  Python async for (str)", text_rates, "MB/s")
        line("  Python read_bytes()", bytes_rates, "MB/s")
        line("  C++ read_some", cpp_rates, "MB/s")
        ratio("async for / C++", text_rates, cpp_rates)
        ratio("read_bytes / C++", bytes_rates, cpp_rates)


if __name__ == "__main__":
    asyncio.run(main())
