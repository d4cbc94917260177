"""The backup engine's database rows: a restore point from its first record to completed
or failed, and the change-tracking markers still needed afterwards.

Each function opens its own short transaction, so a run never holds the database
while it copies a disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from diskvault.backups import chain as chains
from diskvault.backups import repository as repo_files
from diskvault.backups.models import Backup, BackupChain, BackupStatus, BackupType
from diskvault.backups.sources.base import Copied, Plan, Previous
from diskvault.backups.sources.base import tracking_name as marker
from diskvault.config import Settings
from diskvault.db.engine import session_scope


@dataclass(frozen=True)
class Retention:
    days: float  # immutable for this long after completion (0: not at all)
    flag_ok: bool  # the repository may also set the filesystem's immutable flag


def new_row(
    settings: Settings,
    *,
    vm_name: str,
    disk: int,
    repository_id: str,
    requested: str,
    job_id: str | None,
    policy_id: str | None,
) -> str:
    with session_scope(settings.DATABASE_URL) as s:
        point = Backup(
            vm_name=vm_name,
            disk_index=disk,
            repository_id=repository_id,
            requested_type=requested,
            job_id=job_id,
            policy_id=policy_id,
        )
        s.add(point)
        s.flush()
        return point.id


def mark_running(session: Session, backup_id: str) -> None:
    point = session.get(Backup, backup_id)
    assert point is not None
    point.status, point.started_at = BackupStatus.running, chains.now()


def mark_failed(settings: Settings, backup_id: str, status: BackupStatus, error: str) -> None:
    with session_scope(settings.DATABASE_URL) as s:
        point = s.get(Backup, backup_id)
        if point is not None and point.status in (BackupStatus.pending, BackupStatus.running):
            point.status = status
            point.error = error[:4000]
            point.completed_at = chains.now()


def start_row(
    settings: Settings,
    backup_id: str,
    plan: Plan,
    reason: str | None,
    relative: Path,
    previous: Previous | None,
    fingerprint: str | None,
) -> None:
    with session_scope(settings.DATABASE_URL) as s:
        point = s.get(Backup, backup_id)
        assert point is not None
        point.key_fingerprint = fingerprint
        point.backup_type = BackupType(plan.backup_type)
        point.reason = reason
        point.path = relative.as_posix()
        point.total_bytes = plan.virtual_size
        if plan.backup_type == "incremental":
            assert previous is not None
            head = s.get(Backup, previous.backup_id)
            assert head is not None
            point.parent_backup_id, point.chain_id = head.id, head.chain_id
        else:
            chain = BackupChain(
                repository_id=point.repository_id,
                vm_name=point.vm_name,
                disk_index=point.disk_index,
            )
            s.add(chain)
            s.flush()
            point.chain_id = chain.id


def complete(
    settings: Settings,
    backup_id: str,
    final: Path,
    copied: Copied,
    sums: dict[str, Any],
    sidecar: dict[str, Any],
    retention: Retention,
) -> None:
    """Record a point whose files are in place: its sidecar, then the row and its chain."""
    with session_scope(settings.DATABASE_URL) as s:
        point = s.get(Backup, backup_id)
        assert point is not None
        point.bytes_transferred = copied.bytes_transferred
        point.change_id = copied.change_id
        point.bitmap = copied.bitmap
        point.completed_at = chains.now()
        if retention.days > 0:
            point.immutable_until = point.completed_at + timedelta(days=retention.days)
        chains.rewrite_sidecar(point, final, sums=sums, **sidecar)
        point.status = BackupStatus.completed
        s.flush()
        chain = s.get(BackupChain, point.chain_id)
        assert chain is not None
        chains.refresh(s, chain)
        if point.immutable_until is not None and retention.flag_ok:
            point.immutable_flag = repo_files.set_immutable(repo_files.point_files(final), on=True)


def keep_markers(s: Session, vm: str, disk: int) -> list[str]:
    """Change-tracking markers still needed: the head of each repository's active chain."""
    latest: dict[str, str | None] = {}
    for chain in s.scalars(
        select(BackupChain)
        .where(BackupChain.vm_name == vm, BackupChain.disk_index == disk)
        .order_by(BackupChain.created_at)
    ):
        latest[chain.repository_id] = chain.latest_backup_id
    return [marker(h) for h in latest.values() if h]
