from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from diskvault.db.base import Base, IdMixin, TimestampMixin, utcnow


class MountStatus(enum.StrEnum):
    mounting = "mounting"
    mounted = "mounted"
    unmounting = "unmounting"
    unmounted = "unmounted"
    failed = "failed"


ACTIVE = (MountStatus.mounting, MountStatus.mounted, MountStatus.unmounting)


class RestoreMount(IdMixin, TimestampMixin, Base):
    """One read-only mount of a restore point on one node.

    ``partitions`` holds, per partition, what the API shows (index, fstype, size,
    label, uuid, mounted, reason) plus ``mountpoint`` (a directory in ``workdir``).
    """

    __tablename__ = "restore_mounts"

    # No foreign key: the history of a mount outlives the restore point it showed.
    backup_id: Mapped[str] = mapped_column(String(32), index=True)
    vm_name: Mapped[str | None] = mapped_column(String(200), default=None)
    disk_index: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[MountStatus] = mapped_column(
        Enum(MountStatus, native_enum=False, length=16), default=MountStatus.mounting, index=True
    )
    node: Mapped[str] = mapped_column(String(255), index=True)
    owner: Mapped[str | None] = mapped_column(String(64), default=None)
    workdir: Mapped[str] = mapped_column(String(1000))
    qsd_pid: Mapped[int | None] = mapped_column(Integer, default=None)
    loop_devices: Mapped[list[str]] = mapped_column(JSON, default=list)
    partitions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    last_access: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(default=utcnow)
    unmounted_at: Mapped[datetime | None] = mapped_column(default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)  # why it ended or failed
