from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, computed_field

from diskvault.backups.models import BackupStatus, BackupType, RepositoryKind, SourceKind
from diskvault.schemas_base import (
    JSON_INT,
    MAX_SIZE,
    Count,
    Days,
    PathStr,
    PositiveInt,
    RequestModel,
)

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"  # used in repository paths
Encryption = Literal["none", "luks"]
Compression = Literal["none", "zstd"]
KEY_FILE = Field(
    default=None,
    max_length=1024,
    pattern=r"^/[^\x00]*$",
    description="absolute path of the key file (default DISKVAULT_BACKUP_KEY_FILE)",
)


Text = Annotated[str, Field(min_length=1, max_length=1024)]


class _SourceCreate(RequestModel):
    """Fields every kind takes; each kind's own model adds its strict config."""

    name: str = Field(pattern=NAME)
    boot_check: str | None = Field(
        default=None, max_length=500, description="regex the console prints once booted"
    )
    boot_timeout_s: float | None = Field(default=None, gt=0, le=3600)
    unverified: StrictBool = Field(
        default=False,
        description="add it even though its disks cannot be checked now (they must "
        "otherwise exist and be readable, or answer)",
    )


class PathDisk(RequestModel):
    path: PathStr


class PathSourceCreate(_SourceCreate):
    """qcow2 and raw: files or block devices on this host, by absolute path; give
    ``disks`` or ``path`` (422 otherwise)."""

    kind: Literal["qcow2", "raw"]
    disks: list[PathStr | PathDisk] | None = Field(default=None, min_length=1, max_length=64)
    path: PathStr | None = Field(default=None, description="one disk: same as disks: [path]")


class NbdDisk(RequestModel):
    url: Text
    bitmap: Text | None = None


class NbdSourceCreate(_SourceCreate):
    """Give ``url`` (and ``bitmap``) for one disk, or ``disks`` (422 otherwise)."""

    kind: Literal["nbd"]
    url: Text | None = Field(default=None, description="nbd:// or nbd+unix://...?socket=")
    bitmap: Text | None = None
    disks: list[Text | NbdDisk] | None = Field(default=None, min_length=1, max_length=64)


class QmpDisk(RequestModel):
    node: Text


class QmpSourceCreate(_SourceCreate):
    kind: Literal["qmp"]
    socket: PathStr = Field(description="the VM's QMP unix socket")
    disks: list[Text | QmpDisk] = Field(min_length=1, max_length=64, description="node names")


class LibvirtSourceCreate(_SourceCreate):
    kind: Literal["libvirt"]
    domain: Text
    uri: Text | None = Field(default=None, description="default qemu:///system")
    disks: list[Text] | None = Field(default=None, max_length=64, description="e.g. vda")


SourceCreate = Annotated[
    PathSourceCreate | NbdSourceCreate | QmpSourceCreate | LibvirtSourceCreate,
    Field(discriminator="kind"),
]


class SourceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    kind: SourceKind
    config: dict[str, Any]
    created_at: datetime


class RepositoryCreate(RequestModel):
    name: str = Field(pattern=NAME)
    kind: RepositoryKind = RepositoryKind.local
    path: PathStr | None = Field(default=None, description="local: a mounted directory")
    url: str | None = Field(
        default=None, max_length=4096, description="s3: s3://bucket/prefix?endpoint_url=..."
    )
    immutability_days: Days = 0.0
    attach: StrictBool = Field(default=False, description="rebuild chains from existing sidecars")
    encryption: Encryption = Field(default="none", description="luks: AES-256-XTS qcow2")
    compression: Compression = Field(default="none", description="zstd: compressed clusters")
    key_file: str | None = KEY_FILE
    create_key: StrictBool = Field(
        default=False, description="make a new key file (paper key once)"
    )


class RepositoryUpdate(RequestModel):
    compression: Compression | None = None
    encryption: Encryption | None = Field(default=None, description="only while empty (else 409)")
    key_file: str | None = KEY_FILE
    create_key: StrictBool | None = None


class RekeyRequest(RequestModel):
    key_file: str | None = KEY_FILE
    create_key: StrictBool = False


class RepositoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    kind: RepositoryKind
    path: str | None
    url: str | None
    enabled: bool
    immutability_days: float
    immutable_flag: bool | None
    total_size_bytes: int | None
    available_size_bytes: int | None
    encryption: str
    compression: str
    key_file: str | None
    key_fingerprint: str | None
    keys: list[dict[str, Any]]
    created_at: datetime
    paper_key: str | None = Field(
        default=None, description="a key just created, printed once: store it offline"
    )


class RescanOut(BaseModel):
    repository: str
    added: int
    known: int
    skipped: list[str]
    chains: int


class BackupStart(RequestModel):
    vm_name: Text
    backup_type: Literal["full", "incremental", "auto"] = "auto"
    repository: Text | None = Field(default=None, description="name or id; default: 'default'")
    speed: Annotated[int, Field(ge=1, le=MAX_SIZE), JSON_INT] | None = Field(
        default=None, description="throttle, bytes per second"
    )


class BackupOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    vm_name: str
    disk_index: int
    repository_id: str
    chain_id: str | None
    requested_type: str
    backup_type: BackupType | None
    status: BackupStatus
    path: str | None
    parent_backup_id: str | None
    job_id: str | None
    policy_id: str | None
    change_id: str | None
    bitmap: str | None
    reason: str | None
    error: str | None
    total_bytes: int
    bytes_transferred: int
    file_size: int
    immutable_until: datetime | None
    key_fingerprint: str | None
    verify_status: str | None
    verified_at: datetime | None
    verify_detail: str | None
    boot_status: str | None = None
    boot_checked_at: datetime | None = None
    boot_detail: str | None = None
    boot_method: str | None = None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def boot_screenshot_url(self) -> str | None:
        """The last boot verification's screen (PNG), kept beside the point's sidecar."""
        return f"/api/v1/backup/{self.id}/boot-screenshot" if self.boot_checked_at else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def throughput_bytes_per_s(self) -> float | None:
        if self.started_at is None or self.completed_at is None:
            return None
        seconds = (self.completed_at - self.started_at).total_seconds()
        return round(self.bytes_transferred / seconds, 1) if seconds > 0 else None


class ChainPoint(BaseModel):
    id: str
    backup_type: BackupType | None
    created_at: datetime
    file: str
    file_size: int
    parent_backup_id: str | None
    immutable_until: datetime | None
    verify_status: str | None


class ChainOut(BaseModel):
    chain_id: str
    repository_id: str
    disk_index: int
    points: list[ChainPoint]
    total_size_bytes: int
    broken_reason: str | None


class ChainsOut(BaseModel):
    vm_name: str
    chains: list[ChainOut]
    total_size_bytes: int


class Retention(RequestModel):
    keep_last: Count | None = None
    keep_hourly: Count | None = None
    keep_daily: Count | None = None
    keep_weekly: Count | None = None
    keep_monthly: Count | None = None
    keep_yearly: Count | None = None


class PruneRequest(Retention):
    """The ``keep_*`` rules given, or a ``policy``'s rules (which then replace them)."""

    vm_name: Text
    repository: Text | None = None
    policy: Text | None = Field(default=None, description="use this policy's rules")
    max_chain_length: PositiveInt | None = None
    dry_run: StrictBool = True


class CopyRequest(RequestModel):
    target: Text = Field(description="repository name or id to copy to")
    repository: Text | None = Field(default=None, description="copy from (default: 'default')")
    vm_name: Text | None = None


class RestoreRequest(RequestModel):
    """``target`` decides which other field is needed: file needs ``path``, nbd
    ``url``, image ``image_name`` (422 otherwise)."""

    target: Literal["file", "nbd", "image"] = "file"
    path: PathStr | None = Field(default=None, description="file (required): a new absolute path")
    format: Literal["qcow2", "raw", "vmdk", "vdi", "vhdx", "vpc"] = "qcow2"
    url: Text | None = Field(default=None, description="nbd (required): nbd:// or nbd+unix://")
    image_name: Text | None = Field(default=None, description="image (required): library name")


ADOPT = (
    "false (the default): retention and merges touch only the points this policy made; "
    "true: also hand-made points and other policies' points of its sources"
)


class PolicyCreate(Retention):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    sources: list[Text] = Field(min_length=1, max_length=1000)
    repository: Text | None = None
    schedule: Text | None = Field(default=None, description="cron, e.g. '0 2 * * *'")
    backup_type: Literal["full", "incremental", "auto"] = "auto"
    max_chain_length: PositiveInt | None = None
    immutability_days: Days = 0.0
    verify_schedule: Text | None = None
    copy_to: Text | None = Field(default=None, description="repository for a second copy")
    enabled: StrictBool = True
    compression: Compression | None = Field(default=None, description="else the repository's")
    adopt_existing: StrictBool = Field(default=False, description=ADOPT)
    verify_boot_schedule: Text | None = Field(default=None, description="cron: boot-verify")
    verify_boot: Literal["latest", "all-new"] = "latest"


class PolicyUpdate(Retention):
    """Only the fields given change; a keep_* rule set to null is dropped."""

    sources: list[Text] | None = Field(default=None, min_length=1, max_length=1000)
    repository: Text | None = None
    schedule: Text | None = None
    backup_type: Literal["full", "incremental", "auto"] | None = None
    max_chain_length: PositiveInt | None = None
    immutability_days: Days | None = None
    verify_schedule: Text | None = None
    copy_to: Text | None = None
    enabled: StrictBool | None = None
    compression: Compression | None = None
    adopt_existing: StrictBool | None = Field(default=None, description=ADOPT)
    verify_boot_schedule: Text | None = None
    verify_boot: Literal["latest", "all-new"] | None = None


class PreviewPoint(BaseModel):
    id: str
    vm_name: str
    disk: int
    created_at: datetime
    keep: bool
    rule: str = Field(description="keep-last..keep-yearly, protected, not-owned, no-rules...")
    reason: str
    backup_type: str | None
    chain_id: str | None


class PreviewMerge(BaseModel):
    id: str = Field(description="the point folded away")
    into: str = Field(description="the point that becomes the chain's full")
    vm_name: str
    disk: int
    rule: str
    reason: str


class PolicyPreview(BaseModel):
    """What the policy's next run would keep, remove and merge, and which rule decided."""

    at: datetime
    adopt_existing: bool
    keep: list[PreviewPoint]
    remove: list[PreviewPoint]
    merge: list[PreviewMerge]
    destructive: bool = Field(description="true when anything would be removed or merged")
    note: str


class PolicyHistoryEntry(BaseModel):
    at: datetime
    event: str = Field(description="created | changed")
    preview: PolicyPreview


class PolicyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    sources: list[str]
    repository_id: str
    schedule: str | None
    backup_type: str
    retention: dict[str, Any]
    max_chain_length: int | None
    immutability_days: float
    verify_schedule: str | None
    verify_boot_schedule: str | None = None
    verify_boot: str = "latest"
    last_verify_boot_at: datetime | None = None
    copy_repository_id: str | None
    enabled: bool
    compression: str | None
    adopt_existing: bool
    last_run_at: datetime | None
    last_verify_at: datetime | None
    created_at: datetime


class PolicySaved(PolicyOut):
    preview: PolicyPreview
