"""Runs one job: claim it, heartbeat, call its handler, record how it ended.

A clean stop (:func:`begin_shutdown`) interrupts every running job like a cancel;
each one's partial outputs are removed by its own cancel path, and the job goes
back to ``queued`` with its attempt not counted, to start again from scratch.
"""

from __future__ import annotations

import threading
import traceback
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import update

from diskvault.config import Settings
from diskvault.db.engine import session_scope, updated_rows
from diskvault.errors import DiskvaultError
from diskvault.jobs import queue, registry
from diskvault.jobs.context import JobContext
from diskvault.jobs.errors import RetriableError
from diskvault.jobs.models import Job, JobStatus
from diskvault.tools.process import Cancelled, ToolError, ToolMissing, ToolTimeout

log = structlog.get_logger("diskvault.jobs")

_running: dict[str, JobContext] = {}
_running_changed = threading.Condition()
_stopping = threading.Event()
KILLED_TOOL_WAIT_S = 2.0


def begin_shutdown() -> None:
    """Take no new job and interrupt the running ones (they are requeued as they end)."""
    _stopping.set()
    with _running_changed:
        contexts = list(_running.values())
    for ctx in contexts:
        ctx.interrupt()


def resume() -> None:
    """Accept jobs again (a host started after a stop in the same process)."""
    _stopping.clear()


def wait_idle(timeout: float) -> list[str]:
    """Wait up to ``timeout`` s for running jobs to end; returns the ids still running."""
    with _running_changed:
        _running_changed.wait_for(lambda: not _running, timeout)
        return list(_running)


def requeue_interrupted(settings: Settings, job_id: str) -> bool:
    """running -> queued for a job a clean stop interrupted; its attempt is not counted."""
    with session_scope(settings.DATABASE_URL) as s:
        won = updated_rows(
            s,
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.running)
            .values(
                status=JobStatus.queued,
                attempts=Job.attempts - 1,
                started_at=None,
                bytes_done=0,
                percent=0.0,
                eta_s=None,
                message=f"interrupted by a stop of {settings.NODE}; requeued",
            ),
        )
        job = s.get(Job, job_id)
        node = job.node if job is not None else None
    if won:
        queue.dispatch(settings, job_id, node)
        log.info("job interrupted by a clean stop and requeued", job_id=job_id)
    return bool(won)


def _put_back(settings: Settings, job_id: str) -> None:
    """A job taken off the queue while stopping goes back unclaimed."""
    with session_scope(settings.DATABASE_URL) as s:
        job = s.get(Job, job_id)
        node = job.node if job is not None else None
    queue.dispatch(settings, job_id, node)


def _killed_tool(exc: Exception) -> bool:
    """A tool killed by a signal, or a daemon that went away under us."""
    if not isinstance(exc, ToolError) or isinstance(exc, ToolTimeout | ToolMissing):
        return False
    return exc.returncode is None or exc.returncode < 0


def _user_cancelled(settings: Settings, job_id: str) -> bool:
    with session_scope(settings.DATABASE_URL) as s:
        job = s.get(Job, job_id)
        return bool(job and job.cancel_requested)


def _claim(settings: Settings, job_id: str) -> Job | None:
    """queued -> running, atomically: a job dispatched twice runs once."""
    now = datetime.now(UTC)
    with session_scope(settings.DATABASE_URL) as s:
        claimed = updated_rows(
            s,
            update(Job)
            .where(
                Job.id == job_id, Job.status == JobStatus.queued, Job.cancel_requested.is_(False)
            )
            .values(
                status=JobStatus.running,
                started_at=now,
                heartbeat_at=now,
                ran_on=settings.NODE,
                attempts=Job.attempts + 1,
                error=None,
                error_stderr=None,
            ),
        )
        if not claimed:
            return None
        job = s.get(Job, job_id)
        assert job is not None
        s.expunge(job)
        return job


def finish(
    settings: Settings,
    job_id: str,
    status: JobStatus,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    stderr: str | None = None,
) -> None:
    values: dict[str, Any] = {"status": status, "finished_at": datetime.now(UTC)}
    if status == JobStatus.succeeded:
        values.update(percent=100.0, eta_s=0.0, result=result)
    if error is not None:
        values.update(error=error[:4000], error_stderr=(stderr or None) and stderr[-8000:])
    with session_scope(settings.DATABASE_URL) as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def run_job(settings: Settings, job_id: str) -> None:
    if _stopping.is_set():
        _put_back(settings, job_id)
        return
    job = _claim(settings, job_id)
    if job is None:
        return
    kind = registry.get_kind(job.kind)
    ctx = JobContext(settings, job_id, dict(job.params or {}), job.attempts)
    with _running_changed:
        _running[job_id] = ctx
    if _stopping.is_set():  # the stop began between the check above and now
        ctx.interrupt()
    try:
        _run(settings, job, kind, ctx)
    finally:
        with _running_changed:
            _running.pop(job_id, None)
            _running_changed.notify_all()


def _run(settings: Settings, job: Job, kind: registry.JobKind, ctx: JobContext) -> None:
    job_id = job.id
    bound = structlog.contextvars.bound_contextvars(job_id=job_id, job_kind=job.kind)
    with bound:
        log.info("job started", attempt=job.attempts)
        ctx.start_heartbeat()
        try:
            try:
                result = kind.handler(ctx)
            finally:
                ctx.flush_progress()
        except Exception as exc:
            ctx.run_cleanups()
            _ended_early(settings, job, kind, ctx, exc)
        else:
            finish(settings, job_id, JobStatus.succeeded, result=result or {})
            log.info("job succeeded")
        finally:
            ctx.stop_heartbeat()


def _ended_early(
    settings: Settings, job: Job, kind: registry.JobKind, ctx: JobContext, exc: Exception
) -> None:
    """Record a job that raised: requeued (a clean stop), cancelled, retried or failed."""
    job_id = job.id
    if not ctx.interrupted and _killed_tool(exc) and _stopping.wait(KILLED_TOOL_WAIT_S):
        # systemd (KillMode=control-group) signals our tools with us: a tool may die
        # before our own handler has marked the job interrupted.
        ctx.interrupt()
    # Anything a stop interrupted is requeued, also when it surfaced as another error
    # (a block job cancelled under QSD, say): the rerun tells a real failure apart.
    if ctx.interrupted and not _user_cancelled(settings, job_id):
        if not isinstance(exc, Cancelled):
            log.info("job error during a clean stop", error=describe(exc)[0])
        requeue_interrupted(settings, job_id)
        return
    if isinstance(exc, Cancelled):
        finish(settings, job_id, JobStatus.cancelled, error="cancelled by request")
        log.info("job cancelled")
    elif isinstance(exc, RetriableError):
        _retry_or_fail(settings, job, kind, exc.message)
    else:
        message, stderr = describe(exc)
        finish(settings, job_id, JobStatus.failed, error=message, stderr=stderr)
        log.warning("job failed", error=message)
        _call_failure_hook(settings, kind, job, message)


def describe(exc: BaseException) -> tuple[str, str | None]:
    if isinstance(exc, ToolError):
        return exc.message, exc.stderr
    if isinstance(exc, DiskvaultError):
        return exc.message, None
    # Unexpected: the message for the user, the traceback for the log field.
    return f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc))[-8000:]


def _retry_or_fail(settings: Settings, job: Job, kind: registry.JobKind, message: str) -> None:
    if job.attempts >= job.max_attempts:
        finish(
            settings,
            job.id,
            JobStatus.failed,
            error=f"{message} (gave up after {job.attempts} attempts)",
        )
        _call_failure_hook(settings, kind, job, message)
        return
    delay = settings.JOB_RETRY_BASE_S * settings.JOB_RETRY_FACTOR ** (job.attempts - 1)
    with session_scope(settings.DATABASE_URL) as s:
        s.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(
                status=JobStatus.queued,
                error=f"attempt {job.attempts} failed: {message}; retrying in {delay:.1f}s",
            )
        )
    log.info("job will retry", attempt=job.attempts, delay_s=delay, error=message)
    queue.dispatch(settings, job.id, job.node, delay=delay)


def _call_failure_hook(settings: Settings, kind: registry.JobKind, job: Job, message: str) -> None:
    if kind.on_failure is None:
        return
    try:
        kind.on_failure(settings, job.id, dict(job.params or {}), message)
    except Exception:
        log.exception("failure hook raised", job_id=job.id)


queue.set_executor(run_job)
