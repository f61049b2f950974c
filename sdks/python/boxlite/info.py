"""Read-only info and metrics objects: BoxInfo, BoxStateInfo, BoxMetrics, RuntimeMetrics,
ImageInfo, ImagePullResult, and ExecResult."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional


@dataclass(frozen=True)
class BoxStateInfo:
    """``status`` is one of unknown, configured, running, stopping, stopped, paused, failed."""

    status: str
    running: bool
    pid: Optional[int]


@dataclass(frozen=True)
class BoxInfo:
    id: str
    name: Optional[str]
    state: BoxStateInfo
    created_at: str
    image: str
    cpus: int
    memory_mib: int
    engine: str = ""
    started_at: Optional[str] = None
    container_id: Optional[str] = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """The v0.4.4 README's ``info.status``: ``state.status``."""
        return self.state.status

    @staticmethod
    def _from(d: Mapping[str, Any]) -> "BoxInfo":
        return BoxInfo(
            id=d["id"],
            name=d["name"],
            state=BoxStateInfo(status=d["status"], running=d["running"], pid=d["pid"]),
            created_at=d["created_at"],
            image=d["image"],
            cpus=d["cpus"],
            memory_mib=d["memory_mib"],
            engine=d["engine"],
            started_at=d["started_at"],
            container_id=d["container_id"],
            labels=dict(d["labels"]),
        )


@dataclass(frozen=True)
class RuntimeMetrics:
    boxes_created_total: int
    boxes_failed_total: int
    num_running_boxes: int
    total_commands_executed: int
    total_exec_errors: int


@dataclass(frozen=True)
class BoxMetrics:
    commands_executed_total: int
    exec_errors_total: int
    bytes_sent_total: int
    bytes_received_total: int
    cpu_percent: Optional[float] = None
    memory_bytes: Optional[int] = None
    cpu_time_ns: Optional[int] = None
    process_count: Optional[int] = None
    network_bytes_sent: Optional[int] = None
    network_bytes_received: Optional[int] = None
    network_tcp_connections: Optional[int] = None
    network_tcp_errors: Optional[int] = None
    total_create_duration_ms: Optional[int] = None
    guest_boot_duration_ms: Optional[int] = None
    stage_filesystem_setup_ms: Optional[int] = None
    stage_image_prepare_ms: Optional[int] = None
    stage_guest_rootfs_ms: Optional[int] = None
    stage_box_config_ms: Optional[int] = None
    stage_box_spawn_ms: Optional[int] = None
    stage_container_init_ms: Optional[int] = None


@dataclass(frozen=True)
class ImageInfo:
    reference: str
    repository: str
    tag: str
    id: str
    cached_at: str
    size_bytes: Optional[int]

    @staticmethod
    def _from(d: Mapping[str, Any]) -> "ImageInfo":
        reference: str = d["reference"]
        repository, tag = reference, ""
        name_part = reference.rsplit("/", 1)[-1]
        if "@" in reference:
            repository, tag = reference.split("@", 1)
        elif ":" in name_part:
            repository, tag = reference.rsplit(":", 1)
        return ImageInfo(reference, repository, tag, d["id"], d["cached_at"], d["size_bytes"])


@dataclass(frozen=True)
class ImagePullResult:
    reference: str
    config_digest: str
    layer_count: int


@dataclass
class ExecResult:
    """How a command ended. ``exit_code`` is negative (-N) when signal N killed it.

    ``Execution.wait()`` fills exit_code and error_message; ``SimpleBox.exec`` also the
    output it collected."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""
    error_message: Optional[str] = None
    timed_out: bool = False

    @property
    def success(self) -> bool:
        return self.exit_code == 0 and self.error_message is None


__all__ = [
    "BoxInfo",
    "BoxStateInfo",
    "RuntimeMetrics",
    "BoxMetrics",
    "ImageInfo",
    "ImagePullResult",
    "ExecResult",
]
