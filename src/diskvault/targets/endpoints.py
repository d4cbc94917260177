from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, Query, Response
from fastapi import status as http

from diskvault.api.deps import DbDep, OperatorDep, PrincipalDep, SettingsDep
from diskvault.api.pagination import Page, PageParams, page_params
from diskvault.api.responses import problems
from diskvault.db import pagination
from diskvault.domains import optional_module
from diskvault.errors import Conflict, NotFound, Unprocessable
from diskvault.images import errors as image_errors
from diskvault.targets import errors, manager, service
from diskvault.targets.models import TargetStatus
from diskvault.targets.reconcile import reconcile
from diskvault.targets.schemas import TargetCreate, TargetOut, TargetStatusOut

log = structlog.get_logger("diskvault.targets")
router = APIRouter(
    prefix="/api/v1/targets",
    tags=["targets"],
    responses=problems(errors, image_errors, Conflict, NotFound, Unprocessable),
)
PageDep = Annotated[PageParams, Depends(page_params)]
ForceQuery = Annotated[
    bool, Query(description="go ahead even while initiators are connected (they are logged out)")
]


@router.post(
    "",
    response_model=TargetOut,
    status_code=http.HTTP_201_CREATED,
    summary="Serve an image or writeback layer over iSCSI",
)
def create(body: TargetCreate, principal: OperatorDep, db: DbDep, settings: SettingsDep) -> Any:
    path = service.check_api_path(settings, body.path) if body.path is not None else None
    return service.create_target(
        db,
        settings,
        name=body.name or body.image_id or body.machine_id or "target",
        path=path,
        image_id=body.image_id,
        initiators=body.initiators,
        chap=(body.chap.user, body.chap.secret) if body.chap else None,
        mutual_chap=(body.mutual_chap.user, body.mutual_chap.secret) if body.mutual_chap else None,
        machine_id=body.machine_id,
        lun=body.lun,
        iqn=body.iqn,
        portal=body.portal,
        owner=principal.username,
    )


@router.get("", response_model=Page[TargetOut], summary="List targets")
def list_(
    _: PrincipalDep,
    db: DbDep,
    page: PageDep,
    status: TargetStatus | None = None,
    image_id: str | None = None,
) -> Any:
    items, total = service.list_targets(db, page, status=status, image_id=image_id)
    return pagination.page(items, total, page)


@router.get("/machine/{machine_id}", response_model=TargetOut, summary="A machine's target")
def by_machine(machine_id: str, _: PrincipalDep, db: DbDep) -> Any:
    return service.get_by_machine(db, machine_id)


@router.get("/{target_id}", response_model=TargetOut)
def get(target_id: str, _: PrincipalDep, db: DbDep) -> Any:
    return service.get_target(db, target_id)


@router.get(
    "/{target_id}/status",
    response_model=TargetStatusOut,
    summary="Live status from the backend, with connected initiators",
)
def live_status(target_id: str, _: PrincipalDep, db: DbDep, settings: SettingsDep) -> Any:
    live = service.get_status(db, settings, target_id)
    return {
        "id": live.target.id,
        "iqn": live.target.iqn,
        "status": live.target.status,
        "present": live.present,
        "connected": bool(live.sessions),
        "initiators": live.initiators,
        "sessions": [
            {"initiator": s.initiator, "addresses": s.addresses, "session_id": s.session_id}
            for s in live.sessions
        ],
    }


@router.delete(
    "/{target_id}",
    status_code=http.HTTP_204_NO_CONTENT,
    summary="Delete (409 while an initiator is connected, unless force)",
)
def delete(
    target_id: str, _: OperatorDep, db: DbDep, settings: SettingsDep, force: ForceQuery = False
) -> Response:
    service.delete_target(db, settings, target_id, force=force)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


@router.post("/{target_id}/restart", response_model=TargetOut, summary="Re-create in the backend")
def restart(
    target_id: str, _: OperatorDep, db: DbDep, settings: SettingsDep, force: ForceQuery = False
) -> Any:
    return service.restart_target(db, settings, target_id, force=force)


def startup(app: FastAPI) -> None:
    """Start (or attach to) tgtd when managed, then bring the backend in line with the DB."""
    try:
        manager.start_tgtd(app.state.settings)
        reconcile(app.state.settings)
    except Exception:
        log.exception("reconciling iSCSI targets at start-up failed")


def shutdown(app: FastAPI) -> None:
    manager.stop_tgtd(app.state.settings)


def _register_image_usage_check() -> None:
    images = optional_module("diskvault.images.service")
    register = getattr(images, "register_usage_check", None)
    if register is not None:
        register(service.image_usage)


_register_image_usage_check()
