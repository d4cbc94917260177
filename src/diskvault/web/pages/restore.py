"""File restore: mount a restore point, browse it like a file manager, download, unmount."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Literal

from fastapi import APIRouter, Query, Request, Response

from diskvault.api.deps import SettingsDep
from diskvault.db.engine import session_scope
from diskvault.restore import browse, download, service
from diskvault.restore.endpoints import locate
from diskvault.restore.schemas import MountOut, MountRequest
from diskvault.web.pages.common import ListDep, parse
from diskvault.web.render import redirect, render
from diskvault.web.session import OperatorReaderDep, OperatorWriterDep, ReaderDep

router = APIRouter()
PathQuery = Query("/", max_length=4096)
PartitionQuery = Query(None, ge=0, le=128)


def _crumbs(path: str) -> list[tuple[str, str]]:
    parts = [p for p in PurePosixPath(path).parts if p != "/"]
    return [(part, "/" + "/".join(parts[: i + 1])) for i, part in enumerate(parts)]


@router.get("/restore")
def mounts(request: Request, who: ReaderDep, settings: SettingsDep, lq: ListDep) -> Response:
    with session_scope(settings.DATABASE_URL) as s:
        items, total = service.list_mounts(s, lq.page, include_ended=False)
        rows = [MountOut.model_validate(r) for r in items]
    return render(request, "restore.html", who, lq.out(rows, total))


@router.post("/restore/mount")
def mount(who: OperatorWriterDep, settings: SettingsDep) -> Response:
    body = parse(MountRequest, who.form)
    with session_scope(settings.DATABASE_URL) as s:
        mount_id = service.mount(s, settings, body.backup_id, who.principal.username).id
    return redirect(f"/restore/{mount_id}", ("info", "Mounted read-only."))


@router.get("/restore/{mount_id}")
def browse_mount(
    request: Request,
    mount_id: str,
    who: OperatorReaderDep,  # guest files are for operators, as in the API
    settings: SettingsDep,
    lq: ListDep,
    path: str = PathQuery,
    partition: int | None = PartitionQuery,
) -> Response:
    loc = locate(settings, mount_id, path, partition)
    with session_scope(settings.DATABASE_URL) as s:
        row = MountOut.model_validate(service.get(s, mount_id))
    entries, total = browse.list_dir(loc, lq.page.offset, lq.page.limit)
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
    context = {
        **lq.out(entries, total),
        "mount": row,
        "partition": loc.partition,
        "dir": loc.path,
        "crumbs": _crumbs(loc.path),
        "expires_in": max(0, int((expires - datetime.now(UTC)).total_seconds())),
    }
    return render(request, "restore_browse.html", who, context)


@router.get("/restore/{mount_id}/download")
def download_path(
    request: Request,
    mount_id: str,
    _: OperatorReaderDep,
    settings: SettingsDep,
    path: str = PathQuery,
    partition: int | None = PartitionQuery,
    format: Literal["tar", "zip"] = "tar",
) -> Response:
    loc = locate(settings, mount_id, path, partition)
    target = browse.open_target(loc)
    touch = service.keepalive(settings, mount_id)
    return download.response(loc, target, format, request.headers.get("range"), touch)


@router.post("/restore/{mount_id}/unmount")
def unmount(mount_id: str, who: OperatorWriterDep, settings: SettingsDep) -> Response:
    with session_scope(settings.DATABASE_URL) as s:
        service.unmount(s, settings, mount_id)
    return redirect("/restore", ("info", "Unmounted."))
