"""Exceptions: BoxliteError, one subclass per core ErrorKind, and upstream's ExecError,
TimeoutError and ParseError.

Every error of the C++ core reaches Python as the class of its kind, with the core's message
(for example ``NotFoundError("not found: box not found: web")``).
"""

from __future__ import annotations

import builtins

from ._native import core


class BoxliteError(Exception):
    """Base class of every BoxLite error. ``kind`` is the core's ErrorKind identifier."""

    kind: str = "internal"


class UnsupportedEngineError(BoxliteError):
    """The requested engine cannot run on this host."""

    kind = "unsupported_engine"


class EngineError(BoxliteError):
    """The engine (VMM, shim, namespaces) failed."""

    kind = "engine"


class ConfigError(BoxliteError, ValueError):
    """An option is out of range or inconsistent."""

    kind = "config"


class StorageError(BoxliteError):
    """A filesystem or disk image problem."""

    kind = "storage"


class ImageError(BoxliteError):
    """An image reference, pull, manifest or layer problem."""

    kind = "image"


class PortalError(BoxliteError):
    """A host <-> guest communication problem."""

    kind = "portal"


class NetworkError(BoxliteError):
    """A networking set-up problem."""

    kind = "network"


class RpcError(BoxliteError):
    """The guest agent answered with an error."""

    kind = "rpc"


class RpcTransportError(BoxliteError):
    """The transport to the guest agent failed."""

    kind = "rpc_transport"


class InternalError(BoxliteError):
    """A bug or an unexpected system error."""

    kind = "internal"


class ExecutionError(BoxliteError):
    """A command could not be run in the box (ErrorKind::Execution)."""

    kind = "execution"


class UnsupportedError(BoxliteError):
    """The operation or option is not supported (here, or yet)."""

    kind = "unsupported"


class NotFoundError(BoxliteError, LookupError):
    """No such box (or file, image)."""

    kind = "not_found"


class AlreadyExistsError(BoxliteError):
    """A box (or resource) of that name or id already exists."""

    kind = "already_exists"


class InvalidStateError(BoxliteError):
    """The box (or stream) is in the wrong state for the operation."""

    kind = "invalid_state"


class DatabaseError(BoxliteError):
    """SQLite failed."""

    kind = "database"


class MetadataError(BoxliteError):
    """Stored metadata is corrupt or unreadable."""

    kind = "metadata"


class InvalidArgumentError(BoxliteError, ValueError):
    """An argument is malformed."""

    kind = "invalid_argument"


class StoppedError(BoxliteError):
    """The box or runtime has been stopped or shut down."""

    kind = "stopped"


class ExecError(BoxliteError):
    """A command in a box exited non-zero where success was required (as upstream)."""

    def __init__(self, command: str, exit_code: int, stderr: str) -> None:
        super().__init__(f"command {command!r} failed with exit code {exit_code}: {stderr}")
        self.command = command
        self.exit_code = exit_code
        self.stderr = stderr


class TimeoutError(BoxliteError, builtins.TimeoutError):  # noqa: A001 - upstream's name
    """An operation did not finish in time (also a builtin TimeoutError)."""

    kind = "timeout"


class ParseError(BoxliteError):
    """Output from the box could not be parsed."""

    kind = "parse"


class AuthError(BoxliteError):
    """The server refused the credential (REST: 401, a missing or wrong API key)."""

    kind = "unauthenticated"


ERROR_CLASSES: dict[str, type[BoxliteError]] = {
    cls.kind: cls
    for cls in (
        UnsupportedEngineError,
        EngineError,
        ConfigError,
        StorageError,
        ImageError,
        PortalError,
        NetworkError,
        RpcError,
        RpcTransportError,
        InternalError,
        ExecutionError,
        UnsupportedError,
        NotFoundError,
        AlreadyExistsError,
        InvalidStateError,
        DatabaseError,
        MetadataError,
        InvalidArgumentError,
        StoppedError,
    )
}

missing = set(core.ERROR_KINDS) - set(ERROR_CLASSES)
if missing:  # pragma: no cover - a new ErrorKind in the core without a class here
    raise ImportError(f"boxlite.errors has no class for error kinds {sorted(missing)}")
core._register_errors(dict(ERROR_CLASSES))

__all__ = [
    "BoxliteError",
    "ExecError",
    "TimeoutError",
    "ParseError",
    "AuthError",
    "ERROR_CLASSES",
    *[cls.__name__ for cls in ERROR_CLASSES.values()],
]
