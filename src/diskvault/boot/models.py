"""Machines, their boot sessions, and the versions of golden images they boot."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, Enum, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from diskvault.db.base import Base, IdMixin, TimestampMixin, utcnow


class MachineMode(enum.StrEnum):
    discard = "discard"  # the writeback layer starts empty at every boot
    keep = "keep"  # the writeback layer persists across boots


class MachineStatus(enum.StrEnum):
    PENDING = "PENDING"  # no writeback layer yet (its image was not bootable)
    READY = "READY"
    APPLYING = "APPLYING"  # its writeback is being merged into a new image version
    ERROR = "ERROR"  # see ``error``


class Machine(IdMixin, TimestampMixin, Base):
    __tablename__ = "machines"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    mac: Mapped[str] = mapped_column(String(17), unique=True)  # lowercase, colon-separated
    # No foreign key: images live in another migration branch.
    image_id: Mapped[str] = mapped_column(String(32), index=True)
    mode: Mapped[MachineMode] = mapped_column(Enum(MachineMode, native_enum=False, length=16))
    initiator_iqn: Mapped[str] = mapped_column(String(223))
    status: Mapped[MachineStatus] = mapped_column(
        Enum(MachineStatus, native_enum=False, length=16), default=MachineStatus.PENDING
    )
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # Machine-readable kind of ``error``: storage_full, layer, apply.
    error_code: Mapped[str | None] = mapped_column(String(32), default=None)
    target_id: Mapped[str | None] = mapped_column(String(32), default=None)
    # The image version the writeback layer is stacked on (None: no layer yet).
    layer_version: Mapped[int | None] = mapped_column(Integer, default=None)
    # Set once the layer's data went into a new version: the next boot starts it afresh.
    reset_pending: Mapped[bool] = mapped_column(default=False)
    node: Mapped[str] = mapped_column(String(128), index=True)
    owner: Mapped[str | None] = mapped_column(String(64), default=None)
    last_boot_at: Mapped[datetime | None] = mapped_column(default=None)


class BootSession(IdMixin, Base):
    """One boot: opened by the boot script request, ended once its iSCSI login is gone."""

    __tablename__ = "boot_sessions"

    machine_id: Mapped[str] = mapped_column(
        ForeignKey("machines.id", ondelete="CASCADE"), index=True
    )
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    connected_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    end_reason: Mapped[str | None] = mapped_column(String(200), default=None)
    client_address: Mapped[str | None] = mapped_column(String(64), default=None)
    initiator: Mapped[str] = mapped_column(String(223))
    image_id: Mapped[str] = mapped_column(String(32))
    version: Mapped[int | None] = mapped_column(Integer, default=None)
    mode: Mapped[MachineMode] = mapped_column(Enum(MachineMode, native_enum=False, length=16))


class ImageVersion(IdMixin, Base):
    """A snapshot of a golden image; exactly one per image is current.

    Version 1 is the image's own file (``storage_key`` None), so the image
    library keeps owning it; later versions are files written by "apply".
    """

    __tablename__ = "image_versions"
    __table_args__ = (UniqueConstraint("image_id", "version"),)

    image_id: Mapped[str] = mapped_column(String(32), index=True)
    version: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str | None] = mapped_column(String(500), default=None)
    comment: Mapped[str | None] = mapped_column(Text, default=None)
    parent_version: Mapped[int | None] = mapped_column(Integer, default=None)
    is_current: Mapped[bool] = mapped_column(default=False)
    virtual_size: Mapped[int | None] = mapped_column(BigInteger, default=None)
    source_machine_id: Mapped[str | None] = mapped_column(String(32), default=None)
    job_id: Mapped[str | None] = mapped_column(String(32), default=None)
    owner: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Recovery(IdMixin, Base):
    """A restore point booted in place: an overlay on its chain, served over iSCSI.

    ``machine_id`` is the machine it was attached to; without one it answers
    for ``mac`` alone (a temporary machine) and goes away with the recovery.
    """

    __tablename__ = "recoveries"

    backup_id: Mapped[str] = mapped_column(String(32), index=True)
    machine_id: Mapped[str | None] = mapped_column(String(32), default=None)
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    initiator_iqn: Mapped[str] = mapped_column(String(223))
    mode: Mapped[MachineMode] = mapped_column(Enum(MachineMode, native_enum=False, length=16))
    target_id: Mapped[str | None] = mapped_column(String(32), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    node: Mapped[str] = mapped_column(String(128), index=True)
    owner: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_boot_at: Mapped[datetime | None] = mapped_column(default=None)
