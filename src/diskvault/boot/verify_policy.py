"""Scheduled boot verification: a policy's ``verify_boot_schedule`` (cron) queues
``backup-verify-boot`` jobs for the heads of its chains (``verify_boot: latest``)
or for every point made since the last run (``all-new``). A failing check fails
its job, the same alert path as a failed backup (log, metric, job error)."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from diskvault.backups import policies
from diskvault.backups.models import Backup, BackupChain, BackupPolicy, BackupStatus
from diskvault.boot.verify import VERIFY_BOOT_JOB
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.jobs import service as jobs

log = structlog.get_logger("diskvault.boot")


def points_to_check(session: Session, policy: BackupPolicy) -> list[Backup]:
    done = Backup.status == BackupStatus.completed
    mine = (Backup.repository_id == policy.repository_id) & Backup.vm_name.in_(policy.sources)
    if policy.verify_boot == "all-new":
        since = policy.last_verify_boot_at or policy.created_at
        return list(
            session.scalars(
                select(Backup)
                .where(done, mine, Backup.completed_at > since)
                .order_by(Backup.created_at)
            )
        )
    heads = select(BackupChain.latest_backup_id).where(
        BackupChain.repository_id == policy.repository_id,
        BackupChain.vm_name.in_(policy.sources),
    )
    return list(session.scalars(select(Backup).where(done, Backup.id.in_(heads))))


def tick(settings: Settings, now: datetime | None = None) -> list[str]:
    """Queue the due boot verifications; returns the job ids."""
    now = now or datetime.now(UTC)
    queued: list[str] = []
    with session_scope(settings.DATABASE_URL) as s:
        for policy in s.scalars(
            select(BackupPolicy).where(
                BackupPolicy.enabled.is_(True), BackupPolicy.verify_boot_schedule.is_not(None)
            )
        ):
            since = policy.last_verify_boot_at or policy.created_at
            if not policies.due(policy.verify_boot_schedule, since, now):
                continue
            for point in points_to_check(s, policy):
                job = jobs.submit(
                    settings,
                    VERIFY_BOOT_JOB,
                    {"backup_id": point.id},
                    node=settings.NODE,
                    owner="scheduler",
                )
                queued.append(job.id)
            policy.last_verify_boot_at = now
            s.commit()
            log.info("boot verifications queued", policy=policy.name, jobs=len(queued))
    return queued
