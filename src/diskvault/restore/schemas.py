from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from diskvault.db.pagination import Page
from diskvault.restore.models import MountStatus
from diskvault.schemas_base import RequestModel


class MountRequest(RequestModel):
    backup_id: str = Field(min_length=1, max_length=64, description="any completed restore point")


class PartitionOut(BaseModel):
    index: int = Field(description="1-based partition number; 0 for a partitionless disk")
    fstype: str | None
    size: int
    label: str | None
    uuid: str | None = None
    mounted: bool
    reason: str | None = Field(description="why it is not mounted (encrypted, unsupported...)")
    mount_path: str | None = Field(
        default=None,
        description="where the filesystem is mounted on the server (read-only, nosuid, "
        "nodev, noexec); the spec's mount_path",
    )


class MountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    mount_id: str = Field(validation_alias="id")
    backup_id: str
    vm_name: str | None
    disk_index: int
    status: MountStatus
    node: str
    owner: str | None
    partitions: list[PartitionOut]
    created_at: datetime
    last_access: datetime
    expires_at: datetime
    unmounted_at: datetime | None
    reason: str | None


class FileEntry(BaseModel):
    name: str
    type: str = Field(description="file, dir, symlink, fifo, socket, char-device, block-device")
    size: int
    mtime: datetime
    mode: str = Field(description="permission bits in octal, e.g. 0644")
    target: str | None = Field(description="symlinks: the target as stored in the guest")


class FileListing(Page[FileEntry]):
    mount_id: str
    partition: int
    path: str
