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

from diskvault.backups import chain as chains
from diskvault.backups import keys, repositories, service
from diskvault.backups import preview as previews
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
from diskvault.db.pagination import PageParams, paginate

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


def build(
    session: Session, settings: Settings, body: dict[str, Any], row: BackupPolicy | None = None
) -> BackupPolicy:
    """A new policy from ``body``, or ``row`` with the fields ``body`` gives changed;
    neither is added to the session."""
    row = row if row is not None else BackupPolicy(name=body["name"], history=[])
    if "sources" in body or row.sources is None:
        for name in body["sources"]:
            service.get_source(session, name)
        row.sources = list(body["sources"])
    if "repository" in body or row.repository_id is None:
        row.repository_id = repositories.local_repository(
            session, settings, body.get("repository")
        ).id
    if "compression" in body:
        row.compression = body["compression"]
    target = repositories.get_repository(session, settings, row.repository_id)
    keys.check_combination(target.encryption, row.compression)
    rules = dict(row.retention or {}) | {k: body[k] for k in RULES if k in body}
    row.retention = {k: v for k, v in rules.items() if v is not None}
    for key in ("schedule", "verify_schedule", "verify_boot_schedule"):
        if key in body or getattr(row, key, None) is None:
            setattr(row, key, check_cron(body.get(key)))
    simple = {
        "backup_type": "auto",
        "max_chain_length": None,
        "enabled": True,
        "adopt_existing": False,
        "verify_boot": "latest",
    }
    for key, default in simple.items():
        if key in body or getattr(row, key) is None:
            setattr(row, key, body.get(key, default))
    if "immutability_days" in body or row.immutability_days is None:
        row.immutability_days = float(body.get("immutability_days") or 0.0)
    if "copy_to" in body or row.id is None:
        copy_to = body.get("copy_to")
        repo = repositories.get_repository(session, settings, copy_to) if copy_to else None
        row.copy_repository_id = repo.id if repo else None
    return row


def create(
    session: Session, settings: Settings, body: dict[str, Any]
) -> tuple[BackupPolicy, dict[str, Any]]:
    """Add a policy; returns it with the preview of its next run (kept in its history)."""
    row = insert_named(session, build(session, settings, body), PolicyExists)
    shown = previews.preview(session, settings, row)
    previews.record(row, "created", shown)
    session.commit()
    return row, shown


def update(
    session: Session, settings: Settings, ref: str, body: dict[str, Any]
) -> tuple[BackupPolicy, dict[str, Any]]:
    """Change the fields ``body`` gives; returns the policy and its new preview."""
    row = build(session, settings, body, get(session, ref))
    shown = previews.preview(session, settings, row)
    previews.record(row, "changed", shown)
    session.commit()
    return row, shown


def preview(
    session: Session, settings: Settings, body: dict[str, Any], ref: str | None = None
) -> dict[str, Any]:
    """The preview of a policy as ``body`` would make or change it; nothing is saved."""
    if ref is None:
        return previews.preview(session, settings, build(session, settings, body))
    try:
        changed = build(session, settings, body, get(session, ref))
        return previews.preview(session, settings, changed)
    finally:
        session.rollback()  # drop the changes ``build`` made to the stored row


def get(session: Session, ref: str) -> BackupPolicy:
    return find_named(session, BackupPolicy, ref, PolicyNotFound)


def list_policies(session: Session, page: PageParams) -> tuple[list[Any], int]:
    return paginate(session, select(BackupPolicy).order_by(BackupPolicy.name), page)


def delete(session: Session, ref: str) -> BackupPolicy:
    row = get(session, ref)
    session.delete(row)
    session.commit()
    return row


def run_now(
    session: Session, settings: Settings, policy: BackupPolicy, owner: str | None
) -> list[str]:
    """Queue one backup-run per source; each applies the policy's retention after."""
    jobs = []
    for name in policy.sources:
        job = service.start(
            session,
            settings,
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


def verify_heads(session: Session, settings: Settings, policy: BackupPolicy) -> list[str]:
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
                    run_now(s, settings, policy, "scheduler")
                if due(policy.verify_schedule, policy.last_verify_at or policy.created_at, now):
                    verify_heads(s, settings, policy)
            except Exception:
                s.rollback()
                log.exception("policy run failed to start", policy=policy.name)
        for point in s.scalars(
            select(Backup).where(Backup.immutable_flag.is_(True), Backup.immutable_until <= now)
        ):
            chains.release_flag(s, point)
        s.commit()
