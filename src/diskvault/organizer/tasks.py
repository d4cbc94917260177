"""Organizer job kinds: one per operation type; the job id is the operation id.

None retries by itself: a scan or plan is cheap to ask for again, and an apply
that failed halfway must be looked at (or rolled back), not re-run blindly.
"""

from __future__ import annotations

from typing import Any

from diskvault.jobs.context import JobContext
from diskvault.jobs.registry import job_kind
from diskvault.organizer import runs


@job_kind("organizer-scan", max_attempts=1)
def scan(ctx: JobContext) -> dict[str, Any]:
    return runs.run_scan(ctx)


@job_kind("organizer-dupes", max_attempts=1)
def dupes(ctx: JobContext) -> dict[str, Any]:
    return runs.run_dupes(ctx)


@job_kind("organizer-plan", max_attempts=1)
def plan(ctx: JobContext) -> dict[str, Any]:
    return runs.run_plan(ctx)


@job_kind("organizer-dedupe", max_attempts=1)
def dedupe(ctx: JobContext) -> dict[str, Any]:
    return runs.run_plan(ctx)


@job_kind("organizer-import", max_attempts=1)
def import_(ctx: JobContext) -> dict[str, Any]:
    return runs.run_plan(ctx)


@job_kind("organizer-apply", max_attempts=1)
def apply(ctx: JobContext) -> dict[str, Any]:
    return runs.run_apply(ctx)


@job_kind("organizer-rollback", max_attempts=1)
def rollback(ctx: JobContext) -> dict[str, Any]:
    return runs.run_rollback(ctx)
