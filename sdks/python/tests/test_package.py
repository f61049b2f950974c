"""The package itself: version, typing marker, the error classes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import boxlite
from boxlite import errors
from boxlite._native import core

SOURCE_ROOT = Path(__file__).resolve().parents[3]


def test_version_is_the_cpp_version() -> None:
    header = (SOURCE_ROOT / "include/boxlite/version.hpp").read_text()
    cpp = re.search(r'#define BOXLITE_VERSION_STRING "([^"]+)"', header)
    assert cpp is not None
    assert boxlite.__version__ == cpp.group(1)
    pyproject = (SOURCE_ROOT / "sdks/python/pyproject.toml").read_text()
    assert f'version = "{cpp.group(1)}"' in pyproject
    cmake = (SOURCE_ROOT / "CMakeLists.txt").read_text()
    assert f"VERSION {cpp.group(1)}" in cmake


def test_typed_marker_and_stubs_ship() -> None:
    package = Path(boxlite.__file__).parent
    assert (package / "py.typed").exists()
    assert (package / "_core.pyi").exists()


@pytest.mark.parametrize("kind", list(core.ERROR_KINDS))
def test_every_error_kind_maps_to_its_class(kind: str) -> None:
    cls = errors.ERROR_CLASSES[kind]
    assert issubclass(cls, boxlite.BoxliteError)
    with pytest.raises(cls) as caught:
        core._raise_for_test(kind, "the core's own words")
    assert type(caught.value) is cls
    assert "the core's own words" in str(caught.value)


def test_each_kind_has_its_own_class() -> None:
    assert len(set(errors.ERROR_CLASSES.values())) == len(core.ERROR_KINDS)
    assert boxlite.NotFoundError.__name__ == "NotFoundError"
    assert issubclass(boxlite.TimeoutError, TimeoutError)


def test_exec_error_carries_its_fields() -> None:
    error = boxlite.ExecError("ls /nope", 2, "no such file")
    assert (error.command, error.exit_code, error.stderr) == ("ls /nope", 2, "no such file")
    assert isinstance(error, boxlite.BoxliteError)
    assert issubclass(boxlite.ParseError, boxlite.BoxliteError)


def test_options_that_cannot_be_honoured_are_refused() -> None:
    with pytest.raises(boxlite.UnsupportedError):
        boxlite.BoxOptions(image="alpine", auto_pause=30).to_core_json()
    with pytest.raises(boxlite.UnsupportedError):
        boxlite.BoxOptions(
            image="alpine", advanced=boxlite.AdvancedBoxOptions(health_check=boxlite.HealthCheckOptions())
        ).to_core_json()
    with pytest.raises(boxlite.ConfigError):
        boxlite.NetworkSpec("disabled", allow_net=["example.com"])
    with pytest.raises(boxlite.ConfigError):
        boxlite.ImageRegistry("https://example.com")
    with pytest.raises(boxlite.UnsupportedError):
        boxlite.CopyOptions(follow_symlinks=True).check()


def test_secret_repr_hides_the_value() -> None:
    secret = boxlite.Secret("token", "s3cr3t", hosts=["api.example.com"])
    assert "s3cr3t" not in repr(secret)
    assert secret.get_placeholder() == "<BOXLITE_SECRET:token>"


def test_security_presets() -> None:
    assert boxlite.SecurityOptions.development().close_fds is False
    assert boxlite.SecurityOptions.standard().jailer_enabled is True
    maximum = boxlite.SecurityOptions.maximum()
    assert (maximum.max_open_files, maximum.max_processes, maximum.max_file_size) == (1024, 100, 1 << 30)
