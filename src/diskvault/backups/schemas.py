from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from diskvault.backups.models import BackupStatus, BackupType, RepositoryKind, SourceKind

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"  # used in repository paths


class SourceCreate(BaseModel):
    """Kind-specific fields: qcow2/raw ``disks`` (paths) or ``path``; nbd ``url`` +
    ``bitmap`` or ``disks`` [{url, bitmap}]; qmp ``socket`` + ``disks`` [{node}];
    libvirt ``domain``, ``uri``, ``disks`` (targets such as vda)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=NAME)
    kind: SourceKind
    boot_check: str | None = Field(
        default=None, max_length=500, description="regex the console prints once booted"
    )
    boot_timeout_s: float | None = Field(default=None, gt=0, le=3600)


class SourceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    kind: SourceKind
    config: dict[str, Any]
    created_at: datetime


class RepositoryCreate(BaseModel):
    name: str = Field(pattern=NAME)
    kind: RepositoryKind = RepositoryKind.local
    path: str | None = Field(default=None, description="local: a mounted directory")
    url: str | None = Field(default=None, description="s3: s3://bucket/prefix?endpoint_url=...")
    immutability_days: float = Field(default=0.0, ge=0)
    attach: bool = Field(default=False, description="rebuild chains from existing sidecars")


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
    created_at: datetime


class RescanOut(BaseModel):
    repository: str
    added: int
    known: int
    skipped: list[str]
    chains: int


class BackupStart(BaseModel):
    vm_name: str
    backup_type: Literal["full", "incremental", "auto"] = "auto"
    repository: str | None = Field(default=None, description="name or id; default: 'default'")
    speed: int | None = Field(default=None, gt=0, description="throttle, bytes per second")


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


class Retention(BaseModel):
    keep_last: int | None = Field(default=None, ge=0)
    keep_hourly: int | None = Field(default=None, ge=0)
    keep_daily: int | None = Field(default=None, ge=0)
    keep_weekly: int | None = Field(default=None, ge=0)
    keep_monthly: int | None = Field(default=None, ge=0)
    keep_yearly: int | None = Field(default=None, ge=0)


class PruneRequest(Retention):
    vm_name: str
    repository: str | None = None
    policy: str | None = Field(default=None, description="use this policy's rules")
    max_chain_length: int | None = Field(default=None, ge=1)
    dry_run: bool = True


class CopyRequest(BaseModel):
    target: str = Field(description="repository name or id to copy to")
    repository: str | None = Field(default=None, description="copy from (default: 'default')")
    vm_name: str | None = None


class RestoreRequest(BaseModel):
    target: Literal["file", "nbd", "image"] = "file"
    path: str | None = Field(default=None, description="file: a new absolute path")
    format: Literal["qcow2", "raw", "vmdk", "vdi", "vhdx", "vpc"] = "qcow2"
    url: str | None = Field(default=None, description="nbd: nbd:// or nbd+unix:// URL")
    image_name: str | None = Field(default=None, description="image: library name")


class PolicyCreate(Retention):
    name: str = Field(pattern=NAME)
    sources: list[str] = Field(min_length=1)
    repository: str | None = None
    schedule: str | None = Field(default=None, description="cron, e.g. '0 2 * * *'")
    backup_type: Literal["full", "incremental", "auto"] = "auto"
    max_chain_length: int | None = Field(default=None, ge=1)
    immutability_days: float = Field(default=0.0, ge=0)
    verify_schedule: str | None = None
    verify_boot_schedule: str | None = Field(default=None, description="cron: boot-verify")
    verify_boot: Literal["latest", "all-new"] = "latest"
    copy_to: str | None = Field(default=None, description="repository for a second copy")
    enabled: bool = True


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
    last_run_at: datetime | None
    last_verify_at: datetime | None
    created_at: datetime
