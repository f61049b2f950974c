"""Option and value classes: Options, ImageRegistry, BoxOptions, NetworkSpec, Secret,
SecurityOptions, AdvancedBoxOptions, HealthCheckOptions, ContainerCapabilities, CopyOptions.

Names, fields and defaults follow upstream's Python SDK. Anything the core cannot honour yet is
refused with UnsupportedError when the box is created; nothing is silently ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

from .errors import ConfigError, UnsupportedError

VolumeArg = Union[Sequence[Any], Mapping[str, Any]]
PortArg = Union[Sequence[Any], Mapping[str, Any]]


@dataclass
class ImageRegistry:
    """A registry to search for unqualified image references (``host[:port]``)."""

    host: str
    transport: str = "https"
    skip_verify: bool = False
    search: bool = False
    username: Optional[str] = None
    password: Optional[str] = None
    bearer_token: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.host or "://" in self.host or "/" in self.host:
            raise ConfigError(f"image registry host {self.host!r} must be host[:port], without a scheme or path")
        if self.transport not in ("https", "", "http"):
            raise ConfigError(f"image registry transport {self.transport!r} (allowed: https, http)")
        if (self.username is None) != (self.password is None):
            raise ConfigError("image registry username and password must be given together")


@dataclass
class Options:
    """Runtime options: the home directory (default ``$BOXLITE_HOME`` or ``~/.boxlite``), the
    registries to search, and (an extension) the engine of new boxes
    (``auto|kvm|qemu|namespace``; default ``$BOXLITE_ENGINE`` or ``auto``)."""

    home_dir: Optional[str] = None
    image_registries: list[Union[ImageRegistry, str]] = field(default_factory=list)
    engine: Optional[str] = None

    def registry_hosts(self) -> Optional[list[str]]:
        if not self.image_registries:
            return None
        hosts: list[str] = []
        for registry in self.image_registries:
            if isinstance(registry, str):
                registry = ImageRegistry(registry)
            if registry.username is not None or registry.bearer_token is not None:
                raise UnsupportedError("registry credentials are not supported yet (anonymous pulls only)")
            if registry.skip_verify:
                raise UnsupportedError("skip_verify is not supported; plain-HTTP loopback registries need no option")
            hosts.append(registry.host)
        return hosts


@dataclass
class NetworkSpec:
    """``mode`` is ``"enabled"`` or ``"disabled"`` (any case); ``allow_net`` limits egress."""

    mode: str = "enabled"
    allow_net: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mode = self.mode.lower()
        if self.mode not in ("enabled", "disabled"):
            raise ConfigError(f"network mode {self.mode!r} (allowed: enabled, disabled)")
        if self.mode == "disabled" and self.allow_net:
            raise ConfigError("allow_net needs the network enabled")

    def to_core(self) -> dict[str, Any]:
        return {"mode": self.mode, "allow_net": list(self.allow_net)}


@dataclass
class Secret:
    """A secret substituted for its placeholder in the box's outgoing requests to ``hosts``."""

    name: str
    value: str
    hosts: list[str] = field(default_factory=list)
    placeholder: Optional[str] = None

    def get_placeholder(self) -> str:
        return self.placeholder if self.placeholder is not None else f"<BOXLITE_SECRET:{self.name}>"

    def __repr__(self) -> str:
        return f"Secret(name={self.name!r}, value='***', hosts={self.hosts!r}, placeholder={self.placeholder!r})"

    def to_core(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "hosts": list(self.hosts), "placeholder": self.get_placeholder()}


@dataclass
class SecurityOptions:
    """The jailer around a box and its resource limits, with upstream's presets."""

    jailer_enabled: bool = False
    seccomp_enabled: bool = False
    max_open_files: Optional[int] = None
    max_file_size: Optional[int] = None
    max_processes: Optional[int] = None
    max_memory: Optional[int] = None
    max_cpu_time: Optional[int] = None
    network_enabled: bool = True
    close_fds: bool = True

    @staticmethod
    def development() -> "SecurityOptions":
        return SecurityOptions(close_fds=False)

    @staticmethod
    def standard() -> "SecurityOptions":
        return SecurityOptions(jailer_enabled=True, seccomp_enabled=True)

    @staticmethod
    def maximum() -> "SecurityOptions":
        return SecurityOptions(
            jailer_enabled=True,
            seccomp_enabled=True,
            max_open_files=1024,
            max_file_size=1 << 30,
            max_processes=100,
        )

    def to_core(self) -> dict[str, Any]:
        return {
            "jailer_enabled": self.jailer_enabled,
            "seccomp_enabled": self.seccomp_enabled,
            "network_enabled": self.network_enabled,
            "close_fds": self.close_fds,
            "resource_limits": {
                "max_open_files": self.max_open_files,
                "max_file_size": self.max_file_size,
                "max_processes": self.max_processes,
                "max_memory": self.max_memory,
                "max_cpu_time": self.max_cpu_time,
            },
        }


@dataclass
class HealthCheckOptions:
    """Seconds. Not supported by this runtime yet: a box with one is refused."""

    interval: int = 30
    timeout: int = 10
    retries: int = 3
    start_period: int = 60


@dataclass
class ContainerCapabilities:
    """Linux capabilities to add to or drop from the box's processes (not supported yet)."""

    add: list[str] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)


@dataclass
class AdvancedBoxOptions:
    security: Optional[SecurityOptions] = None
    health_check: Optional[HealthCheckOptions] = None
    capabilities: Optional[ContainerCapabilities] = None


@dataclass
class CopyOptions:
    """How copy_in/copy_out treat trees. The core copies recursively, overwrites, keeps
    symlinks as links and copies a directory itself (include_parent); other values are refused."""

    recursive: bool = True
    overwrite: bool = True
    follow_symlinks: bool = False
    include_parent: bool = True

    def check(self) -> None:
        if not self.recursive or not self.overwrite or self.follow_symlinks or not self.include_parent:
            raise UnsupportedError(
                "copy options other than recursive=True, overwrite=True, follow_symlinks=False, "
                "include_parent=True are not supported yet"
            )


def _volume(value: VolumeArg) -> dict[str, Any]:
    if isinstance(value, Mapping):
        host = value.get("host_path", value.get("host"))
        guest = value.get("guest_path", value.get("guest"))
        read_only = bool(value.get("read_only", value.get("ro", False)))
    else:
        items = list(value)
        if len(items) not in (2, 3):
            raise ConfigError(f"volume {value!r} must be (host, guest[, read_only])")
        host, guest = items[0], items[1]
        read_only = bool(items[2]) if len(items) == 3 else False
        if len(items) == 3 and isinstance(items[2], str):  # the v0.4.4 README's "ro" / "rw"
            if items[2] not in ("ro", "rw"):
                raise ConfigError(f"volume mode {items[2]!r} (allowed: ro, rw, or a bool)")
            read_only = items[2] == "ro"
    if not isinstance(host, str) or not isinstance(guest, str):
        raise ConfigError(f"volume {value!r} needs a host path and a guest path")
    return {"host_path": host, "guest_path": guest, "read_only": read_only}


def _port(value: PortArg) -> dict[str, Any]:
    if isinstance(value, Mapping):
        guest = value.get("guest_port", value.get("guest"))
        host = value.get("host_port", value.get("host"))
        protocol = value.get("protocol", "tcp")
        host_ip = value.get("host_ip")
    else:
        items = list(value)
        if len(items) < 2 or len(items) > 4:
            raise ConfigError(f"port {value!r} must be (host, guest[, protocol[, host_ip]])")
        host, guest = items[0], items[1]
        protocol = items[2] if len(items) > 2 else "tcp"
        host_ip = items[3] if len(items) > 3 else None
    if not isinstance(guest, int):
        raise ConfigError(f"port {value!r} needs an integer guest port")
    port: dict[str, Any] = {"guest_port": guest, "host_port": host, "protocol": protocol}
    if host_ip is not None:
        port["host_ip"] = host_ip
    return port


class BoxOptions:
    """Everything a box is created with. Every keyword is optional; ``None`` takes the core's
    default (image ``alpine:latest``, 1 CPU, the core's memory default, network enabled,
    auto_remove on)."""

    def __init__(
        self,
        image: Optional[str] = None,
        rootfs_path: Optional[str] = None,
        cpus: Optional[int] = None,
        memory_mib: Optional[int] = None,
        disk_size_gb: Optional[int] = None,
        working_dir: Optional[str] = None,
        env: Optional[Union[Sequence[tuple[str, str]], Mapping[str, str]]] = None,
        volumes: Optional[Sequence[VolumeArg]] = None,
        network: Optional[NetworkSpec] = None,
        ports: Optional[Sequence[PortArg]] = None,
        auto_remove: Optional[bool] = None,
        auto_pause: Optional[int] = None,
        auto_delete: Optional[int] = None,
        auto_resume: Optional[bool] = None,
        detach: Optional[bool] = None,
        entrypoint: Optional[list[str]] = None,
        cmd: Optional[list[str]] = None,
        user: Optional[str] = None,
        advanced: Optional[AdvancedBoxOptions] = None,
        secrets: Optional[list[Secret]] = None,
        labels: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.image = image
        self.rootfs_path = rootfs_path
        self.cpus = cpus
        self.memory_mib = memory_mib
        self.disk_size_gb = disk_size_gb
        self.working_dir = working_dir
        self.env: list[tuple[str, str]] = list(env.items()) if isinstance(env, Mapping) else list(env or [])
        self._volumes = [_volume(v) for v in (volumes or [])]
        self.network = network
        self._ports = [_port(p) for p in (ports or [])]
        self.auto_remove = auto_remove
        self.auto_pause = auto_pause
        self.auto_delete = auto_delete
        self.auto_resume = auto_resume
        self.detach = detach
        self.entrypoint = entrypoint
        self.cmd = cmd
        self.user = user
        self.advanced = advanced
        self.secrets: list[Secret] = list(secrets or [])
        self.labels: dict[str, str] = dict(labels or {})

    def __repr__(self) -> str:
        fields = {k: v for k, v in vars(self).items() if v not in (None, [], {})}
        return "BoxOptions(" + ", ".join(f"{k.lstrip('_')}={v!r}" for k, v in fields.items()) + ")"

    def to_core_json(self) -> str:
        """The core's JSON form of these options (include/boxlite/json.hpp)."""
        o: dict[str, Any] = {}
        if self.rootfs_path:
            o["rootfs"] = {"path": self.rootfs_path}
        elif self.image:
            o["rootfs"] = {"image": self.image}
        for key in ("cpus", "memory_mib", "disk_size_gb", "working_dir", "detach", "entrypoint", "cmd", "user"):
            value = getattr(self, key)
            if value is not None:
                o[key] = value
        if self.env:
            o["env"] = [[k, v] for k, v in self.env]
        if self._volumes:
            o["volumes"] = self._volumes
        if self._ports:
            o["ports"] = self._ports
        if self.network is not None:
            o["network"] = self.network.to_core()
        if self.auto_pause is not None:
            raise UnsupportedError("auto_pause is not supported by the local runtime (upstream: REST only)")
        if self.auto_resume is not None:
            raise UnsupportedError("auto_resume is not supported by the local runtime (upstream: REST only)")
        auto_remove = self.auto_remove
        if self.auto_delete is not None:
            if self.auto_delete < 0:
                raise ConfigError(f"auto_delete must be >= 0 seconds, got {self.auto_delete}")
            auto_remove = self.auto_delete > 0  # local runtime: deleted when it stops
        if auto_remove is None and self.detach:
            auto_remove = False  # a detached box outlives its creator: never removed on stop
        if auto_remove is not None:
            o["auto_remove"] = auto_remove
        if self.secrets:
            o["secrets"] = [s.to_core() for s in self.secrets]
        if self.labels:
            o["labels"] = self.labels
        if self.advanced is not None:
            if self.advanced.health_check is not None:
                raise UnsupportedError("health checks are not supported yet")
            caps = self.advanced.capabilities
            if caps is not None and (caps.add or caps.drop):
                raise UnsupportedError("container capability changes are not supported yet")
            if self.advanced.security is not None:
                o["security"] = self.advanced.security.to_core()
        return json.dumps(o)


__all__ = [
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
]
