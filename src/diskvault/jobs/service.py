"""Job rules: submit, read, cancel, stats, and recovery (reaper, requeue)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from diskvault.config import Settings
from diskvault.db.engine import session_scope, updated_rows
from diskvault.db.listing import Listing
from diskvault.db.listing import apply as listing_apply
from diskvault.db.pagination import PageParams, paginate
from diskvault.jobs import queue, registry
from diskvault.jobs.errors import (
    HeartbeatLost,
    JobFinished,
    JobNotFound,
    JobNotRetryable,
    UnknownJobKind,
)
from diskvault.jobs.models import Job, JobStatus

log = structlog.get_logger("diskvault.jobs")


def submit(
    settings: Settings,
    kind: str,
    params: dict[str, Any] | None = None,
    *,
    node: str | None = None,
    owner: str | None = None,
    session: Session | None = None,
) -> Job:
    """Record the job as queued, commit, then dispatch it to Huey.

    With ``session``, the job row joins the caller's transaction (so a domain
    row and its job appear together) and the caller must commit first.
    """
    spec = registry.get_kind(kind)
    job = Job(
        kind=kind,
        params=params or {},
        node=node,
        owner=owner,
        idempotent=spec.idempotent,
        max_attempts=spec.max_attempts or settings.JOB_RETRY_MAX_ATTEMPTS,
    )
    if session is not None:
        session.add(job)
        session.commit()
    else:
        with session_scope(settings.DATABASE_URL) as s:
            s.add(job)
    queue.dispatch(settings, job.id, node)
    return job


def get(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(id=job_id)
    return job


JOB_SORTS: dict[str, Any] = {
    "created": Job.created_at,
    "kind": Job.kind,
    "status": Job.status,
    "owner": Job.owner,
}


def list_jobs(
    session: Session,
    params: PageParams,
    *,
    kind: str | None = None,
    status: JobStatus | None = None,
    listing: Listing | None = None,
) -> tuple[list[Job], int]:
    stmt = listing_apply(
        select(Job), listing, sorts=JOB_SORTS, default="-created", tiebreak=Job.id,
        search=(Job.kind, Job.message, Job.error, Job.owner),
    )  # fmt: skip
    if kind:
        stmt = stmt.where(Job.kind == kind)
    if status:
        stmt = stmt.where(Job.status == status)
    return paginate(session, stmt, params)


def cancel(session: Session, job_id: str, settings: Settings | None = None) -> Job:
    """Queued jobs end at once (their kind's cancel hook settles what they were
    for); running ones are told and stop cooperatively."""
    job = get(session, job_id)
    if job.status.finished:
        raise JobFinished(id=job_id, status=job.status.value)
    job.cancel_requested = True
    ended = job.status == JobStatus.queued
    if ended:
        job.status = JobStatus.cancelled
        job.finished_at = datetime.now(UTC)
        job.error = "cancelled before it started"
    session.commit()
    if ended and settings is not None:
        try:
            hook = registry.get_kind(job.kind).on_cancel
        except UnknownJobKind:
            hook = None  # a kind this version no longer has: nothing to settle
        if hook is not None:
            try:
                hook(settings, job.id, dict(job.params or {}), job.error or "cancelled")
            except Exception:
                log.exception("cancel hook raised", job_id=job.id)
            session.refresh(job)
    return job


def retry(session: Session, settings: Settings, job_id: str, *, owner: str | None) -> Job:
    """Start a failed or cancelled job again, as a new job with the same kind and
    parameters (the old one keeps its error). Only kinds marked ``rerun`` qualify:
    the others hold domain state (an image, a machine, an organizer operation) that
    a second run with the same parameters would not find as the first left it."""
    job = get(session, job_id)
    if job.status not in (JobStatus.failed, JobStatus.cancelled):
        reason = f"it is {job.status.value}; only failed or cancelled jobs can"
        raise JobNotRetryable(id=job_id, reason=reason)
    if not registry.get_kind(job.kind).rerun:
        reason = f"a {job.kind} job is started from its object's page or command, not re-run"
        raise JobNotRetryable(id=job_id, reason=reason)
    again = submit(settings, job.kind, dict(job.params or {}), node=job.node, owner=owner)
    log.info("job retried", job_id=job_id, new_job_id=again.id, kind=job.kind)
    return get(session, again.id)


def stats(session: Session, settings: Settings) -> dict[str, Any]:
    by_status = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    by_kind = dict(session.execute(select(Job.kind, func.count()).group_by(Job.kind)).all())
    done = [Job.started_at.is_not(None), Job.finished_at.is_not(None)]
    durations = session.execute(
        select(Job.started_at, Job.finished_at).where(*done, Job.status == JobStatus.succeeded)
    ).all()
    seconds = [(b - a).total_seconds() for a, b in durations if a and b]
    succeeded = by_status.get(JobStatus.succeeded, 0)
    ended = succeeded + by_status.get(JobStatus.failed, 0)
    return {
        "by_status": {s.value: by_status.get(s, 0) for s in JobStatus},
        "by_kind": by_kind,
        "success_rate": round(succeeded / ended, 4) if ended else None,
        "mean_duration_s": round(sum(seconds) / len(seconds), 3) if seconds else None,
        "queue_length": by_status.get(JobStatus.queued, 0),
        "queue_pending_messages": queue.pending(settings),
    }


def reap(settings: Settings, *, node: str | None = None, older_than: float | None = None) -> int:
    """Fail (or requeue, if idempotent) running jobs whose heartbeat stopped.

    ``node`` with ``older_than=0`` reaps everything that node was running: used
    at start-up, when nothing can be running there yet.
    """
    timeout = settings.JOB_HEARTBEAT_TIMEOUT_S if older_than is None else older_than
    cutoff = datetime.now(UTC) - timedelta(seconds=timeout)
    with session_scope(settings.DATABASE_URL) as s:
        stmt = select(Job).where(Job.status == JobStatus.running, Job.heartbeat_at <= cutoff)
        if node is not None:
            stmt = stmt.where(Job.ran_on == node)
        stale = list(s.scalars(stmt))
    count = 0
    for job in stale:
        count += _reap_one(settings, job, timeout)
    return count


def _reap_one(settings: Settings, job: Job, timeout: float) -> int:
    message = HeartbeatLost(seconds=timeout).message
    requeue = job.idempotent and job.attempts < job.max_attempts and not job.cancel_requested
    values: dict[str, Any] = (
        {"status": JobStatus.queued, "error": f"{message}; requeued"}
        if requeue
        else {"status": JobStatus.failed, "error": message, "finished_at": datetime.now(UTC)}
    )
    with session_scope(settings.DATABASE_URL) as s:
        won = updated_rows(
            s,
            update(Job)
            .where(Job.id == job.id, Job.status == JobStatus.running)
            .where(Job.heartbeat_at == job.heartbeat_at)
            .values(**values),
        )
    if not won:
        return 0
    log.warning("reaped job", job_id=job.id, requeued=requeue)
    if requeue:
        queue.dispatch(settings, job.id, job.node)
    else:
        kind = registry.KINDS.get(job.kind)
        if kind and kind.on_failure:
            try:
                kind.on_failure(settings, job.id, dict(job.params or {}), message)
            except Exception:
                log.exception("failure hook raised", job_id=job.id)
    return 1


def redispatch_queued(settings: Settings, *, node: str | None = None) -> int:
    """Dispatch every queued job again; claiming is atomic, so none runs twice.

    Covers queue messages lost with a flushed Redis or a deleted queue file.
    """
    with session_scope(settings.DATABASE_URL) as s:
        stmt = select(Job.id, Job.node).where(
            Job.status == JobStatus.queued, Job.cancel_requested.is_(False)
        )
        if node is not None:
            stmt = stmt.where((Job.node == node) | Job.node.is_(None))
        rows = s.execute(stmt).all()
    for job_id, job_node in rows:
        queue.dispatch(settings, job_id, job_node)
    return len(rows)
