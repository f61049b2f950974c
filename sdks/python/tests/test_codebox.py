"""CodeBox on a real Python image: Debian minbase + python3 made with debootstrap and umoci
(conftest.python_image_layout, cached between runs), loaded as "python:slim"."""

from __future__ import annotations

from pathlib import Path

import pytest

import boxlite
from boxlite.sync_api import SyncBoxlite, SyncCodeBox
from conftest import python_image_layout, require_namespace_engine


@pytest.fixture
async def python_runtime(home: str) -> boxlite.Boxlite:
    require_namespace_engine()
    layout = python_image_layout()
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=home, engine="namespace"))
    loaded = await runtime.images.load(str(layout), "python:slim")
    assert [image.reference for image in loaded] == ["docker.io/library/python:slim"]
    return runtime


async def test_codebox_runs_python(python_runtime: boxlite.Boxlite, tmp_path: Path) -> None:
    images = await python_runtime.images.list()
    assert [(i.repository, i.tag) for i in images] == [("docker.io/library/python", "slim")]
    async with boxlite.CodeBox(runtime=python_runtime) as box:
        assert await box.run("print(2**100)") == "1267650600228229401496703205376\n"
        script = tmp_path / "script.py"
        script.write_text("import sys\nprint(sys.version_info[0])\n")
        assert await box.run_script(str(script)) == "3\n"
        with pytest.raises(boxlite.TimeoutError):
            await box.run("while True: pass", timeout=0.5)
        # Still usable after a timeout.
        assert await box.run("print('alive')") == "alive\n"
        # minbase has no pip: the output says so, as upstream returns pip's output.
        assert "pip" in await box.install_package("requests")


async def test_sync_codebox_runs_python(python_runtime: boxlite.Boxlite) -> None:
    runtime = SyncBoxlite(boxlite.Options(home_dir=python_runtime.home_dir, engine="namespace"))
    with SyncCodeBox(runtime=runtime) as box:
        assert box.run("print(sum(range(10)))") == "45\n"
        with pytest.raises(boxlite.TimeoutError):
            box.run("import time; time.sleep(30)", timeout=0.3)
