"""Policies: a cron schedule, retention rules, a maximum chain length, an
immutability window, an optional verify schedule and copy target. The scheduler
checks them every BACKUP_POLICY_INTERVAL_S and queues what is due."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from croniter import croniter
from sqlalchemy import select
from sqlalchemy.orm import Session

from diskvault.api.pagination import PageParams, paginate
from diskvault.backups import chain as chains
from diskvault.backups import service
from diskvault.backups.errors import InvalidSchedule, PolicyExists, PolicyNotFound
from diskvault.backups.models import (
    Backup,
    BackupChain,
    BackupPolicy,
    BackupStatus,
    find_named,
    insert_named,
)
from diskvault.backups.retention import RULES
from diskvault.config import Settings
from diskvault.db.engine import session_scope

log = structlog.get_logger("diskvault.backups")


def check_cron(schedule: str | None) -> str | None:
    if schedule is None:
        return None
    if not croniter.is_valid(schedule):
        raise InvalidSchedule(schedule=schedule, detail="not a valid cron expression")
    return schedule


def due(schedule: str | None, since: datetime, now: datetime) -> bool:
    if not schedule:
        return False
    following: datetime = croniter(schedule, since).get_next(datetime)
    return following <= now


def create(settings: Settings, session: Session, body: dict[str, Any]) -> BackupPolicy:
    for name in body["sources"]:
        service.get_source(session, name)
    repo = service.local_repository(settings, session, body.get("repository"))
    copy_to = body.get("copy_to")
    row = BackupPolicy(
        name=body["name"],
        sources=list(body["sources"]),
        repository_id=repo.id,
        schedule=check_cron(body.get("schedule")),
        backup_type=body.get("backup_type", "auto"),
        retention={k: body.get(k) for k in RULES if body.get(k) is not None},
        max_chain_length=body.get("max_chain_length"),
        immutability_days=float(body.get("immutability_days") or 0.0),
        verify_schedule=check_cron(body.get("verify_schedule")),
        verify_boot_schedule=check_cron(body.get("verify_boot_schedule")),
        verify_boot=body.get("verify_boot") or "latest",
        copy_repository_id=service.get_repository(settings, session, copy_to).id
        if copy_to
        else None,
        enabled=body.get("enabled", True),
    )
    return insert_named(session, row, PolicyExists)


def get(session: Session, ref: str) -> BackupPolicy:
    return find_named(session, BackupPolicy, ref, PolicyNotFound)


def list_policies(session: Session, page: PageParams) -> tuple[list[Any], int]:
    return paginate(session, select(BackupPolicy).order_by(BackupPolicy.name), page)


def delete(session: Session, ref: str) -> BackupPolicy:
    row = get(session, ref)
    session.delete(row)
    session.commit()
    return row


def for_source(session: Session, vm_name: str) -> BackupPolicy | None:
    for policy in session.scalars(select(BackupPolicy).order_by(BackupPolicy.created_at)):
        if vm_name in policy.sources:
            return policy
    return None


def run_now(
    settings: Settings, session: Session, policy: BackupPolicy, owner: str | None
) -> list[str]:
    """Queue one backup-run per source; each applies the policy's retention after."""
    jobs = []
    for name in policy.sources:
        job = service.start(
            settings,
            session,
            vm_name=name,
            backup_type=policy.backup_type,
            repository=policy.repository_id,
            owner=owner,
            policy_id=policy.id,
        )
        jobs.append(job.id)
    policy.last_run_at = datetime.now(UTC)
    session.commit()
    return jobs


def verify_heads(settings: Settings, session: Session, policy: BackupPolicy) -> list[str]:
    """Queue a verify of each active chain's head (which reads the whole chain)."""
    jobs = []
    for name in policy.sources:
        for chain in session.scalars(
            select(BackupChain).where(
                BackupChain.vm_name == name, BackupChain.repository_id == policy.repository_id
            )
        ):
            head = session.get(Backup, chain.latest_backup_id) if chain.latest_backup_id else None
            if head is not None and head.status == BackupStatus.completed:
                job = service.submit(settings, "backup-verify", {"backup_id": head.id}, "scheduler")
                jobs.append(job.id)
    policy.last_verify_at = datetime.now(UTC)
    session.commit()
    return jobs


def tick(settings: Settings) -> None:
    """Queue due policy runs and verifies; lift expired immutability flags."""
    now = datetime.now(UTC)
    with session_scope(settings.DATABASE_URL) as s:
        for policy in s.scalars(select(BackupPolicy).where(BackupPolicy.enabled.is_(True))):
            try:
                if due(policy.schedule, policy.last_run_at or policy.created_at, now):
                    run_now(settings, s, policy, "scheduler")
                if due(policy.verify_schedule, policy.last_verify_at or policy.created_at, now):
                    verify_heads(settings, s, policy)
            except Exception:
                s.rollback()
                log.exception("policy run failed to start", policy=policy.name)
        for point in s.scalars(
            select(Backup).where(Backup.immutable_flag.is_(True), Backup.immutable_until <= now)
        ):
            chains.release_flag(s, point)
        s.commit()
