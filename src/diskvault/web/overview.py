"""Read-only figures the dashboard shows; each is one small query over the domains' tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from diskvault.backups.models import (
    Backup,
    BackupPolicy,
    BackupRepository,
    BackupSource,
    BackupStatus,
)
from diskvault.boot.models import BootSession, Machine
from diskvault.images.models import Image
from diskvault.jobs.models import Job, JobStatus
from diskvault.organizer.models import ScannedFile
from diskvault.restore.models import MountStatus, RestoreMount
from diskvault.targets.models import Target


def counts(session: Session) -> dict[str, int]:
    tables = {
        "images": Image,
        "targets": Target,
        "machines": Machine,
        "sources": BackupSource,
        "restore points": Backup,
    }
    return {
        name: int(session.scalar(select(func.count()).select_from(model)) or 0)
        for name, model in tables.items()
    }


def active_jobs(session: Session, limit: int = 20) -> list[Job]:
    stmt = (
        select(Job)
        .where(Job.status.in_([JobStatus.running, JobStatus.queued]))
        .order_by(Job.status.desc(), Job.created_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def recent_failures(session: Session, hours: int = 24, limit: int = 20) -> list[Job]:
    since = datetime.now(UTC) - timedelta(hours=hours)
    stmt = (
        select(Job)
        .where(Job.status == JobStatus.failed, Job.finished_at >= since)
        .order_by(Job.finished_at.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def repositories(session: Session) -> list[BackupRepository]:
    return list(session.scalars(select(BackupRepository).order_by(BackupRepository.name)))


def next_policy_runs(session: Session, limit: int = 10) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    out = []
    stmt = select(BackupPolicy).where(BackupPolicy.enabled, BackupPolicy.schedule.is_not(None))
    for policy in session.scalars(stmt):
        try:
            nxt = croniter(policy.schedule, now).get_next(datetime)
        except (ValueError, KeyError):
            continue
        out.append({"name": policy.name, "schedule": policy.schedule, "next": nxt})
    return sorted(out, key=lambda row: row["next"])[:limit]


def source_stats(session: Session) -> dict[str, dict[str, Any]]:
    """Per source name: restore points, bytes and the newest point's time."""
    stmt = select(
        Backup.vm_name, func.count(), func.sum(Backup.file_size), func.max(Backup.created_at)
    ).group_by(Backup.vm_name)
    return {
        name: {"points": int(n), "bytes": int(size or 0), "last": last}
        for name, n, size, last in session.execute(stmt)
    }


def mounted_points(session: Session) -> set[str]:
    stmt = select(RestoreMount.backup_id).where(
        RestoreMount.status.in_([MountStatus.mounting, MountStatus.mounted])
    )
    return set(session.scalars(stmt))


def category_bytes(session: Session, operation_id: str) -> list[tuple[str, int]]:
    """A scan's bytes per category, largest first."""
    stmt = (
        select(ScannedFile.category, func.sum(ScannedFile.size))
        .where(ScannedFile.operation_id == operation_id)
        .group_by(ScannedFile.category)
    )
    rows = [(str(c), int(n or 0)) for c, n in session.execute(stmt)]
    return sorted(rows, key=lambda r: r[1], reverse=True)


def boot_states(session: Session, machine_ids: list[str]) -> dict[str, str]:
    """``up`` (an initiator logged in), ``booting`` (asked for its script), else ``offline``."""
    stmt = select(BootSession.machine_id, BootSession.connected_at).where(
        BootSession.machine_id.in_(machine_ids), BootSession.ended_at.is_(None)
    )
    states = dict.fromkeys(machine_ids, "offline")
    for machine_id, connected in session.execute(stmt):
        states[machine_id] = "up" if connected else "booting"
    return states


def point_sizes(session: Session, vm_name: str, limit: int = 120) -> list[tuple[Any, int, str]]:
    """The newest ``limit`` restore points of a source, oldest first: (time, bytes, type)."""
    stmt = (
        select(Backup.created_at, Backup.file_size, Backup.backup_type)
        .where(Backup.vm_name == vm_name, Backup.status == BackupStatus.completed)
        .order_by(Backup.created_at.desc())
        .limit(limit)
    )
    rows = [(t, int(n or 0), kind.value if kind else "") for t, n, kind in session.execute(stmt)]
    return rows[::-1]


def children_of(session: Session, points: list[Backup]) -> dict[str, Backup]:
    """For each point, the completed point built on it (what deleting it merges into)."""
    ids = {p.id for p in points}
    stmt = select(Backup).where(  # by chain: indexed, and a child shares its parent's chain
        Backup.chain_id.in_({p.chain_id for p in points if p.chain_id}),
        Backup.status == BackupStatus.completed,
    )
    return {r.parent_backup_id: r for r in session.scalars(stmt) if r.parent_backup_id in ids}
