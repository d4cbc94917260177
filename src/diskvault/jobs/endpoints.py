from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, WebSocket, WebSocketDisconnect, status
from sqlalchemy.orm import Session

from diskvault.api.deps import AdminDep, DbDep, PrincipalDep, SettingsDep
from diskvault.api.pagination import Page, PageParams, page_params
from diskvault.api.responses import problems
from diskvault.auth import service as auth_service
from diskvault.config import Settings
from diskvault.db.engine import session_factory
from diskvault.errors import DiskvaultError, Forbidden
from diskvault.jobs import errors, registry, service
from diskvault.jobs.models import Job, JobStatus
from diskvault.jobs.schemas import JobOut, JobStats, JobSubmit

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], responses=problems(errors, Forbidden))
ws_router = APIRouter(tags=["jobs"])
PageDep = Annotated[PageParams, Depends(page_params)]
WS_PROGRESS_INTERVAL_S = 0.4  # the issue promises a message at least every 500 ms


@router.get("", response_model=Page[JobOut])
def list_jobs(
    _: PrincipalDep,
    db: DbDep,
    page: PageDep,
    kind: str | None = Query(None, description="filter by job kind"),
    status_: JobStatus | None = Query(None, alias="status", description="filter by status"),
) -> Any:
    items, total = service.list_jobs(db, page, kind=kind, status=status_)
    return {"items": items, "total": total, "limit": page.limit, "offset": page.offset}


@router.get("/stats", response_model=JobStats)
def job_stats(_: PrincipalDep, db: DbDep, settings: SettingsDep) -> Any:
    return service.stats(db, settings)


@router.post("", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
def submit_test_job(body: JobSubmit, principal: AdminDep, settings: SettingsDep, db: DbDep) -> Any:
    """Submit a test-only job kind (needs DISKVAULT_ENABLE_TEST_JOBS=1)."""
    kind = registry.get_kind(body.kind)
    if not (kind.test_only and settings.ENABLE_TEST_JOBS):
        raise Forbidden(
            f"job kind {body.kind!r} cannot be submitted directly; "
            "only test kinds can, with DISKVAULT_ENABLE_TEST_JOBS=1"
        )
    job = service.submit(settings, body.kind, body.params, node=body.node, owner=principal.username)
    return service.get(db, job.id)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, _: PrincipalDep, db: DbDep) -> Any:
    return service.get(db, job_id)


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, _: PrincipalDep, db: DbDep) -> Any:
    return service.cancel(db, job_id)


def job_message(job: Job) -> dict[str, Any]:
    body = JobOut.model_validate(job).model_dump(mode="json")
    if job.status == JobStatus.succeeded:
        body["type"] = "completed"
    elif job.status.finished:
        body["type"] = "error" if job.status == JobStatus.failed else "cancelled"
    else:
        body["type"] = "progress" if job.status == JobStatus.running else "status"
    return body


def _read_job(settings: Settings, job_id: str) -> Job | None:
    session: Session = session_factory(settings.DATABASE_URL)()
    try:
        return session.get(Job, job_id)
    finally:
        session.close()


async def _authenticate(ws: WebSocket, settings: Settings) -> bool:
    token = ws.query_params.get("token")
    if token is None:
        try:
            first = await asyncio.wait_for(ws.receive_text(), timeout=10)
            token = json.loads(first).get("token")
        except (TimeoutError, ValueError, AttributeError, WebSocketDisconnect):
            token = None
    if not token:
        await ws.close(code=4401, reason="authentication required: pass ?token= or {token}")
        return False

    def check() -> None:
        session = session_factory(settings.DATABASE_URL)()
        try:
            auth_service.resolve(session, settings, token)
        finally:
            session.close()

    try:
        await anyio.to_thread.run_sync(check)
    except DiskvaultError as exc:
        await ws.close(code=4401, reason=exc.message[:120])
        return False
    return True


async def stream_job(ws: WebSocket, job_id: str) -> None:
    """Initial status, progress at least every 500 ms, a final message, close."""
    settings: Settings = ws.app.state.settings
    await ws.accept()
    if not await _authenticate(ws, settings):
        return
    job = await anyio.to_thread.run_sync(_read_job, settings, job_id)
    if job is None:
        await ws.send_json({"type": "error", "detail": f"job {job_id} was not found"})
        await ws.close(code=4404, reason="job not found")
        return
    await ws.send_json(job_message(job))
    try:
        while not job.status.finished:
            await anyio.sleep(WS_PROGRESS_INTERVAL_S)
            fresh = await anyio.to_thread.run_sync(_read_job, settings, job_id)
            if fresh is None:
                break
            job = fresh
            await ws.send_json(job_message(job))
        await ws.close(code=1000)
    except WebSocketDisconnect:
        return


@ws_router.websocket("/ws/jobs/{job_id}")
async def ws_job(ws: WebSocket, job_id: str) -> None:
    await stream_job(ws, job_id)


@ws_router.websocket("/ws/operations/{job_id}")
async def ws_operation(ws: WebSocket, job_id: str) -> None:
    """Alias of /ws/jobs/{id} used by organizer operations."""
    await stream_job(ws, job_id)
