"""`boxlite serve` under hostile or unusual clients: size limits, slow-loris, the connection cap,
TLS, the bind rule, and SIGTERM leaving boxes running."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import API_KEY, Server


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (no time bound of our own: the
    socket timeout only keeps a broken server from hanging the test)."""
    sock.settimeout(120)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_refuses_a_public_bind_without_a_key(home: Path) -> None:
    cli = os.environ["BOXLITE_CLI"]
    env = {k: v for k, v in os.environ.items() if k != "BOXLITE_SERVE_API_KEY"}
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        r = subprocess.run([cli, "--home", str(home), "serve", "--host", host, "--port", "0"], capture_output=True,
                           text=True, env=env, timeout=60)
        assert r.returncode != 0, (host, r)
        assert "without an API key" in r.stderr, r.stderr
    r = subprocess.run([cli, "--home", str(home), "serve", "--tls-cert", "/x.pem"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode != 0 and "--tls-key" in r.stderr, r.stderr


def test_public_bind_with_key_from_the_environment(home: Path, rootfs: str) -> None:
    cli = os.environ["BOXLITE_CLI"]
    proc = subprocess.Popen([cli, "--home", str(home), "--engine", "namespace", "serve", "--host", "0.0.0.0",
                             "--port", "0"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "BOXLITE_SERVE_API_KEY": "env-key"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on http://0.0.0.0:" in line, line
        port = int(line.strip().rsplit(":", 1)[1])
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/v1/boxes")
        assert conn.getresponse().status == 401
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/v1/boxes", headers={"Authorization": "Bearer env-key"})
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0


def test_body_and_header_limits(home: Path, rootfs: str) -> None:
    srv = Server(home, ["--allow-host-rootfs", "--max-body-bytes", "4096"])
    try:
        r = srv.request("POST", "/v1/boxes", raw=b"{" + b" " * 10000 + b"}")
        assert r.status == 413, r
        assert r.error()["code"] == "payload_too_large"
        r = srv.request("GET", "/v1/boxes", headers={"X-Big": "a" * 20000})
        assert r.status == 431, r
        r.error()
        assert srv.request("GET", "/v1/boxes").status == 200  # the server is fine afterwards
    finally:
        assert srv.stop() == 0


def test_slow_loris_is_cut_off(home: Path, rootfs: str) -> None:
    srv = Server(home, ["--read-timeout", "1"])
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(b"GET /v1/boxes HTTP/1.1\r\nHost: x\r\n")  # never finishes the headers
            assert read_until_closed(sock) == b""
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            pass  # an idle connection is closed too; the server keeps serving others
        assert srv.request("GET", "/v1/boxes").status == 200
    finally:
        assert srv.stop() == 0


def test_connection_cap(home: Path, rootfs: str) -> None:
    srv = Server(home, ["--max-connections", "2"])
    try:
        held = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(2)]
        # A complete request on each proves both connections were accepted and are open.
        for sock in held:
            sock.sendall(f"GET /v1/boxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\r\n".encode())
            sock.settimeout(120)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", srv.port)) as third:
            reply = read_until_closed(third)
            assert reply.startswith(b"HTTP/1.1 503"), reply
            assert b"too many connections" in reply
        for sock in held:
            sock.close()
    finally:
        assert srv.stop() == 0


def test_tls(home: Path, rootfs: str) -> None:
    with tempfile.TemporaryDirectory() as certs:
        cert, key = Path(certs) / "cert.pem", Path(certs) / "key.pem"
        made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                               "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], capture_output=True)
        assert made.returncode == 0, made.stderr
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        srv = Server(home, ["--tls-cert", str(cert), "--tls-key", str(key)], tls=context)
        try:
            r = srv.request("GET", "/v1/boxes")
            assert r.status == 200, r
            assert srv.request("GET", "/v1/boxes", auth=None).status == 401
            with socket.create_connection(("127.0.0.1", srv.port)) as plain:
                plain.sendall(b"GET /v1/config HTTP/1.1\r\nHost: x\r\n\r\n")
                assert not read_until_closed(plain).startswith(b"HTTP/1.1 200")
        finally:
            assert srv.stop() == 0
        bad = subprocess.run([os.environ["BOXLITE_CLI"], "--home", str(home), "serve", "--port", "0", "--tls-cert",
                              str(key), "--tls-key", str(key)], capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0 and "--tls-cert" in bad.stderr, bad.stderr


def test_sigterm_closes_idle_clients_and_leaves_boxes_running(home: Path, rootfs: str) -> None:
    srv = Server(home, ["--allow-host-rootfs"])
    box = srv.create_box(rootfs)["box_id"]
    exec_id = srv.exec(box, command="sleep", args=["1000"])
    assert srv.request("GET", f"/v1/boxes/{box}/executions/{exec_id}").json()["status"] == "running"
    # Idle clients: one the server has accepted, and more that complete their handshake while the
    # server is frozen, so that several still sit in the kernel's accept queue when it takes the
    # signal. Each gets an orderly end (no reset, no stray bytes).
    idle = [socket.create_connection(("127.0.0.1", srv.port))]
    srv.proc.send_signal(signal.SIGSTOP)
    idle += [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(8)]
    srv.proc.send_signal(signal.SIGTERM)
    srv.proc.send_signal(signal.SIGCONT)
    # Its own end, as in the test below: srv.stop() would send a second SIGTERM to a server still
    # shutting down, which (once the handler is gone) kills it with -15.
    assert srv.proc.wait(timeout=60) == 0
    for client in idle:
        assert read_until_closed(client) == b""
        client.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.port)).close()
    # A new server on the same home finds the box still running.
    again = Server(home, ["--allow-host-rootfs"])
    try:
        info = again.request("GET", f"/v1/boxes/{box}").json()
        assert info["status"] == "running", info
        # (Its executions ended with the server: the agent ends the commands of a connection that
        # closes.) The box still runs commands.
        done = again.wait_execution(box, again.exec(box, command="echo", args=["alive"]))
        assert done["stdout"] == "alive\n", done
    finally:
        again.remove_all_boxes()
        assert again.stop() == 0


def test_sigterm_lets_a_request_in_flight_finish(home: Path, rootfs: str) -> None:
    srv = Server(home, ["--allow-host-rootfs"])
    body = ('{"rootfs_path": "%s", "name": "late"}' % rootfs).encode()
    with socket.create_connection(("127.0.0.1", srv.port)) as sock:
        sock.sendall(f"POST /v1/boxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        # The server has the headers once it answers another request on a second connection.
        assert srv.request("GET", "/v1/config").status == 200
        srv.proc.send_signal(signal.SIGTERM)
        # New connections are refused once the acceptor closed; the one in flight still finishes.
        while True:
            try:
                socket.create_connection(("127.0.0.1", srv.port)).close()
            except (ConnectionRefusedError, ConnectionResetError):
                break  # (reset: it was still in the backlog of the acceptor that closed)
        sock.sendall(body[10:])
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 201"), reply
    assert b"Connection: close" in reply
    assert srv.proc.wait(timeout=60) == 0
    again = Server(home, ["--allow-host-rootfs"])
    try:
        assert again.request("GET", "/v1/boxes/late").status == 200
    finally:
        again.remove_all_boxes()
        assert again.stop() == 0
