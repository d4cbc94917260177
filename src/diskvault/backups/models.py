"""Tables: the seed's backup_jobs (one row per restore point of one disk),
backup_chains and backup_repositories, plus sources, policies and disk locks."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from diskvault.db.base import Base, IdMixin, TimestampMixin, utcnow
from diskvault.errors import DiskvaultError


class RepositoryKind(enum.StrEnum):
    local = "local"
    s3 = "s3"


class SourceKind(enum.StrEnum):
    qcow2 = "qcow2"
    qmp = "qmp"
    libvirt = "libvirt"
    nbd = "nbd"
    raw = "raw"


class BackupType(enum.StrEnum):
    full = "full"
    incremental = "incremental"


class BackupStatus(enum.StrEnum):
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


def _enum(cls: type[enum.Enum], length: int = 16) -> Enum:
    return Enum(cls, native_enum=False, length=length)


class BackupRepository(IdMixin, TimestampMixin, Base):
    __tablename__ = "backup_repositories"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[RepositoryKind] = mapped_column(_enum(RepositoryKind))
    path: Mapped[str | None] = mapped_column(String(1024), default=None)  # local
    url: Mapped[str | None] = mapped_column(String(1024), default=None)  # s3, redacted
    enabled: Mapped[bool] = mapped_column(default=True)
    immutability_days: Mapped[float] = mapped_column(Float, default=0.0)
    # None: not probed yet; False: the filesystem refuses chattr +i (tmpfs, NFS...).
    immutable_flag: Mapped[bool | None] = mapped_column(default=None)
    total_size_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    available_size_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    encryption: Mapped[str] = mapped_column(String(16), default="none")  # none | luks
    compression: Mapped[str] = mapped_column(String(16), default="none")  # none | zstd
    # Where the key is read from, and its fingerprint; never the key itself.
    key_file: Mapped[str | None] = mapped_column(String(1024), default=None)
    key_fingerprint: Mapped[str | None] = mapped_column(String(64), default=None)
    # Keys before a rekey, still needed by older points: [{"fingerprint", "key_file"}].
    keys: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class BackupSource(IdMixin, TimestampMixin, Base):
    __tablename__ = "backup_sources"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[SourceKind] = mapped_column(_enum(SourceKind))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class BackupChain(IdMixin, TimestampMixin, Base):
    """A full backup and the incrementals on top of it, for one disk in one repository."""

    __tablename__ = "backup_chains"
    __table_args__ = (Index("ix_backup_chains_disk", "repository_id", "vm_name", "disk_index"),)

    repository_id: Mapped[str] = mapped_column(
        ForeignKey("backup_repositories.id", ondelete="CASCADE")
    )
    vm_name: Mapped[str] = mapped_column(String(100))
    disk_index: Mapped[int] = mapped_column(Integer, default=0)
    full_backup_id: Mapped[str | None] = mapped_column(String(32), default=None)
    latest_backup_id: Mapped[str | None] = mapped_column(String(32), default=None)
    total_backups: Mapped[int] = mapped_column(Integer, default=0)
    total_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # Set when verify finds damage: the next backup of this disk starts a new chain.
    broken_reason: Mapped[str | None] = mapped_column(Text, default=None)


class Backup(IdMixin, Base):
    """One restore point of one disk (the seed calls the table backup_jobs)."""

    __tablename__ = "backup_jobs"
    __table_args__ = (Index("ix_backup_jobs_vm", "vm_name", "disk_index", "status"),)

    vm_name: Mapped[str] = mapped_column(String(100))
    disk_index: Mapped[int] = mapped_column(Integer, default=0)
    repository_id: Mapped[str] = mapped_column(
        ForeignKey("backup_repositories.id", ondelete="CASCADE"), index=True
    )
    chain_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    requested_type: Mapped[str] = mapped_column(String(16), default="auto")
    backup_type: Mapped[BackupType | None] = mapped_column(_enum(BackupType), default=None)
    status: Mapped[BackupStatus] = mapped_column(_enum(BackupStatus), default=BackupStatus.pending)
    path: Mapped[str | None] = mapped_column(String(1024), default=None)  # relative to repo
    parent_backup_id: Mapped[str | None] = mapped_column(String(32), default=None)
    job_id: Mapped[str | None] = mapped_column(String(32), default=None)
    policy_id: Mapped[str | None] = mapped_column(String(32), default=None)
    change_id: Mapped[str | None] = mapped_column(String(255), default=None)
    bitmap: Mapped[str | None] = mapped_column(String(255), default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)  # why it is a full
    error: Mapped[str | None] = mapped_column(Text, default=None)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)  # virtual size
    bytes_transferred: Mapped[int] = mapped_column(BigInteger, default=0)
    file_size: Mapped[int] = mapped_column(BigInteger, default=0)
    immutable_until: Mapped[datetime | None] = mapped_column(default=None)
    immutable_flag: Mapped[bool] = mapped_column(default=False)  # chattr +i applied
    key_fingerprint: Mapped[str | None] = mapped_column(String(64), default=None)  # LUKS key
    verify_status: Mapped[str | None] = mapped_column(String(16), default=None)
    verified_at: Mapped[datetime | None] = mapped_column(default=None)
    verify_detail: Mapped[str | None] = mapped_column(Text, default=None)
    # Boot verification (diskvault.boot.verify): passed / failed, why, and its screenshot.
    boot_status: Mapped[str | None] = mapped_column(String(16), default=None)
    boot_checked_at: Mapped[datetime | None] = mapped_column(default=None)
    boot_detail: Mapped[str | None] = mapped_column(Text, default=None)
    boot_method: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)


class BackupPolicy(IdMixin, TimestampMixin, Base):
    __tablename__ = "backup_policies"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    sources: Mapped[list[str]] = mapped_column(JSON, default=list)
    repository_id: Mapped[str] = mapped_column(
        ForeignKey("backup_repositories.id", ondelete="CASCADE")
    )
    schedule: Mapped[str | None] = mapped_column(String(100), default=None)
    backup_type: Mapped[str] = mapped_column(String(16), default="auto")
    retention: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # keep_* counts
    max_chain_length: Mapped[int | None] = mapped_column(Integer, default=None)
    immutability_days: Mapped[float] = mapped_column(Float, default=0.0)
    verify_schedule: Mapped[str | None] = mapped_column(String(100), default=None)
    # Boot verification (diskvault.boot.verify_policy): when, and which points.
    verify_boot_schedule: Mapped[str | None] = mapped_column(String(100), default=None)
    verify_boot: Mapped[str] = mapped_column(String(16), default="latest")  # or all-new
    last_verify_boot_at: Mapped[datetime | None] = mapped_column(default=None)
    copy_repository_id: Mapped[str | None] = mapped_column(String(32), default=None)
    compression: Mapped[str | None] = mapped_column(String(16), default=None)  # else the repo's
    enabled: Mapped[bool] = mapped_column(default=True)
    # False: retention and merges touch only the points this policy made.
    adopt_existing: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Newest last: {at, event, preview}; the preview shown when it was created or changed.
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    last_run_at: Mapped[datetime | None] = mapped_column(default=None)
    last_verify_at: Mapped[datetime | None] = mapped_column(default=None)


class DiskLock(Base):
    """One row per locked disk; the primary key makes acquiring atomic across processes."""

    __tablename__ = "backup_locks"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)


_Named = TypeVar("_Named", BackupRepository, BackupSource, BackupPolicy)


def by_name_or_id(session: Session, model: type[_Named], ref: str) -> _Named | None:
    """Sources, repositories and policies are addressed by their name or their id."""
    return session.scalar(select(model).where((model.name == ref) | (model.id == ref)))


def find_named(
    session: Session, model: type[_Named], ref: str, missing: type[DiskvaultError]
) -> _Named:
    """:func:`by_name_or_id`, raising ``missing(id=ref)`` when there is no such row."""
    row = by_name_or_id(session, model, ref)
    if row is None:
        raise missing(id=ref)
    return row


def insert_named(session: Session, row: _Named, exists: type[DiskvaultError]) -> _Named:
    """Add and commit ``row``; a name already taken raises ``exists(name=...)``."""
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise exists(name=row.name) from None
    return row
