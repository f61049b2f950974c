"""`boxlite serve` under load from wrk (a second process, on loopback), against nginx serving the
same bytes as a static file: the floor of what an HTTP server costs on this machine.

  GET /v1/boxes    the listing of --boxes boxes (namespace engine): auth, routing, a runtime
                   list from SQLite and JSON, per request
  GET /v1/config   the same HTTP path without the runtime (auth off for this route)
  peer             nginx (Debian nginx-light, 2 worker processes as ours has 2 io threads)
                   serving the /v1/boxes body as a static file with keep-alive

Each round runs wrk (--threads, --connections, --duration) against ours and the peer in turn;
the lines give the median and interquartile range over rounds of requests/s and of the p99
latency, and the ratio ours/peer of each round's pair (requests/s: > 1 is faster; p99: < 1 is
faster). Any wrk error (socket errors, non-2xx) fails the run.

    build/pyenv/bin/python benchmark/serve/serve_bench.py [--cli build/rel/cli/boxlite] [--rounds 5]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/server"))

from conftest import busybox_rootfs_path  # noqa: E402

KEY = "bench-key"


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def run_wrk(url: str, args: argparse.Namespace, headers: list[str]) -> tuple[float, float]:
    """Requests/s and p99 latency in ms; fails on any error wrk reports."""
    cmd = ["wrk", "--latency", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    if "Socket errors" in out or "Non-2xx" in out:
        raise SystemExit(f"wrk reported errors against {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    assert p99, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


def start_server(cli: str, home: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([cli, "--home", str(home), "--engine", "namespace", "serve", "--port", "0",
                             "--allow-host-rootfs", "--api-key", KEY], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        raise SystemExit(f"boxlite serve did not start: {line!r}")
    return proc, int(line.strip().rsplit(":", 1)[1])


def request(port: int, method: str, path: str, body: object = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": f"Bearer {KEY}"}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def start_nginx(root: Path, body: bytes) -> tuple[subprocess.Popen[bytes], int]:
    www = root / "www" / "v1"
    www.mkdir(parents=True)
    (www / "boxes").write_bytes(body)
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = root / "nginx.conf"
    # As root, nginx's workers would drop to nobody, who cannot read the temporary folder.
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(f"""
{user}
worker_processes 2;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  default_type application/json;
  keepalive_requests 1000000;
  client_body_temp_path {root}/tmp;
  proxy_temp_path {root}/tmp;
  fastcgi_temp_path {root}/tmp;
  uwsgi_temp_path {root}/tmp;
  scgi_temp_path {root}/tmp;
  server {{
    listen 127.0.0.1:{port};
    root {root}/www;
  }}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(root)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while True:  # until it answers (no time bound: a broken nginx fails below)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/v1/boxes")
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            if resp.status != 200 or data != body:
                proc.send_signal(signal.SIGQUIT)
                proc.wait()
                raise SystemExit(f"nginx answered {resp.status}: {data[:200]!r} (see {root}/error.log)")
            return proc, port
        except ConnectionRefusedError:
            if proc.poll() is not None:
                raise SystemExit("nginx did not start")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cli", default=str(ROOT / "build/rel/cli/boxlite"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--boxes", type=int, default=10)
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"serve: no ratio: {tool} is not installed (scripts/packages.txt)")
            return 1
    rootfs = str(busybox_rootfs_path())
    with tempfile.TemporaryDirectory(prefix="boxlite-serve-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        server, port = start_server(args.cli, home)
        nginx = None
        try:
            for i in range(args.boxes):
                status, data = request(port, "POST", "/v1/boxes", {"rootfs_path": rootfs, "name": f"bench{i}"})
                assert status == 201, data
            status, body = request(port, "GET", "/v1/boxes")
            assert status == 200 and len(json.loads(body)["boxes"]) == args.boxes
            nginx, nginx_port = start_nginx(Path(tmp) / "nginx", body)
            auth = [f"Authorization: Bearer {KEY}"]
            results: dict[str, list[tuple[float, float]]] = {"boxes": [], "config": [], "peer": []}
            for _ in range(args.rounds):  # interleaved, so machine noise hits both sides alike
                results["boxes"].append(run_wrk(f"http://127.0.0.1:{port}/v1/boxes", args, auth))
                results["peer"].append(run_wrk(f"http://127.0.0.1:{nginx_port}/v1/boxes", args, []))
                results["config"].append(run_wrk(f"http://127.0.0.1:{port}/v1/config", args, []))
            print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.rounds} rounds, "
                  f"{args.boxes} boxes ({len(body)} bytes per /v1/boxes)")
            for metric, index, unit, better in (("rps", 0, "req/s", "> 1 is faster"),
                                                ("p99", 1, "ms", "< 1 is faster")):
                for name in ("boxes", "config"):
                    ours = [r[index] for r in results[name]]
                    peer = [r[index] for r in results["peer"]]
                    ratios = [o / p for o, p in zip(ours, peer)]
                    oq, pq, rq = quartiles(ours), quartiles(peer), quartiles(ratios)
                    print(f"serve GET /v1/{name} {metric}: ours {oq[1]:.1f} {unit} [{oq[0]:.1f}–{oq[2]:.1f}], "
                          f"peer {pq[1]:.1f} {unit} [{pq[0]:.1f}–{pq[2]:.1f}], ratio ours/peer {rq[1]:.3f} "
                          f"[{rq[0]:.3f}–{rq[2]:.3f}] (peer: nginx static file; {better})")
        finally:
            if nginx is not None:
                nginx.send_signal(signal.SIGQUIT)
                nginx.wait()
            for i in range(args.boxes):
                request(port, "DELETE", f"/v1/boxes/bench{i}?force=true")
            server.send_signal(signal.SIGTERM)
            server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
