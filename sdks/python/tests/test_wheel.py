"""The wheel: built by pip from this tree, installed into a fresh venv in a temporary folder
with nothing else from the source tree, it runs a box."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import busybox_rootfs_path, require_namespace_engine

SOURCE_ROOT = Path(__file__).resolve().parents[3]


def test_wheel_in_a_fresh_venv_runs_a_box(tmp_path: Path) -> None:
    require_namespace_engine()
    rootfs = busybox_rootfs_path()
    python = os.environ.get("BOXLITE_PYENV_PYTHON", sys.executable)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BOXLITE_NATIVE_DIR", "MYPYPATH")}
    wheelhouse = tmp_path / "wheelhouse"
    # No build isolation: scikit-build-core and nanobind come from the pinned build venv
    # (scripts/setup), so nothing is fetched and ccache sees stable paths.
    built = subprocess.run(
        [python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheelhouse),
         str(SOURCE_ROOT / "sdks/python")],
        capture_output=True, text=True, env=env)
    assert built.returncode == 0, built.stdout[-5000:] + built.stderr[-5000:]
    wheels = list(wheelhouse.glob("boxlite-*.whl"))
    assert len(wheels) == 1, wheels

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run([str(venv / "bin/pip"), "install", "--no-index", "--no-deps", str(wheels[0])],
                               capture_output=True, text=True, env=env)
    assert installed.returncode == 0, installed.stderr

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    script = textwrap.dedent(f"""
        import asyncio, pathlib, boxlite
        package = pathlib.Path(boxlite.__file__).parent
        assert str(package).startswith({str(venv)!r}), package
        for helper in ("boxlite-shim", "boxlite-shim-qemu", "boxlite-agent"):
            assert (package / "libexec/boxlite" / helper).is_file(), helper
        assert (package / "py.typed").is_file()
        async def main():
            runtime = boxlite.Boxlite(boxlite.Options(home_dir={str(tmp_path / "home")!r}, engine="namespace"))
            async with boxlite.SimpleBox(rootfs_path={str(rootfs)!r}, runtime=runtime) as box:
                result = await box.exec("sh", "-c", "echo from the wheel; exit 5")
                print(boxlite.__version__, result.exit_code, result.stdout, end="")
        asyncio.run(main())
    """)
    ran = subprocess.run([str(venv / "bin/python"), "-c", script], capture_output=True, text=True, cwd=workdir,
                         env=env)
    assert ran.returncode == 0, ran.stderr
    version = (SOURCE_ROOT / "include/boxlite/version.hpp").read_text().split('BOXLITE_VERSION_STRING "')[1].split('"')[0]
    assert ran.stdout == f"{version} 5 from the wheel\n"
