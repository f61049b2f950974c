"""docs/openapi.yaml against the live server: the document is well-formed OpenAPI 3 (every $ref
resolves), and every documented operation, called with a valid request, answers a status the
document lists with a body that fits the documented schema. (boxlite_server_tests checks that
the server's route table and the document list the same routes.)"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from conftest import Server

yaml = pytest.importorskip("yaml", reason="precondition: PyYAML is not installed")

DOC_PATH = Path(os.environ.get("BOXLITE_SOURCE_DIR", Path(__file__).resolve().parents[2])) / "docs/openapi.yaml"


def load() -> dict[str, Any]:
    return yaml.safe_load(DOC_PATH.read_text())  # type: ignore[no-any-return]


def resolve(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def check(doc: dict[str, Any], schema: Any, value: Any, where: str) -> None:
    """A small JSON-schema subset: type, nullable, enum, required, properties,
    additionalProperties, items."""
    schema = resolve(doc, schema)
    if value is None:
        assert schema.get("nullable", False), f"{where}: null where the document says not nullable"
        return
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int, "number": (int, float)}
    if kind:
        assert isinstance(value, types[kind]), f"{where}: {value!r} is not {kind}"
        if kind in ("integer", "number"):
            assert not isinstance(value, bool), f"{where}: bool where {kind} expected"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{where}: missing required '{key}'"
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                check(doc, props[key], item, f"{where}.{key}")
            elif isinstance(extra, dict):
                check(doc, extra, item, f"{where}.{key}")
            else:
                assert not props and extra is not False, f"{where}: undocumented field '{key}'"
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            check(doc, schema["items"], item, f"{where}[{i}]")


def test_document_is_well_formed() -> None:
    doc = load()
    assert doc["openapi"].startswith("3.")
    seen_ids = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                resolve(doc, node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    for path, item in doc["paths"].items():
        assert path.startswith("/v1/"), path
        for method, op in item.items():
            if method == "parameters":
                continue
            assert op["operationId"] not in seen_ids, op["operationId"]
            seen_ids.add(op["operationId"])
            assert op["responses"], (method, path)
            for param in [*item.get("parameters", []), *op.get("parameters", [])]:
                param = resolve(doc, param)
                if param["in"] == "path":
                    assert "{" + param["name"] + "}" in path, (path, param)


def tar_of(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_every_documented_operation_answers_as_documented(server: Server, rootfs: str) -> None:
    doc = load()
    box = server.create_box(rootfs, name="probe")["box_id"]
    running_exec = server.exec(box, command="sleep", args=["1000"])
    tty_exec = server.exec(box, command="sleep", args=["1000"], tty=True)
    bodies: dict[str, Any] = {
        "createBox": {"rootfs_path": rootfs},
        "execInBox": {"command": "true"},
        "signalExecution": {"signal": 15},
        "resizeExecution": {"cols": 80, "rows": 24},
    }
    # Stopping the box and deleting come last, so the other operations find their box and execution.
    operations = [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()
                  if method != "parameters"]
    operations.sort(key=lambda o: 2 if o[1] == "delete" else 1 if o[2]["operationId"] == "stopBox" else 0)
    probed = 0
    for path, method, op in operations:
        op_id = op["operationId"]
        if op_id == "attachExecution":
            continue  # the WebSocket upgrade: test_websocket.py
        exec_id = tty_exec if op_id == "resizeExecution" else running_exec
        url = path.format(box_id=box, exec_id=exec_id, volume_id="vol1", name="snap1")
        raw = None
        if op_id in ("uploadFiles", "downloadFiles"):
            url += "?path=/tmp"
            if op_id == "uploadFiles":
                raw = tar_of("probe.txt", b"probe\n")
        r = server.request(method.upper(), url, bodies.get(op_id), raw=raw)
        documented = {str(code) for code in op["responses"]}
        assert str(r.status) in documented, f"{method.upper()} {url} ({op_id}) answered {r.status}: {r}"
        response = resolve(doc, op["responses"][str(r.status)])
        content = response.get("content", {})
        if "application/json" in content:
            check(doc, content["application/json"]["schema"], r.json(), op_id)
        elif "application/x-tar" in content:
            assert r.headers["content-type"] == "application/x-tar"
            tarfile.open(fileobj=io.BytesIO(r.body)).getnames()
        else:
            assert r.body == b"", (op_id, r)
        probed += 1
    assert probed == len(operations) - 1
