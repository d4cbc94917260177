"""The desired state of every iSCSI target; the reconciler makes the backend match it."""

from __future__ import annotations

import enum

from sqlalchemy import JSON, Enum, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from diskvault.db.base import Base, IdMixin, TimestampMixin


class TargetStatus(enum.StrEnum):
    PENDING = "PENDING"  # being created; the reconciler leaves it alone
    ACTIVE = "ACTIVE"  # present in the backend as described here
    INACTIVE = "INACTIVE"  # wanted, but the backend is down or lost it
    ERROR = "ERROR"  # the last attempt to (re)create it failed; see ``error``


class Target(IdMixin, TimestampMixin, Base):
    __tablename__ = "targets"

    name: Mapped[str] = mapped_column(String(100))
    iqn: Mapped[str] = mapped_column(String(223), unique=True)
    status: Mapped[TargetStatus] = mapped_column(
        Enum(TargetStatus, native_enum=False, length=16), default=TargetStatus.PENDING
    )
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # No foreign keys: images and machines live in other migration branches.
    image_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    machine_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    path: Mapped[str] = mapped_column(String(4096))
    lun: Mapped[int] = mapped_column(Integer, default=1)
    portal: Mapped[str] = mapped_column(String(64))
    initiators: Mapped[list[str]] = mapped_column(JSON, default=list)
    chap_user: Mapped[str | None] = mapped_column(String(255), default=None)
    chap_secret: Mapped[str | None] = mapped_column(Text, default=None)  # Fernet token
    mutual_chap_user: Mapped[str | None] = mapped_column(String(255), default=None)
    mutual_chap_secret: Mapped[str | None] = mapped_column(Text, default=None)  # Fernet token
    node: Mapped[str] = mapped_column(String(128), index=True)
    owner: Mapped[str | None] = mapped_column(String(64), default=None)
