"""Job progress is one monotonic total across phases (issue 14, item 6)."""

from __future__ import annotations

import pytest

from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.db.migrate import upgrade
from diskvault.jobs.context import JobContext
from diskvault.jobs.models import Job

MiB = 1024 * 1024


@pytest.fixture
def ctx(settings: Settings) -> JobContext:
    upgrade(settings.DATABASE_URL)
    with session_scope(settings.DATABASE_URL) as s:
        job = Job(kind="noop", params={})
        s.add(job)
        s.flush()
        job_id = job.id
    return JobContext(settings, job_id, {}, 1)


def _row(ctx: JobContext) -> tuple[int, int | None, float, str | None]:
    with session_scope(ctx.settings.DATABASE_URL) as s:
        job = s.get(Job, ctx.job_id)
        assert job is not None
        return job.bytes_done, job.bytes_total, job.percent, job.message


def test_a_phase_counting_from_zero_adds_to_the_bytes_before_it(ctx: JobContext) -> None:
    ctx.progress(64 * MiB, 64 * MiB, percent=80, message="converting", force=True)
    ctx.progress(4 * MiB, 64 * MiB, percent=81, message="computing SHA-256", force=True)
    done, total, percent, message = _row(ctx)
    assert (done, total) == (68 * MiB, 128 * MiB)
    assert percent == 81 and message == "computing SHA-256"


def test_percent_and_bytes_never_go_back(ctx: JobContext) -> None:
    ctx.progress(10 * MiB, 20 * MiB, force=True)
    ctx.progress(percent=10, message="a caller reporting less", force=True)
    done, _, percent, _ = _row(ctx)
    assert done == 10 * MiB and percent == 50


def test_planned_parts_that_overlap_make_one_bar(ctx: JobContext) -> None:
    ctx.plan(("converting", 0.8, 10 * MiB), ("hashing", 0.2, 10 * MiB))
    ctx.advance("converting", 5 * MiB)
    ctx.flush_progress()
    assert _row(ctx)[:3] == (5 * MiB, 20 * MiB, 40.0)
    ctx.advance("hashing", 5 * MiB)  # hashing runs behind converting
    ctx.flush_progress()
    assert _row(ctx)[:3] == (10 * MiB, 20 * MiB, 50.0)
    ctx.advance("converting", 10 * MiB)
    ctx.advance("hashing", 10 * MiB)
    assert _row(ctx)[:3] == (20 * MiB, 20 * MiB, 100.0)  # a part's end is never held back


def test_the_throttled_last_update_is_written_at_the_end(ctx: JobContext) -> None:
    ctx.progress(1, 10, force=True)
    ctx.progress(5, 10)  # within the throttle interval: held
    ctx.flush_progress()
    assert _row(ctx)[0] == 5


def test_throughput_samples_are_stored_and_stay_bounded(ctx: JobContext) -> None:
    """Issue 16 point 4: the console draws a finished job's throughput from these."""
    from diskvault.jobs.context import MAX_SAMPLES

    for i in range(1, 2 * MAX_SAMPLES + 10):
        ctx.progress(i * MiB, 1000 * MiB, force=True)
    with session_scope(ctx.settings.DATABASE_URL) as s:
        job = s.get(Job, ctx.job_id)
        assert job is not None and job.samples
        samples = job.samples
    assert 2 <= len(samples) <= MAX_SAMPLES
    times = [t for t, _ in samples]
    assert times == sorted(times) and times[0] == 0
    assert all(rate > 0 for _, rate in samples)
