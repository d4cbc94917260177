from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, WebSocket, WebSocketDisconnect, status

from diskvault.api import guard
from diskvault.api.deps import DbDep, OperatorDep, PrincipalDep, SettingsDep
from diskvault.api.pagination import Page, PageParams, page_params
from diskvault.api.responses import problems
from diskvault.config import Settings
from diskvault.db import pagination
from diskvault.errors import DiskvaultError, Forbidden
from diskvault.jobs import errors, service
from diskvault.jobs.models import Job, JobStatus
from diskvault.jobs.schemas import JobOut, JobStats
from diskvault.jobs.stream import JobStreams

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], responses=problems(errors, Forbidden))
ws_router = APIRouter(tags=["jobs"])
PageDep = Annotated[PageParams, Depends(page_params)]


@router.get("", response_model=Page[JobOut])
def list_jobs(
    _: PrincipalDep,
    db: DbDep,
    page: PageDep,
    kind: str | None = Query(None, description="filter by job kind"),
    status_: JobStatus | None = Query(None, alias="status", description="filter by status"),
) -> Any:
    items, total = service.list_jobs(db, page, kind=kind, status=status_)
    return pagination.page(items, total, page)


@router.get("/stats", response_model=JobStats)
def job_stats(_: PrincipalDep, db: DbDep, settings: SettingsDep) -> Any:
    return service.stats(db, settings)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, _: PrincipalDep, db: DbDep) -> Any:
    return service.get(db, job_id)


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, _: PrincipalDep, db: DbDep, settings: SettingsDep) -> Any:
    return service.cancel(db, job_id, settings)


@router.post(
    "/{job_id}/retry",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start a failed or cancelled job again (a new job, same kind and parameters)",
)
def retry_job(job_id: str, who: OperatorDep, db: DbDep, settings: SettingsDep) -> Any:
    return service.retry(db, settings, job_id, owner=who.username)


def job_message(job: Job) -> dict[str, Any]:
    body = JobOut.model_validate(job).model_dump(mode="json")
    if job.status == JobStatus.succeeded:
        body["type"] = "completed"
    elif job.status.finished:
        body["type"] = "error" if job.status == JobStatus.failed else "cancelled"
    else:
        body["type"] = "progress" if job.status == JobStatus.running else "status"
    return body


def _first_frame_token(message: Mapping[str, Any]) -> str | None:
    """The token of a ``{"token": "..."}`` text frame; None for anything else."""
    text = message.get("text")
    if not isinstance(text, str):
        return None  # a binary frame, or the client left
    try:
        data = json.loads(text)
    except ValueError:
        return None
    token = data.get("token") if isinstance(data, dict) else None
    return token if isinstance(token, str) else None


async def _authenticate(ws: WebSocket, settings: Settings) -> bool:
    token = ws.query_params.get("token")
    if token is None:
        try:
            first = await asyncio.wait_for(ws.receive(), timeout=10)
        except TimeoutError:
            first = {}
        if first.get("type") == "websocket.disconnect":
            return False
        token = _first_frame_token(first)
    if not token:
        await ws.close(code=4401, reason="authentication required: pass ?token= or {token}")
        return False
    try:
        await anyio.to_thread.run_sync(guard.resolve_token, settings, token)
    except DiskvaultError as exc:
        await ws.close(code=4401, reason=exc.message[:120])
        return False
    return True


def _streams(ws: WebSocket) -> JobStreams:
    state = ws.app.state
    if getattr(state, "job_streams", None) is None:
        state.job_streams = JobStreams(state.settings, job_message)
    streams: JobStreams = state.job_streams
    return streams


async def stream_job(ws: WebSocket, job_id: str) -> None:
    """Initial status, progress at least every 500 ms, a final message, close."""
    settings: Settings = ws.app.state.settings
    await ws.accept()
    if not await _authenticate(ws, settings):
        return
    sent = 0
    try:
        async with contextlib.aclosing(_streams(ws).messages(job_id)) as messages:
            async for message in messages:
                await ws.send_json(message)
                sent += 1
        if not sent:
            await ws.send_json({"type": "error", "detail": f"job {job_id} was not found"})
            await ws.close(code=4404, reason="job not found")
            return
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
