"""BoxLite: run untrusted code in boxes, from Python.

    import asyncio, boxlite

    async def main() -> None:
        async with boxlite.SimpleBox(image="alpine:latest") as box:
            result = await box.exec("echo", "hello")
            print(result.stdout, end="")

    asyncio.run(main())

The async API is here; the blocking one is boxlite.sync_api.
"""

from __future__ import annotations

from ._native import core as _core
from .codebox import CodeBox
from .errors import (
    AlreadyExistsError,
    AuthError,
    BoxliteError,
    ConfigError,
    DatabaseError,
    EngineError,
    ExecError,
    ExecutionError,
    ImageError,
    InternalError,
    InvalidArgumentError,
    InvalidStateError,
    MetadataError,
    NetworkError,
    NotFoundError,
    ParseError,
    PortalError,
    RpcError,
    RpcTransportError,
    StoppedError,
    StorageError,
    TimeoutError,
    UnsupportedEngineError,
    UnsupportedError,
)
from .info import BoxInfo, BoxMetrics, BoxStateInfo, ExecResult, ImageInfo, ImagePullResult, RuntimeMetrics
from .interactivebox import InteractiveBox
from .options import (
    AdvancedBoxOptions,
    BoxOptions,
    ContainerCapabilities,
    CopyOptions,
    HealthCheckOptions,
    ImageRegistry,
    NetworkSpec,
    Options,
    Secret,
    SecurityOptions,
)
from .rest import AccessToken, ApiKeyCredential, BoxliteRestOptions, Credential
from .runtime import Box, Boxlite, ExecStderr, ExecStdin, ExecStdout, Execution, ImageHandle
from .simplebox import DEFAULT_MAX_OUTPUT_BYTES, SimpleBox

#: The C++ core's version (include/boxlite/version.hpp); the package has the same.
__version__: str = _core.__version__

__all__ = [
    "__version__",
    "Boxlite",
    "BoxliteRestOptions",
    "ApiKeyCredential",
    "Credential",
    "AccessToken",
    "AuthError",
    "Box",
    "Execution",
    "ExecStdin",
    "ExecStdout",
    "ExecStderr",
    "ExecResult",
    "ImageHandle",
    "Options",
    "ImageRegistry",
    "BoxOptions",
    "NetworkSpec",
    "Secret",
    "SecurityOptions",
    "HealthCheckOptions",
    "ContainerCapabilities",
    "AdvancedBoxOptions",
    "CopyOptions",
    "BoxInfo",
    "BoxStateInfo",
    "BoxMetrics",
    "RuntimeMetrics",
    "ImageInfo",
    "ImagePullResult",
    "SimpleBox",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "CodeBox",
    "InteractiveBox",
    "BoxliteError",
    "ExecError",
    "TimeoutError",
    "ParseError",
    "UnsupportedEngineError",
    "EngineError",
    "ConfigError",
    "StorageError",
    "ImageError",
    "PortalError",
    "NetworkError",
    "RpcError",
    "RpcTransportError",
    "InternalError",
    "ExecutionError",
    "UnsupportedError",
    "NotFoundError",
    "AlreadyExistsError",
    "InvalidStateError",
    "DatabaseError",
    "MetadataError",
    "InvalidArgumentError",
    "StoppedError",
]
