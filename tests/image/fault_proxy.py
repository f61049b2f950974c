#!/usr/bin/env python3
"""An HTTP proxy in front of a test registry that misbehaves on purpose, for the client's
recovery paths (resume, retry, token renewal).

   fault_proxy.py <listen-port> <upstream-port> <log> <fault> [<count>]

Faults (each applies to GET /v2/<name>/blobs/<digest> only; <count> defaults to 1):
  ignore-range   drop the Range header: the registry answers 200 with the whole blob
  status-503     the first <count> requests of each blob get HTTP 503
  drop           the first <count> requests of each blob send half the body, then close
  revoke-token   the bearer token of the first blob request is revoked: every later request
                 carrying it gets HTTP 401, as a registry does when a token expires
  none           forward everything unchanged

Every request is logged to <log> as one JSON object per line: method, path, range, token (a
short hash of the Authorization header), status. The proxy only listens on 127.0.0.1 and only
forwards to 127.0.0.1:<upstream-port>.
"""
import hashlib, http.client, json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

listen_port, upstream_port, log_path, fault = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
count = int(sys.argv[5]) if len(sys.argv) > 5 else 1
lock = threading.Lock()
seen = {}          # blob path -> requests so far
revoked = set()    # Authorization headers answered with 401


def log(entry):
    with lock, open(log_path, "a") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        auth = self.headers.get("Authorization", "")
        entry = {"method": "GET", "path": self.path, "range": self.headers.get("Range", ""),
                 "token": hashlib.sha256(auth.encode()).hexdigest()[:12] if auth else ""}
        is_blob = "/blobs/sha256:" in self.path
        with lock:
            nth = seen.get(self.path, 0) + 1 if is_blob else 0
            if is_blob:
                seen[self.path] = nth
            if is_blob and fault == "revoke-token" and auth.startswith("Bearer ") and not revoked:
                revoked.add(auth)
            refused = auth in revoked
        if refused:
            body = b'{"errors":[{"code":"UNAUTHORIZED","message":"token expired"}]}'
            self.reply(401, body, entry)
            return
        if is_blob and fault == "status-503" and nth <= count:
            self.reply(503, b'{"errors":[{"code":"UNAVAILABLE","message":"try again"}]}', entry)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        if is_blob and fault == "ignore-range":
            headers.pop("Range", None)
        upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
        upstream.request("GET", self.path, headers=headers)
        response = upstream.getresponse()
        body = response.read()
        upstream.close()
        entry["status"] = response.status
        log(entry)
        self.send_response(response.status)
        for k, v in response.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if is_blob and fault == "drop" and nth <= count and len(body) > 1:
            # Announce the whole body, send half, hang up.
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.end_headers()
        self.wfile.write(body)

    def reply(self, status, body, entry):
        entry["status"] = status
        log(entry)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("Www-Authenticate", 'Bearer realm="expired"')
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer(("127.0.0.1", listen_port), Handler).serve_forever()
