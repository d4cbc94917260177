"""Routes of instant recovery and boot verification (included by the boot router)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from fastapi import status as http
from fastapi.responses import FileResponse

from diskvault.api.deps import DbDep, OperatorDep, PrincipalDep, SettingsDep
from diskvault.api.pagination import Page, PageParams, page_params
from diskvault.backups import chain as chains
from diskvault.backups import repository as repo_files
from diskvault.backups import service as backups
from diskvault.boot import promote, recovery, verify
from diskvault.boot.schemas import PromoteRequest, RecoveryOut, RecoveryStart
from diskvault.db import pagination
from diskvault.errors import NotFound
from diskvault.jobs import service as jobs
from diskvault.jobs.schemas import JobOut

router = APIRouter(tags=["recovery"])
PageDep = Annotated[PageParams, Depends(page_params)]


@router.post(
    "/backup/{backup_id}/boot",
    response_model=RecoveryOut,
    status_code=http.HTTP_201_CREATED,
    summary="Instant recovery: publish a restore point as the disk a MAC or machine boots",
)
def boot_point(
    backup_id: str, body: RecoveryStart, who: OperatorDep, db: DbDep, settings: SettingsDep
) -> Any:
    rec = recovery.start(
        db,
        settings,
        backup_id,
        machine=body.machine,
        mac=body.mac,
        mode=body.mode,
        owner=who.username,
    )
    return recovery.describe(db, settings, rec)


@router.get("/recoveries", response_model=Page[RecoveryOut], summary="Live instant recoveries")
def list_recoveries(_: PrincipalDep, db: DbDep, settings: SettingsDep, page: PageDep) -> Any:
    items, total = recovery.list_recoveries(db, page)
    described = [recovery.describe(db, settings, r) for r in items]
    return pagination.page(described, total, page)


@router.get("/recoveries/{recovery_id}", response_model=RecoveryOut)
def get_recovery(recovery_id: str, _: PrincipalDep, db: DbDep, settings: SettingsDep) -> Any:
    return recovery.describe(db, settings, recovery.get(db, recovery_id))


@router.post(
    "/recoveries/{recovery_id}/promote",
    response_model=JobOut,
    status_code=http.HTTP_202_ACCEPTED,
    summary="Copy restore point + the guest's writes to a new image or file (guest keeps running)",
)
def promote_recovery(
    recovery_id: str, body: PromoteRequest, who: OperatorDep, db: DbDep, settings: SettingsDep
) -> Any:
    return promote.request(
        db,
        settings,
        recovery_id,
        to=body.to,
        name=body.name,
        path=body.path,
        fmt=body.format,
        owner=who.username,
        comment=body.comment,
        switch=body.switch,
    )


@router.delete(
    "/recoveries/{recovery_id}",
    status_code=http.HTTP_204_NO_CONTENT,
    summary="End a recovery and throw its overlay away",
)
def stop_recovery(recovery_id: str, _: OperatorDep, db: DbDep, settings: SettingsDep) -> Response:
    recovery.stop(db, settings, recovery_id)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


@router.post(
    "/backup/{backup_id}/verify-boot",
    response_model=JobOut,
    status_code=http.HTTP_202_ACCEPTED,
    summary="Boot the restore point in a throw-away QEMU and record whether it boots",
)
def verify_boot(backup_id: str, who: OperatorDep, db: DbDep, settings: SettingsDep) -> Any:
    backups.completed(db, backup_id, "boot-verified")
    params = {"backup_id": backup_id}
    return jobs.submit(
        settings, verify.VERIFY_BOOT_JOB, params, node=settings.NODE, owner=who.username
    )


@router.get(
    "/backup/{backup_id}/boot-screenshot",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}},
    summary="The screen of the point's last boot verification (PNG)",
)
def boot_screenshot(backup_id: str, _: PrincipalDep, db: DbDep) -> Any:
    point = backups.get_backup(db, backup_id)
    shot = repo_files.screenshot_path(chains.image_of(db, point)) if point.path else None
    if shot is None or not shot.is_file():
        raise NotFound(f"restore point {backup_id} has no boot screenshot; run verify-boot")
    return FileResponse(shot, media_type="image/png")
