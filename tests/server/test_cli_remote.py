"""`boxlite --url URL` (ls, rm, exec, run) against a live `boxlite serve`: the same output as the local
commands on the server's home, the command's exit code, stdin with -i, and the server's errors."""

from __future__ import annotations

import os
import subprocess

from conftest import API_KEY, Server


def cli(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([os.environ["BOXLITE_CLI"], *args], input=stdin, capture_output=True, timeout=300,
                          env={**os.environ, **(env or {})})


def remote(server: Server, *args: str, stdin: bytes | None = None, key: str = API_KEY) -> subprocess.CompletedProcess[bytes]:
    return cli("--url", f"http://127.0.0.1:{server.port}", "--api-key", key, *args, stdin=stdin)


def local(server: Server, *args: str) -> subprocess.CompletedProcess[bytes]:
    return cli("--home", str(server.home), "--engine", "namespace", *args)


def test_ls_matches_local(server: Server, rootfs: str) -> None:
    server.create_box(rootfs, name="alpha")
    beta = server.create_box(rootfs, name="beta")["box_id"]
    server.request("POST", f"/v1/boxes/{beta}/start")
    for args in (["ls", "-a", "--format", "{{.ID}} {{.Name}} {{.Status}} {{.Image}}"], ["ls", "-q"], ["ls", "-a", "-q"]):
        got, want = remote(server, *args), local(server, *args)
        assert got.returncode == 0, got
        assert got.stdout == want.stdout, (args, got.stdout, want.stdout)
        assert got.stdout.strip(), args
    table = remote(server, "ls", "-a").stdout.decode()
    assert table.splitlines()[0].split() == ["BOX", "ID", "IMAGE", "STATUS", "CREATED", "ENGINE", "NAME"]
    assert "alpha" in table and "beta" in table


def test_exec_output_exit_code_and_stdin(server: Server, rootfs: str) -> None:
    box = server.create_box(rootfs, name="runner")["box_id"]
    got = remote(server, "exec", "runner", "--", "sh", "-c", "echo out; echo err >&2; exit 5")
    assert (got.returncode, got.stdout, got.stderr) == (5, b"out\n", b"err\n"), got
    got = remote(server, "exec", "-i", "-e", "GREETING=hi", "-w", "/tmp", box, "--", "sh", "-c",
                 "cat; echo $GREETING; pwd", stdin=b"piped\n")
    assert (got.returncode, got.stdout) == (0, b"piped\nhi\n/tmp\n"), got
    big = remote(server, "exec", box, "--", "sh", "-c", "head -c 3000000 /dev/zero")
    assert big.returncode == 0 and len(big.stdout) == 3000000


def test_rm_and_errors(server: Server, rootfs: str) -> None:
    server.create_box(rootfs, name="gone")
    got = remote(server, "rm", "gone")
    assert (got.returncode, got.stdout) == (0, b"gone\n"), got
    missing_remote = remote(server, "rm", "gone")
    missing_local = local(server, "rm", "gone")
    assert missing_remote.returncode == missing_local.returncode == 1
    assert missing_remote.stderr == missing_local.stderr, (missing_remote.stderr, missing_local.stderr)
    denied = remote(server, "ls", key="wrong-key")
    assert denied.returncode != 0 and b"API key" in denied.stderr, denied
    unsupported = remote(server, "stats", "gone")
    assert unsupported.returncode != 0 and b"--url" in unsupported.stderr, unsupported
    bad = cli("--url", "ftp://nowhere", "ls")
    assert bad.returncode != 0 and b"http://" in bad.stderr, bad


def test_run_matches_local(server: Server, rootfs: str) -> None:
    script = "echo from-run; echo to-stderr >&2; exit 3"
    got = remote(server, "run", "--rm", "--rootfs", rootfs, "sh", "-c", script)
    want = local(server, "run", "--rm", "--rootfs", rootfs, "sh", "-c", script)
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr), (got, want)
    assert (got.returncode, got.stdout) == (3, b"from-run\n"), got
    assert server.request("GET", "/v1/boxes").json()["boxes"] == []  # --rm removed both
    detached = remote(server, "run", "-d", "--name", "bg", "--rootfs", rootfs, "sleep", "1000")
    assert detached.returncode == 0, detached
    box = server.request("GET", "/v1/boxes/bg").json()
    assert detached.stdout.decode().strip() == box["box_id"] and box["status"] == "running", (detached, box)
    shown = remote(server, "exec", "bg", "--", "ps")
    assert b"sleep 1000" in shown.stdout, shown
