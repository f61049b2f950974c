"""Loads the native module, boxlite._core.

An installed package carries it next to this file. A development build keeps it in the CMake
build tree: BOXLITE_NATIVE_DIR names that folder, which is then searched as part of the package.
"""

from __future__ import annotations

import os

from . import __path__ as _package_path

_extra = os.environ.get("BOXLITE_NATIVE_DIR")
if _extra and _extra not in _package_path:
    _package_path.append(_extra)

import boxlite._core as core  # noqa: E402

__all__ = ["core"]
