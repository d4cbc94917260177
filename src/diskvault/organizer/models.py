"""Organizer tables: operations, what a scan found, plans, and the apply journal.

An operation's id is the id of the job that runs it, so job progress (and
``WS /ws/operations/{id}``) is the operation's progress. The journal
(:class:`FileRecord`) is written before and after every file action, so a
crash leaves enough behind to roll back.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Enum, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from diskvault.db.base import Base, TimestampMixin, utcnow


class OperationType(enum.StrEnum):
    scan = "scan"
    dupes = "dupes"
    plan = "plan"
    apply = "apply"
    dedupe = "dedupe"
    import_ = "import"
    rollback = "rollback"

    @property
    def changes_files(self) -> bool:
        return self in (OperationType.apply, OperationType.dedupe, OperationType.import_)


class RecordState(enum.StrEnum):
    pending = "pending"  # written before the action: it may or may not have happened
    done = "done"
    skipped = "skipped"  # nothing was done (conflict policy, changed source, ...)
    failed = "failed"  # the action raised; nothing was done
    rolled_back = "rolled_back"
    rollback_failed = "rollback_failed"  # a rollback tried and reported why it could not


class Operation(TimestampMixin, Base):
    __tablename__ = "organizer_operations"
    __table_args__ = (Index("ix_organizer_operations_type_created", "type", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the job's id
    type: Mapped[OperationType] = mapped_column(Enum(OperationType, native_enum=False, length=16))
    location: Mapped[str] = mapped_column(String(2000))
    destination: Mapped[str | None] = mapped_column(String(2000), default=None)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # apply: the plan it executed; rollback: the operation it undid
    source_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    rolled_back_by: Mapped[str | None] = mapped_column(String(32), default=None)
    owner: Mapped[str | None] = mapped_column(String(64), default=None)


class ScannedFile(Base):
    __tablename__ = "organizer_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operation_id: Mapped[str] = mapped_column(String(32), index=True)
    key: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[float] = mapped_column(Float)
    category: Mapped[str] = mapped_column(String(32))
    format: Mapped[str | None] = mapped_column(String(32), default=None)
    virtual_size: Mapped[int | None] = mapped_column(BigInteger, default=None)
    note: Mapped[str | None] = mapped_column(String(500), default=None)


class PlanAction(Base):
    __tablename__ = "organizer_plan_actions"
    __table_args__ = (Index("ix_organizer_plan_actions_op_seq", "operation_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operation_id: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(Integer)
    op: Mapped[str] = mapped_column(String(16))
    src: Mapped[str] = mapped_column(Text)
    dst: Mapped[str | None] = mapped_column(Text, default=None)
    dst_root: Mapped[str | None] = mapped_column(String(2000), default=None)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[float] = mapped_column(Float)
    on_conflict: Mapped[str] = mapped_column(String(8), default="rename")
    restore_from: Mapped[str | None] = mapped_column(Text, default=None)
    rule: Mapped[str | None] = mapped_column(String(200), default=None)
    note: Mapped[str | None] = mapped_column(String(500), default=None)


class FileRecord(Base):
    __tablename__ = "organizer_file_records"
    __table_args__ = (Index("ix_organizer_file_records_op_seq", "operation_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operation_id: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(Integer)
    op: Mapped[str] = mapped_column(String(16))
    src_root: Mapped[str] = mapped_column(String(2000))
    src: Mapped[str] = mapped_column(Text)
    dst_root: Mapped[str | None] = mapped_column(String(2000), default=None)
    dst: Mapped[str | None] = mapped_column(Text, default=None)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    restore_from: Mapped[str | None] = mapped_column(Text, default=None)
    state: Mapped[RecordState] = mapped_column(
        Enum(RecordState, native_enum=False, length=16), default=RecordState.pending
    )
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
