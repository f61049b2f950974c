"""SimpleBox.exec's LoopAgent (src/module.cpp) fed by a hostile agent.

A fake agent on the other end of a socket pair answers the hello, lets the host queue a few
executions, then sends bytes mutated from valid executions with a fixed seed (truncated frames,
oversized lengths, unknown and host-only frame kinds, frames for unknown or finished executions,
out-of-order exits, credit abuse, invalid UTF-8 where text is expected, floods of tiny frames)
and hangs up, often mid-frame. Each case must end with every future resolved -- with an
ExecResult, or a BoxliteError naming what was wrong -- and nothing else: no other exception in
the loop's callbacks, no future left pending or kept alive by the native side, and bounded memory.

BOXLITE_FUZZ_CASES sets the number of mutated cases (default 300: a few seconds). ctest runs it
twice: in python_sdk, and as python_sdk_loop_agent_asan against the module built with ASan + UBSan
(sdks/python/CMakeLists.txt: the GCC runtimes preloaded into the interpreter, no leak check, a small
quarantine so that the RSS bound holds)."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import resource
import socket
import struct
import weakref
from typing import Any, Callable, Optional

import boxlite
from boxlite._native import core
from boxlite.info import ExecResult
from boxlite.runtime import _LoopAgent

HELLO, HELLO_ACK, ERROR, PING, PONG = 1, 2, 3, 4, 5
SHUTDOWN_ACK, METRICS_REPLY = 7, 9
EXEC, STARTED, STDIN, STDIN_CLOSE, STDOUT, STDERR, CREDIT, SIGNAL, EXIT = 16, 17, 18, 19, 20, 21, 22, 23, 25
MAX_PAYLOAD = 1 << 20
WINDOW = 2 * 1024 * 1024
EXECUTIONS = 3  # ids 1..3: LoopAgent numbers its executions from 1


def frame(kind: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack("<IBBHI", len(payload), kind, 0, 0, stream) + payload


def text(s: bytes) -> bytes:
    return struct.pack("<I", len(s)) + s


def started(stream: int) -> bytes:
    return frame(STARTED, stream, struct.pack("<iI", 100 + stream, WINDOW))


def exit_(stream: int, code: int = 0, message: bytes = b"", timed_out: int = 0) -> bytes:
    return frame(EXIT, stream, struct.pack("<iB", code, timed_out) + text(message))


def credit(stream: int, channel: int, amount: int) -> bytes:
    return frame(CREDIT, stream, struct.pack("<BI", channel, amount))


def error(stream: int, message: bytes) -> bytes:
    return frame(ERROR, stream, text(message))


def execution(stream: int) -> list[bytes]:
    return [
        started(stream),
        frame(STDOUT, stream, b"out %d\n" % stream),
        credit(stream, 0, 4096),
        frame(STDERR, stream, b"err"),
        exit_(stream, stream),
    ]


def seeds() -> list[list[bytes]]:
    """Valid replies (as frame lists) and a few hostile ones written out by hand."""
    interleaved = [f for s in range(1, EXECUTIONS + 1) for f in execution(s)]
    rotated = [execution(s) for s in range(1, EXECUTIONS + 1)]
    by_round = [f for group in zip(*rotated) for f in group]
    return [
        interleaved,
        by_round,
        [started(1), error(2, b"no such program"), frame(PONG, 0), exit_(1, 0, b"done"), started(3), exit_(3)],
        # Hostile, each on its own.
        [exit_(1)],  # exit before start
        [started(1), started(1)],  # started twice
        [started(1), exit_(1), frame(STDOUT, 1, b"late")],  # a frame for a finished execution
        [started(9)],  # an unknown execution
        [frame(STDOUT, 1, b"x")],  # output before start
        [started(1), frame(STDOUT, 1, b"y" * MAX_PAYLOAD), frame(STDOUT, 1, b"y" * MAX_PAYLOAD),
         frame(STDOUT, 1, b"y")],  # beyond the credit granted, if no grant was seen
        [started(1), credit(1, 1, 0xFFFFFFFF)],  # credit for an output channel
        [started(1), credit(1, 0, 0xFFFFFFFF), credit(1, 0, 0xFFFFFFFF), exit_(1)],  # stdin credit overflow
        [started(1), credit(1, 7, 1)],  # an unknown channel
        [started(1), exit_(1, 3, b"bad \xff\xfe utf-8 \x00 nul")],  # invalid UTF-8 in the exit message
        [error(1, b"refused \xc3\x28 \xff")],  # invalid UTF-8 in a refusal
        [started(1), error(1, b"\xed\xa0\x80 surrogate")],  # ... and in an error after the start
        [error(0, b"going away \xff")],  # a connection error, invalid UTF-8
        [started(1), frame(STDOUT, 1, b"\xff\xfe\xfd"), exit_(1)],  # invalid UTF-8 output: replaced
        [frame(EXEC, 1, b""), frame(STDIN, 1, b"")],  # host-only frames
        [frame(HELLO_ACK, 0, struct.pack("<H", 1) + text(b"again"))],  # a second hello-ack
        [struct.pack("<IBBHI", MAX_PAYLOAD + 1, STDOUT, 0, 0, 1)],  # an oversized length
        [struct.pack("<IBBHI", 0xFFFFFFFF, EXIT, 0, 0, 1)],
        [struct.pack("<IBBHI", 0, 99, 0, 0, 1)],  # an unknown kind
        [struct.pack("<IBBHI", 0, STARTED, 1, 0, 1)],  # flags set
        [struct.pack("<IBBHI", 0, STARTED, 0, 7, 1)],  # reserved bits set
        [started(1)] + [frame(STDOUT, 1)] * 20000 + [exit_(1)],  # a flood of empty frames
        [started(2)] + [frame(STDERR, 2, b"e")] * 5000 + [exit_(2)],  # a flood of tiny ones
        [frame(SHUTDOWN_ACK, 0), frame(METRICS_REPLY, 0, b"\x00" * 3), frame(PONG, 0, b"pp")],
    ]


def headers(frames: list[bytes]) -> list[int]:
    """The indices of the pieces long enough to hold a frame header."""
    return [i for i, f in enumerate(frames) if len(f) >= 12]


def mutate(rng: random.Random, frames: list[bytes]) -> bytes:
    frames = list(frames)
    for _ in range(rng.randint(1, 3)):
        choice = rng.randrange(9)
        if choice == 0 and frames:  # drop a frame
            del frames[rng.randrange(len(frames))]
        elif choice == 1 and frames:  # duplicate one
            i = rng.randrange(len(frames))
            frames.insert(rng.randrange(len(frames) + 1), frames[i])
        elif choice == 2 and len(frames) > 1:  # swap two
            i, j = rng.randrange(len(frames)), rng.randrange(len(frames))
            frames[i], frames[j] = frames[j], frames[i]
        elif choice == 3 and headers(frames):  # another stream id
            i = rng.choice(headers(frames))
            f = bytearray(frames[i])
            f[8:12] = struct.pack("<I", rng.choice([0, 1, 2, 3, 4, 0x7FFFFFFF, 0xFFFFFFFF]))
            frames[i] = bytes(f)
        elif choice == 4 and headers(frames):  # another kind
            i = rng.choice(headers(frames))
            f = bytearray(frames[i])
            f[4] = rng.choice([0, 6, 8, 10, 15, 16, 18, 19, 23, 24, 26, 255, rng.randrange(256)])
            frames[i] = bytes(f)
        elif choice == 5 and headers(frames):  # another length
            i = rng.choice(headers(frames))
            f = bytearray(frames[i])
            length = struct.unpack_from("<I", f)[0]
            lengths = [0, max(length - 1, 0), min(length + 1, 0xFFFFFFFF), MAX_PAYLOAD, MAX_PAYLOAD + 1]
            f[0:4] = struct.pack("<I", rng.choice(lengths + [0xFFFFFFFF]))
            frames[i] = bytes(f)
        elif choice == 6 and frames:  # flip bytes
            i = rng.randrange(len(frames))
            f = bytearray(frames[i])
            for _ in range(rng.randint(1, 4)):
                f[rng.randrange(len(f))] = rng.randrange(256)
            frames[i] = bytes(f)
        elif choice == 7:  # a new frame from the seeds' vocabulary
            stream = rng.randint(0, EXECUTIONS + 1)
            frames.insert(
                rng.randrange(len(frames) + 1),
                rng.choice(
                    [
                        started(stream),
                        exit_(stream, rng.randrange(-9, 256), bytes(rng.randrange(256) for _ in range(8))),
                        credit(stream, rng.randrange(4), rng.choice([0, 1, WINDOW, 0xFFFFFFFF])),
                        error(stream, bytes(rng.randrange(256) for _ in range(rng.randrange(16)))),
                        frame(STDOUT, stream, bytes(rng.randrange(256) for _ in range(rng.randrange(64)))),
                    ]
                ),
            )
        else:  # random bytes somewhere
            i = rng.randrange(len(frames) + 1)
            frames.insert(i, bytes(rng.randrange(256) for _ in range(rng.randint(1, 24))))
    data = b"".join(frames)
    if data and rng.random() < 0.4:  # hang up mid-frame
        data = data[: rng.randrange(len(data))]
    return data


class _FakeBox:
    """What _LoopAgent asks of its box: a weak reference and the per-loop table."""

    def __init__(self) -> None:
        self._loop_agents: dict[Any, Any] = {}


def _hello_ack(version: int = 1) -> bytes:
    return frame(HELLO_ACK, 0, struct.pack("<H", version) + text(b"fuzz"))


def _connected_driver() -> tuple[socket.socket, _LoopAgent]:
    """A fake agent's end of a socket pair that has answered the hello, and the host's driver."""
    host, agent = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.sendall(_hello_ack())
    native = core.LoopAgent._over_socket(host.fileno(), ExecResult)
    host.close()
    return agent, _LoopAgent(_FakeBox(), asyncio.get_running_loop(), native)  # type: ignore[arg-type]


async def _drain(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    while await loop.sock_recv(sock, 1 << 16):
        pass


def _check_result(value: Any, case: str) -> None:
    if isinstance(value, ExecResult):
        assert isinstance(value.stdout, str) and isinstance(value.stderr, str), case
        assert value.error_message is None or value.error_message, case
        return
    assert isinstance(value, boxlite.BoxliteError), f"{case}: {type(value).__name__}: {value}"
    assert str(value).strip(), f"{case}: an error without a message"


async def _run_case(data: bytes, case: str, errors: list[str], cancel: int = 0) -> None:
    """`cancel`: an execution whose awaiting task is cancelled before the agent answers (0: none)."""
    loop = asyncio.get_running_loop()
    host, agent = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        agent.sendall(_hello_ack())  # read by the handshake, which sends its hello first
        native = core.LoopAgent._over_socket(host.fileno(), ExecResult)
        host.close()
        agent.setblocking(False)
        driver = _LoopAgent(_FakeBox(), loop, native)  # type: ignore[arg-type]
        # The second execution keeps at most 64 bytes: output past it must fail that one alone.
        futures = [
            driver.exec("fuzzed", [str(i)], [], None, None, None, 64 if i == 1 else core.DEFAULT_MAX_OUTPUT_BYTES)[1]
            for i in range(EXECUTIONS)
        ]
        watched = [weakref.ref(f) for f in futures]
        if cancel:
            futures[cancel - 1].cancel()
            driver.cancel(cancel)  # as SimpleBox.exec does when its task is cancelled
        drain = loop.create_task(_drain(agent))
        try:
            await loop.sock_sendall(agent, data)
            agent.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the host rejected what came first and hung up

        # Every future ends once the reader sees the hang-up; the bound only turns a hang into a
        # failure that names the case.
        done, pending = await asyncio.wait(futures, timeout=30)
        assert not pending, f"{case}: {len(pending)} executions never ended"
        for f in futures:
            if not f.cancelled():
                _check_result(f.exception() or f.result(), case)
        assert not driver.native.alive and not driver.attached, f"{case}: the connection outlived the hang-up"
        with_exec = None
        try:
            driver.native.exec(loop.create_future(), "after", [], [], None, None, None)
        except boxlite.BoxliteError as e:
            with_exec = e
        assert with_exec is not None and str(with_exec), f"{case}: exec on a dead connection did not fail"
        driver.native.close()
        await drain  # the host's end is shut down: EOF
        del done, pending, futures, f, driver, native
        gc.collect()
        leaked = [w for w in watched if w() is not None]
        assert not leaked, f"{case}: the native side keeps {len(leaked)} futures alive"
    finally:
        host.close()
        agent.close()
    assert not errors, f"{case}: {errors}"


def _collecting_handler(errors: list[str]) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exception: Optional[BaseException] = context.get("exception")
        errors.append(f"{context.get('message')}: {exception!r}")

    return handler


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def test_hostile_handshakes() -> None:
    for reply in [
        _hello_ack(9),
        _hello_ack(0),
        error(0, b"refused \xff"),
        frame(STARTED, 0, b""),
        frame(HELLO_ACK, 0, b"\x01"),
        struct.pack("<IBBHI", MAX_PAYLOAD + 1, HELLO_ACK, 0, 0, 0),
        b"\x01\x02",  # then the hang-up, mid-header
        b"",
    ]:
        host, agent = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            agent.sendall(reply)
            agent.shutdown(socket.SHUT_WR)
            try:
                core.LoopAgent._over_socket(host.fileno(), ExecResult)
            except boxlite.BoxliteError as e:
                assert str(e).strip(), reply
            else:
                raise AssertionError(f"the handshake accepted {reply!r}")
        finally:
            host.close()
            agent.close()


async def test_seeds_and_mutations() -> None:
    loop = asyncio.get_running_loop()
    errors: list[str] = []
    loop.set_exception_handler(_collecting_handler(errors))
    # The valid seed first: the fake agent and the checks agree with a well-behaved agent.
    host, agent = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.sendall(_hello_ack())
    native = core.LoopAgent._over_socket(host.fileno(), ExecResult)
    host.close()
    agent.setblocking(False)
    driver = _LoopAgent(_FakeBox(), loop, native)  # type: ignore[arg-type]
    futures = [driver.exec("ok", [], [], None, None, None)[1] for _ in range(EXECUTIONS)]
    await loop.sock_sendall(agent, b"".join(seeds()[0]))
    results = await asyncio.gather(*futures)
    assert [(r.exit_code, r.stdout, r.stderr) for r in results] == [
        (i, f"out {i}\n", "err") for i in range(1, EXECUTIONS + 1)
    ]
    driver.close()
    agent.close()

    rng = random.Random(0xB0C5)
    all_seeds = seeds()
    for i, seed in enumerate(all_seeds):
        await _run_case(b"".join(seed), f"seed {i}", errors)
    baseline = _rss_kib()
    cases = int(os.environ.get("BOXLITE_FUZZ_CASES", "300"))
    for i in range(cases):
        which = rng.randrange(len(all_seeds))
        data = mutate(rng, all_seeds[which])
        cancel = rng.randint(1, EXECUTIONS) if i % 4 == 0 else 0
        await _run_case(data, f"case {i} (seed {which}, cancel {cancel}, {data[:48]!r}...)", errors, cancel)
    # Nothing a hostile agent sends is kept beyond one frame (<= 1 MiB) and what the executions
    # printed: hundreds of cases must not add up.
    grown = _rss_kib() - baseline
    assert grown < 64 * 1024, f"peak RSS grew by {grown} KiB over {cases} cases"


async def test_invalid_utf8_from_the_agent_is_replaced() -> None:
    """An agent's text with ill-formed UTF-8 reaches Python with U+FFFD in place of each bad byte,
    as output does, instead of a UnicodeDecodeError in place of the result or the error."""
    agent, driver = _connected_driver()
    futures = [driver.exec("utf8", [], [], None, None, None)[1] for _ in range(2)]
    agent.sendall(
        started(1)
        + frame(STDOUT, 1, b"ok \xff")
        + exit_(1, 3, b"bad \xff\xc3\x28 \xe2\x82\xac")
        + error(2, b"refused \xed\xa0\x80!")
    )
    first = await futures[0]
    assert (first.exit_code, first.stdout, first.error_message) == (3, "ok \ufffd", "bad \ufffd\ufffd( \u20ac")
    try:
        await futures[1]
    except boxlite.BoxliteError as e:
        assert "refused \ufffd\ufffd\ufffd!" in str(e), str(e)
    else:
        raise AssertionError("a refused execution succeeded")
    agent.close()
    await asyncio.sleep(0)
    driver.close()

    host, agent = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        agent.sendall(error(0, b"go away \xff"))
        try:
            core.LoopAgent._over_socket(host.fileno(), ExecResult)
        except boxlite.BoxliteError as e:
            assert "go away \ufffd" in str(e), str(e)
        else:
            raise AssertionError("the handshake accepted a refusal")
    finally:
        host.close()
        agent.close()


def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """(kind, stream, payload) of each whole frame in `data`."""
    out = []
    while len(data) >= 12:
        length, kind, _, _, stream = struct.unpack_from("<IBBHI", data)
        if len(data) < 12 + length:
            break
        out.append((kind, stream, data[12 : 12 + length]))
        data = data[12 + length :]
    return out


async def test_output_past_the_limit_fails_that_execution_alone() -> None:
    """An execution that prints more than its max_output_bytes fails with ExecutionError naming
    the limit, the host sends the agent a kill for it and drops what else comes for it, and the
    other executions on the connection end as they would."""
    agent, driver = _connected_driver()
    small = driver.exec("small", [], [], None, None, None, 10)[1]
    other = driver.exec("other", [], [], None, None, None)[1]
    agent.sendall(
        started(1)
        + started(2)
        + frame(STDOUT, 1, b"0123456789")
        + frame(STDOUT, 2, b"fine")
        + frame(STDERR, 1, b"!")
        + frame(STDOUT, 1, b"dropped")
        + exit_(1, -9)
        + exit_(2, 0)
    )
    try:
        await small
    except boxlite.ExecutionError as e:
        assert "more than 10 bytes" in str(e) and "max_output_bytes" in str(e), str(e)
    else:
        raise AssertionError("an execution past its limit succeeded")
    result = await other
    assert (result.exit_code, result.stdout) == (0, "fine")
    agent.setblocking(False)
    sent = b""
    while True:
        try:
            chunk = agent.recv(1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        sent += chunk
    assert (SIGNAL, 1, struct.pack("<i", 9)) in _frames(sent)
    assert not [f for f in _frames(sent) if f[0] == SIGNAL and f[1] == 2]
    agent.close()
    await asyncio.sleep(0)
    driver.close()
