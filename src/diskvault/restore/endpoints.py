"""``/api/v1/restore``: mount a restore point, browse it, download from it, unmount."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response, status

from diskvault.api.deps import OperatorDep, PrincipalDep, SettingsDep
from diskvault.api.pagination import Page, PageParams, page_params
from diskvault.api.problems import problem_response
from diskvault.api.responses import problems
from diskvault.backups import errors as backup_errors
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.images.errors import RangeNotSatisfiable
from diskvault.restore import browse, download, errors, service
from diskvault.restore.browse import Location
from diskvault.restore.schemas import FileListing, MountOut, MountRequest

log = structlog.get_logger("diskvault.restore")
router = APIRouter(
    prefix="/api/v1/restore",
    tags=["restore"],
    responses=problems(errors, backup_errors, RangeNotSatisfiable),
)
PageDep = Annotated[PageParams, Depends(page_params)]
PathQuery = Annotated[str, Query(max_length=4096, description="path inside the partition")]
PartitionQuery = Annotated[
    int | None,
    Query(
        ge=0, le=128, description="partition index; default: the first mounted one holding the path"
    ),
]


def locate(settings: Settings, mount_id: str, path: str, partition: int | None) -> Location:
    """Look the mount up in a short session of its own (a download outlives the
    request's), extending its idle timeout, and place ``path`` on a partition."""
    with session_scope(settings.DATABASE_URL) as s:
        row = service.get_mounted(s, settings, mount_id)
        workdir, partitions = Path(row.workdir), list(row.partitions)
    return browse.locate(mount_id, partitions, partition, workdir, path)


@router.post(
    "/mount",
    response_model=MountOut,
    status_code=status.HTTP_201_CREATED,
    summary="Mount a restore point read-only (every supported filesystem on it)",
)
def mount(body: MountRequest, who: OperatorDep, settings: SettingsDep) -> Any:
    with session_scope(settings.DATABASE_URL) as s:
        row = service.mount(s, settings, body.backup_id, who.username)
        return MountOut.model_validate(row)


@router.get("", response_model=Page[MountOut], summary="Restore mounts (active ones by default)")
def list_mounts(
    _: PrincipalDep,
    settings: SettingsDep,
    page: PageDep,
    all_: Annotated[bool, Query(alias="all", description="include ended mounts")] = False,
) -> Any:
    with session_scope(settings.DATABASE_URL) as s:
        items, total = service.list_mounts(s, page, include_ended=all_)
        return Page[MountOut](
            items=[MountOut.model_validate(r) for r in items],
            total=total,
            limit=page.limit,
            offset=page.offset,
        )


@router.get("/{mount_id}", response_model=MountOut, summary="One mount and its partitions")
def get_mount(mount_id: str, _: PrincipalDep, settings: SettingsDep) -> Any:
    with session_scope(settings.DATABASE_URL) as s:
        return MountOut.model_validate(service.get(s, mount_id))


@router.get(
    "/{mount_id}/files",
    response_model=FileListing,
    summary="List a directory: name, type, size, mtime, mode, symlink target",
)
def list_files(
    mount_id: str,
    _: OperatorDep,
    settings: SettingsDep,
    page: PageDep,
    path: PathQuery = "/",
    partition: PartitionQuery = None,
) -> Any:
    loc = locate(settings, mount_id, path, partition)
    entries, total = browse.list_dir(loc, page.offset, page.limit)
    return FileListing(
        items=[asdict(e) for e in entries],
        total=total,
        limit=page.limit,
        offset=page.offset,
        mount_id=mount_id,
        partition=loc.partition,
        path=loc.path,
    )


@router.get(
    "/{mount_id}/download",
    response_class=Response,
    summary="Download a file (HTTP Range honoured) or a directory as tar or zip",
    responses={
        200: {"description": "the file (application/octet-stream) or the directory archive"},
        206: {"description": "the Range asked of a file"},
    },
)
def download_path(
    mount_id: str,
    request: Request,
    _: OperatorDep,
    settings: SettingsDep,
    path: PathQuery,
    partition: PartitionQuery = None,
    format: Annotated[Literal["tar", "zip"], Query(description="for directories")] = "tar",
) -> Response:
    loc = locate(settings, mount_id, path, partition)
    target = browse.open_target(loc)
    touch = service.keepalive(settings, mount_id)
    try:
        return download.response(loc, target, format, request.headers.get("range"), touch)
    except RangeNotSatisfiable as exc:
        target.close()
        body = exc.problem()
        body["instance"] = request.url.path
        size = exc.fields.get("size", 0)
        return problem_response(body, headers={"Content-Range": f"bytes */{size}"})


@router.delete("/{mount_id}", response_model=MountOut, summary="Unmount and clean up")
def unmount(mount_id: str, _: OperatorDep, settings: SettingsDep) -> Any:
    with session_scope(settings.DATABASE_URL) as s:
        return MountOut.model_validate(service.unmount(s, settings, mount_id))


def startup(app: FastAPI) -> None:
    """Clean what a crash left under the mount root before serving requests."""
    try:
        service.recover(app.state.settings)
    except Exception:
        log.exception("cleaning up restore mounts at start-up failed")


def shutdown(app: FastAPI) -> None:
    """Unmount what this server mounted: no one can browse it once it is gone."""
    try:
        service.shutdown(app.state.settings)
    except Exception:
        log.exception("unmounting restore mounts at shutdown failed")
