from __future__ import annotations

import math
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi import status as http
from fastapi.responses import PlainTextResponse

from diskvault.api.deps import DbDep, OperatorDep, PrincipalDep, SettingsDep
from diskvault.api.pagination import Page, PageParams, page_params
from diskvault.api.problems import problem_response
from diskvault.api.responses import problems
from diskvault.boot import bootscript, errors, recovery_endpoints, service, sessions, versions
from diskvault.boot.errors import BootRateLimited
from diskvault.boot.schemas import (
    ApplyAccepted,
    ApplyRequest,
    BootSessionOut,
    MachineCreate,
    MachineDetail,
    MachineOut,
    MachineUpdate,
    VersionOut,
)
from diskvault.config import Settings
from diskvault.db import pagination
from diskvault.errors import DiskvaultError, NotFound
from diskvault.images import errors as image_errors
from diskvault.images import service as images
from diskvault.schemas_base import MAX_INT
from diskvault.targets import errors as target_errors
from diskvault.tools import ipxe

log = structlog.get_logger("diskvault.boot")
DECLARED = problems(errors, image_errors, target_errors, NotFound)
router = APIRouter(prefix="/api/v1", tags=["boot"], responses=DECLARED)
public_router = APIRouter(tags=["boot"], responses=DECLARED)
PageDep = Annotated[PageParams, Depends(page_params)]
ForceQuery = Annotated[bool, Query(description="delete even while the machine is booted")]
VersionPath = Annotated[int, Path(ge=1, le=MAX_INT, description="an image version number")]


def _limiter(request: Request, name: str, per_minute: int) -> bootscript.RateLimiter:
    limiter: bootscript.RateLimiter | None = getattr(request.app.state, name, None)
    if limiter is None:
        limiter = bootscript.RateLimiter(per_minute)
        setattr(request.app.state, name, limiter)
    return limiter


def _rate_limited(request: Request, settings: Settings, client: str, mac: str) -> Response | None:
    """Per MAC first, so one machine looping on its script does not use up its
    neighbours' share of the per-IP bucket (many machines can share one NAT address)."""
    mac_key = bootscript.mac_key(mac)
    who, setting = f"MAC {mac_key}", "DISKVAULT_BOOT_RATE_LIMIT_PER_MAC_PER_MIN"
    wait = _limiter(request, "boot_mac_limiter", settings.BOOT_RATE_LIMIT_PER_MAC_PER_MIN).take(
        mac_key
    )
    if not wait:
        who, setting = client, "DISKVAULT_BOOT_RATE_LIMIT_PER_MIN"
        wait = _limiter(request, "boot_limiter", settings.BOOT_RATE_LIMIT_PER_MIN).take(client)
    if not wait:
        return None
    retry_after = math.ceil(wait)
    body = BootRateLimited(client=who, retry_after=retry_after, setting=setting).problem()
    body["instance"] = request.url.path
    return problem_response(body, headers={"Retry-After": str(retry_after)})


@public_router.get(
    "/boot/ipxe",
    response_class=PlainTextResponse,
    summary="The iPXE script for a machine (no login: PXE clients cannot; rate-limited)",
)
def boot_script(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    mac: Annotated[str, Query(max_length=64, description="the NIC's MAC, e.g. ${net0/mac}")],
) -> Response:
    client = request.client.host if request.client else "unknown"
    refused = _rate_limited(request, settings, client, mac)
    if refused is not None:
        return refused
    server = bootscript.advertise_address(settings, request.headers.get("host", ""))
    return PlainTextResponse(bootscript.answer(db, settings, mac, server=server, client=client))


@router.get(
    "/boot/dnsmasq.conf",
    response_class=PlainTextResponse,
    summary="A dnsmasq proxy-DHCP + TFTP snippet that chainloads iPXE to this server",
)
def dnsmasq_conf(request: Request, _: PrincipalDep, settings: SettingsDep) -> Response:
    host_header = request.headers.get("host", "")
    _host, port = bootscript.split_host(host_header)
    text = ipxe.dnsmasq_proxy_snippet(
        server=bootscript.advertise_address(settings, host_header),
        http_port=port or settings.PORT,
        tftp_root=settings.BOOT_TFTP_ROOT,
    )
    return PlainTextResponse(text)


# -- machines ------------------------------------------------------------------


@router.post(
    "/machines",
    response_model=MachineOut,
    status_code=http.HTTP_201_CREATED,
    summary="Register a diskless machine (its writeback layer and target are made now)",
)
def create_machine(
    body: MachineCreate, principal: OperatorDep, db: DbDep, settings: SettingsDep
) -> Any:
    return service.create_machine(
        db,
        settings,
        name=body.name,
        mac=body.mac,
        image_id=body.image_id,
        mode=body.mode,
        initiator_iqn=body.initiator_iqn,
        owner=principal.username,
    )


@router.get("/machines", response_model=Page[MachineOut], summary="List machines")
def list_machines(_: PrincipalDep, db: DbDep, page: PageDep, image_id: str | None = None) -> Any:
    items, total = service.list_machines(db, page, image_id=image_id)
    return pagination.page(items, total, page)


def _detail(db: DbDep, settings: Settings, machine_id: str) -> dict[str, Any]:
    machine = service.get_machine(db, machine_id)
    target = service.target_of(db, machine)
    try:
        initiators = service.logged_in(db, settings, machine)
    except DiskvaultError:  # the iSCSI backend is down: show the machine anyway
        initiators = []
    return {
        **MachineOut.model_validate(machine).model_dump(),
        "target_iqn": target.iqn if target else None,
        "portal": target.portal if target else None,
        "connected": bool(initiators),
        "initiators": initiators,
    }


@router.get("/machines/{machine_id}", response_model=MachineDetail)
def get_machine(machine_id: str, _: PrincipalDep, db: DbDep, settings: SettingsDep) -> Any:
    return _detail(db, settings, machine_id)


@router.patch(
    "/machines/{machine_id}",
    response_model=MachineOut,
    summary="Edit a machine (a new image or initiator needs it shut down)",
)
def update_machine(
    machine_id: str, body: MachineUpdate, _: OperatorDep, db: DbDep, settings: SettingsDep
) -> Any:
    return service.update_machine(db, settings, machine_id, **body.model_dump(exclude_unset=True))


@router.delete(
    "/machines/{machine_id}",
    status_code=http.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a machine, its target and writeback (409 while booted, unless force)",
)
def delete_machine(
    machine_id: str, _: OperatorDep, db: DbDep, settings: SettingsDep, force: ForceQuery = False
) -> Response:
    service.delete_machine(db, settings, machine_id, force=force)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


@router.get(
    "/machines/{machine_id}/sessions",
    response_model=Page[BootSessionOut],
    summary="Boot sessions, newest first",
)
def list_sessions(machine_id: str, _: PrincipalDep, db: DbDep, page: PageDep) -> Any:
    items, total = service.list_sessions(db, machine_id, page)
    return pagination.page(items, total, page)


@router.post(
    "/machines/{machine_id}/writeback/apply",
    response_model=ApplyAccepted,
    status_code=http.HTTP_202_ACCEPTED,
    summary="Merge the machine's writeback into a new image version (409 while booted)",
)
def apply_writeback(
    machine_id: str,
    principal: OperatorDep,
    db: DbDep,
    settings: SettingsDep,
    body: ApplyRequest | None = None,
) -> Any:
    job = service.request_apply(
        db,
        settings,
        machine_id,
        comment=body.comment if body else None,
        owner=principal.username,
    )
    return {"job_id": job.id, "machine_id": machine_id, "status": job.status.value}


@router.post(
    "/machines/{machine_id}/writeback/discard",
    response_model=MachineOut,
    summary="Throw the machine's writes away (409 while booted)",
)
def discard_writeback(machine_id: str, _: OperatorDep, db: DbDep, settings: SettingsDep) -> Any:
    return service.discard_writeback(db, settings, machine_id)


# -- image versions --------------------------------------------------------------


def _version_out(db: DbDep, row: Any) -> dict[str, Any]:
    out = VersionOut.model_validate(row).model_dump()
    out["used_by"] = versions.users(db, row.image_id, row.version)
    return out


@router.get(
    "/images/{image_id}/versions",
    response_model=Page[VersionOut],
    summary="Versions of a golden image, newest first",
)
def list_versions(
    image_id: str, _: PrincipalDep, db: DbDep, settings: SettingsDep, page: PageDep
) -> Any:
    rows = versions.list_versions(db, settings, image_id)
    chunk = rows[page.offset : page.offset + page.limit]
    return pagination.page([_version_out(db, r) for r in chunk], len(rows), page)


@router.post(
    "/images/{image_id}/versions/{version}/rollback",
    response_model=VersionOut,
    summary="Make an earlier version current (machines boot it from their next boot)",
)
def rollback_version(image_id: str, version: VersionPath, _: OperatorDep, db: DbDep) -> Any:
    images.get(db, image_id)
    return _version_out(db, versions.rollback(db, image_id, version))


@router.delete(
    "/images/{image_id}/versions/{version}",
    status_code=http.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a version (409 while current or a machine's layer sits on it)",
)
def delete_version(
    image_id: str, version: VersionPath, _: OperatorDep, db: DbDep, settings: SettingsDep
) -> Response:
    versions.delete_version(db, settings, image_id, version)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


# -- lifecycle -------------------------------------------------------------------


def startup(app: FastAPI) -> None:
    """Runs after the targets domain started tgtd: layers first, then their targets."""
    settings: Settings = app.state.settings
    app.state.boot_limiter = bootscript.RateLimiter(settings.BOOT_RATE_LIMIT_PER_MIN)
    app.state.boot_mac_limiter = bootscript.RateLimiter(settings.BOOT_RATE_LIMIT_PER_MAC_PER_MIN)
    try:
        sessions.startup(settings)
    except Exception:
        log.exception("restoring writeback layers at start-up failed")


def shutdown(app: FastAPI) -> None:
    sessions.shutdown(app.state.settings)


images.register_usage_check(service.image_usage)
router.include_router(recovery_endpoints.router)
