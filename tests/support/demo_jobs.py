"""Test-only job kinds that exercise the job system, and the route that submits them.

Importing this module registers ``noop`` and ``sleep-and-count`` (tests/conftest.py
does, for in-process tests). ``install(app)`` adds ``POST /api/v1/jobs`` for them;
a ``diskvault serve`` or ``worker`` subprocess gets both through ``support.demo_cli``.
Production has neither: its jobs are started by the domain that owns them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, status
from pydantic import Field

from diskvault.api.deps import AdminDep, DbDep, SettingsDep
from diskvault.errors import Forbidden
from diskvault.jobs import registry, service
from diskvault.jobs.context import JobContext
from diskvault.jobs.errors import RetriableError
from diskvault.jobs.registry import job_kind
from diskvault.jobs.schemas import JobOut
from diskvault.schemas_base import RequestModel
from diskvault.tools.process import Process


@job_kind("noop", test_only=True)
def noop(ctx: JobContext) -> dict[str, Any]:
    return {"attempt": ctx.attempt}


@job_kind("sleep-and-count", test_only=True, idempotent=False)
def sleep_and_count(ctx: JobContext) -> dict[str, Any]:
    """Counts ``steps`` steps over ``seconds``; options test failure paths.

    params: seconds, steps, fail_times (retriable failures before success),
    crash (unexpected exception), subprocess (run ``sleep`` so cancel must stop
    a child), partial (a file to create and expect cleaned up on failure).
    """
    p = ctx.params
    seconds, steps = float(p.get("seconds", 1)), max(1, int(p.get("steps", 10)))
    if ctx.attempt <= int(p.get("fail_times", 0)):
        raise RetriableError(f"simulated transient failure on attempt {ctx.attempt}")
    if p.get("partial"):
        partial = ctx.cleanup_on_failure(Path(p["partial"]))
        partial.write_bytes(b"partial output")
    if p.get("subprocess"):
        proc = Process(["sleep", str(seconds)])
        proc.start()
        ctx.progress(
            0, steps, message=f"child pid {proc.proc.pid if proc.proc else '?'}", force=True
        )
        proc.wait(should_cancel=ctx.should_cancel)
    else:
        for i in range(steps):
            ctx.sleep(seconds / steps)
            ctx.progress(i + 1, steps, message=f"step {i + 1}/{steps}")
    if p.get("crash"):
        raise ZeroDivisionError("simulated crash in task code")
    if p.get("partial"):
        ctx.keep(Path(p["partial"]))
    return {"counted": steps, "attempt": ctx.attempt}


class JobSubmit(RequestModel):
    kind: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    node: str | None = Field(default=None, max_length=128)


router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


@router.post("", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
def submit_test_job(body: JobSubmit, principal: AdminDep, settings: SettingsDep, db: DbDep) -> Any:
    """Submit a test-only job kind."""
    if not registry.get_kind(body.kind).test_only:
        raise Forbidden(f"job kind {body.kind!r} cannot be submitted directly")
    job = service.submit(settings, body.kind, body.params, node=body.node, owner=principal.username)
    return service.get(db, job.id)


def install(app: FastAPI) -> None:
    # Before the app's own /api/v1/jobs/{job_id} routes would not matter: methods differ.
    app.include_router(router)
