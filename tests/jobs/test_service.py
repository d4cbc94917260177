"""Job rules against the real DB (SQLite and PostgreSQL), no worker threads."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from diskvault.api.pagination import PageParams
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.db.migrate import upgrade
from diskvault.jobs import runner, service
from diskvault.jobs.context import JobContext
from diskvault.jobs.errors import JobFinished, JobNotFound
from diskvault.jobs.models import Job, JobStatus
from diskvault.jobs.registry import job_kind
from diskvault.jobs.scheduler import PERIODIC, Scheduler, claim_tick, periodic

CALLS: list[str] = []


@job_kind("test-idempotent", idempotent=True, max_attempts=3)
def _idem(ctx: JobContext) -> dict:
    return {}


@job_kind(
    "test-hooked",
    on_failure=lambda settings, job_id, params, err: CALLS.append(f"{job_id}:{err}"),
)
def _hooked(ctx: JobContext) -> dict:
    raise RuntimeError("task blew up")


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    upgrade(settings.DATABASE_URL)
    return settings


def _job(settings: Settings, job_id: str) -> Job:
    with session_scope(settings.DATABASE_URL) as s:
        job = s.get(Job, job_id)
        assert job is not None
        s.expunge(job)
        return job


def test_a_job_dispatched_twice_runs_once(migrated: Settings) -> None:
    job = service.submit(migrated, "noop")
    runner.run_job(migrated, job.id)
    runner.run_job(migrated, job.id)
    done = _job(migrated, job.id)
    assert done.status == JobStatus.succeeded and done.attempts == 1
    assert done.result == {"attempt": 1} and done.ran_on == migrated.NODE


def test_unexpected_exception_fails_with_message_and_calls_hook(migrated: Settings) -> None:
    job = service.submit(migrated, "test-hooked")
    runner.run_job(migrated, job.id)
    failed = _job(migrated, job.id)
    assert failed.status == JobStatus.failed
    assert failed.error == "RuntimeError: task blew up"
    assert "Traceback" in (failed.error_stderr or "")
    assert CALLS[-1] == f"{job.id}:RuntimeError: task blew up"


def test_cancel_rules(migrated: Settings) -> None:
    job = service.submit(migrated, "noop")
    with session_scope(migrated.DATABASE_URL) as s:
        cancelled = service.cancel(s, job.id)
        assert cancelled.status == JobStatus.cancelled
        with pytest.raises(JobFinished) as err:
            service.cancel(s, job.id)
        assert err.value.status == 409 and "cancelled" in err.value.message
        with pytest.raises(JobNotFound):
            service.cancel(s, "missing")
    runner.run_job(migrated, job.id)  # a cancelled job is never claimed
    assert _job(migrated, job.id).status == JobStatus.cancelled


def _make_stale(settings: Settings, job_id: str, attempts: int) -> None:
    old = datetime.now(UTC) - timedelta(minutes=10)
    with session_scope(settings.DATABASE_URL) as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status=JobStatus.running, heartbeat_at=old, attempts=attempts, ran_on="dead")
        )


def test_reaper_fails_or_requeues_by_idempotency(migrated: Settings) -> None:
    plain = service.submit(migrated, "noop")
    idem = service.submit(migrated, "test-idempotent")
    exhausted = service.submit(migrated, "test-idempotent")
    _make_stale(migrated, plain.id, 1)
    _make_stale(migrated, idem.id, 1)
    _make_stale(migrated, exhausted.id, 3)
    fresh = service.submit(migrated, "noop")
    with session_scope(migrated.DATABASE_URL) as s:
        s.execute(
            update(Job)
            .where(Job.id == fresh.id)
            .values(status=JobStatus.running, heartbeat_at=datetime.now(UTC))
        )
    assert service.reap(migrated) == 3
    assert _job(migrated, plain.id).status == JobStatus.failed
    assert "stopped responding" in (_job(migrated, plain.id).error or "")
    assert _job(migrated, idem.id).status == JobStatus.queued
    assert _job(migrated, exhausted.id).status == JobStatus.failed
    assert _job(migrated, fresh.id).status == JobStatus.running
    runner.run_job(migrated, idem.id)
    assert _job(migrated, idem.id).status == JobStatus.succeeded


def test_progress_is_throttled_and_computes_rate(migrated: Settings) -> None:
    job = service.submit(migrated, "noop")
    ctx = JobContext(migrated, job.id, {}, 1)
    ctx.progress(10, 100, force=True)
    for i in range(50):
        ctx.progress(11 + i, 100)  # all inside the throttle window
    assert _job(migrated, job.id).bytes_done == 10
    ctx.flush_progress()  # the runner writes what the throttle held back at the end
    assert _job(migrated, job.id).bytes_done == 60
    ctx._last_write -= 1  # pretend the window passed
    ctx.progress(60, 100)
    row = _job(migrated, job.id)
    assert row.bytes_done == 60 and row.percent == 60.0
    assert row.rate_bytes_per_s and row.rate_bytes_per_s > 0 and row.eta_s is not None


def test_stats(migrated: Settings) -> None:
    ok = service.submit(migrated, "noop")
    bad = service.submit(migrated, "test-hooked")
    service.submit(migrated, "noop")
    runner.run_job(migrated, ok.id)
    runner.run_job(migrated, bad.id)
    with session_scope(migrated.DATABASE_URL) as s:
        data = service.stats(s, migrated)
        page, total = service.list_jobs(s, PageParams(limit=10), status=JobStatus.queued)
    assert data["by_status"]["succeeded"] == 1 and data["by_status"]["failed"] == 1
    assert data["success_rate"] == 0.5 and data["queue_length"] == 1
    assert data["by_kind"]["noop"] == 2 and total == 1 and len(page) == 1


def test_scheduler_runs_a_tick_once_across_schedulers(migrated: Settings) -> None:
    ran: list[int] = []
    periodic("test-tick", 3600)(lambda s: ran.append(1))
    try:
        a, b = Scheduler(migrated), Scheduler(migrated)
        now = 1_800_000_000.0
        assert "test-tick" in a.run_due(now)
        assert "test-tick" not in b.run_due(now)
        assert "test-tick" not in a.run_due(now)
        assert ran == [1]
        assert claim_tick(migrated, "other", 1) and not claim_tick(migrated, "other", 1)
    finally:
        PERIODIC.pop("test-tick")
    with session_scope(migrated.DATABASE_URL) as s:
        assert s.scalar(select(Job.id).limit(1)) is None
