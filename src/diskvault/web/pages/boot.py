"""Targets and diskless machines: lists, create, live status, iPXE script and dnsmasq snippet."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from diskvault.api.deps import DbDep, SettingsDep
from diskvault.boot import bootscript, writeback
from diskvault.boot import service as machines
from diskvault.boot.schemas import ApplyRequest, MachineCreate, MachineUpdate
from diskvault.db.pagination import PageParams
from diskvault.errors import DiskvaultError
from diskvault.images import service as images
from diskvault.images.models import ImageStatus
from diskvault.targets import service as targets
from diskvault.targets.schemas import TargetCreate
from diskvault.tools import ipxe
from diskvault.web import overview
from diskvault.web.pages.common import ListDep, checkbox, parse
from diskvault.web.render import redirect, render, templates
from diskvault.web.session import OperatorWriterDep, ReaderDep

router = APIRouter()


def _ready_images(db: Any) -> list[Any]:
    return images.list_images(db, PageParams(limit=200), status=ImageStatus.READY, sort="name")[0]


@router.get("/targets")
def list_targets(request: Request, who: ReaderDep, db: DbDep, lq: ListDep) -> Response:
    items, total = targets.list_targets(db, lq.page, listing=lq.listing())
    context = {
        **lq.sorted_out(items, total, targets.TARGET_SORTS, "created"),
        "images": _ready_images(db) if who.can_operate else [],
    }
    return render(request, "targets.html", who, context)


@router.get("/targets/{target_id}/status")
def target_status(
    request: Request, target_id: str, _: ReaderDep, db: DbDep, settings: SettingsDep
) -> Response:
    try:
        live = targets.get_status(db, settings, target_id)
        context: dict[str, Any] = {"live": live, "error": None}
    except DiskvaultError as exc:  # the backend is down: say so in the cell
        context = {"live": None, "error": exc.message}
    return templates.TemplateResponse(request, "target_status.html", context)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]


@router.post("/targets")
def create_target(who: OperatorWriterDep, db: DbDep, settings: SettingsDep) -> Response:
    form = who.form
    chap = {"user": form["chap_user"], "secret": form.get("chap_secret", "")}
    mutual = {"user": form["mutual_user"], "secret": form.get("mutual_secret", "")}
    body = parse(
        TargetCreate,
        {k: form.get(k, "") for k in ("name", "image_id")},
        initiators=_lines(form.get("initiators", "")),
        chap=chap if form.get("chap_user") else None,
        mutual_chap=mutual if form.get("mutual_user") else None,
    )
    target = targets.create_target(
        db,
        settings,
        name=body.name or body.image_id or "target",
        image_id=body.image_id,
        initiators=body.initiators,
        chap=(body.chap.user, body.chap.secret) if body.chap else None,
        mutual_chap=(body.mutual_chap.user, body.mutual_chap.secret) if body.mutual_chap else None,
        owner=who.principal.username,
    )
    return redirect("/targets", ("info", f"Target {target.iqn} is serving."))


@router.post("/targets/{target_id}/restart")
def restart_target(
    target_id: str, who: OperatorWriterDep, db: DbDep, settings: SettingsDep
) -> Response:
    target = targets.restart_target(db, settings, target_id, force=checkbox(who.form, "force"))
    return redirect("/targets", ("info", f"Restarted {target.iqn}."))


@router.post("/targets/{target_id}/delete")
def delete_target(
    target_id: str, who: OperatorWriterDep, db: DbDep, settings: SettingsDep
) -> Response:
    targets.delete_target(db, settings, target_id, force=checkbox(who.form, "force"))
    return redirect("/targets", ("info", "Target deleted."))


def _writeback_bytes(settings: Any, machine_id: str) -> int | None:
    try:
        st = writeback.layer_paths(settings, machine_id).overlay.stat()
    except OSError:
        return None
    return st.st_blocks * 512


@router.get("/machines")
def list_machines(
    request: Request, who: ReaderDep, db: DbDep, settings: SettingsDep, lq: ListDep
) -> Response:
    items, total = machines.list_machines(db, lq.page, listing=lq.listing())
    context = {
        **lq.sorted_out(items, total, machines.MACHINE_SORTS, "name"),
        "writeback": {m.id: _writeback_bytes(settings, m.id) for m in items},
        "states": overview.boot_states(db, [m.id for m in items]),
        "images": _ready_images(db) if who.can_operate else [],
    }
    return render(request, "machines.html", who, context)


@router.get("/machines/{machine_id}")
def machine_detail(
    request: Request, machine_id: str, who: ReaderDep, db: DbDep, settings: SettingsDep
) -> Response:
    machine = machines.get_machine(db, machine_id)
    host = request.headers.get("host", "")
    server = bootscript.advertise_address(settings, host)
    _, port = bootscript.split_host(host)
    try:
        connected = machines.logged_in(db, settings, machine)
    except DiskvaultError:
        connected = []
    context = {
        "machine": machine,
        "image": images.get(db, machine.image_id) if machine.image_id else None,
        "connected": connected,
        "writeback": _writeback_bytes(settings, machine.id),
        "script": bootscript.preview(db, settings, machine, server=server),
        "dnsmasq": ipxe.dnsmasq_proxy_snippet(
            server=server, http_port=port or settings.PORT, tftp_root=settings.BOOT_TFTP_ROOT
        ),
        "sessions": machines.list_sessions(db, machine.id, PageParams(limit=10))[0],
        "images": _ready_images(db) if who.can_operate else [],
    }
    return render(request, "machine_detail.html", who, context)


@router.post("/machines")
def create_machine(who: OperatorWriterDep, db: DbDep, settings: SettingsDep) -> Response:
    body = parse(MachineCreate, who.form)
    machine = machines.create_machine(
        db,
        settings,
        name=body.name,
        mac=body.mac,
        image_id=body.image_id,
        mode=body.mode,
        initiator_iqn=body.initiator_iqn,
        owner=who.principal.username,
    )
    return redirect(f"/machines/{machine.id}", ("info", f"Added {machine.name}."))


@router.post("/machines/{machine_id}/edit")
def edit_machine(
    machine_id: str, who: OperatorWriterDep, db: DbDep, settings: SettingsDep
) -> Response:
    body = parse(
        MachineUpdate, {k: who.form.get(k, "") for k in ("name", "mac", "image_id", "mode")}
    )
    machine = machines.update_machine(
        db, settings, machine_id, **body.model_dump(exclude_none=True)
    )
    return redirect(f"/machines/{machine_id}", ("info", f"Saved {machine.name}."))


@router.post("/machines/{machine_id}/writeback/discard")
def discard(machine_id: str, who: OperatorWriterDep, db: DbDep, settings: SettingsDep) -> Response:
    machines.discard_writeback(db, settings, machine_id)
    return redirect(f"/machines/{machine_id}", ("info", "Writeback discarded."))


@router.post("/machines/{machine_id}/writeback/apply")
def apply(machine_id: str, who: OperatorWriterDep, db: DbDep, settings: SettingsDep) -> Response:
    body = parse(ApplyRequest, who.form)
    job = machines.request_apply(
        db, settings, machine_id, comment=body.comment, owner=who.principal.username
    )
    return redirect(f"/jobs/{job.id}", ("info", "Applying the writeback as a new version."))


@router.post("/machines/{machine_id}/delete")
def delete_machine(
    machine_id: str, who: OperatorWriterDep, db: DbDep, settings: SettingsDep
) -> Response:
    machines.delete_machine(db, settings, machine_id)
    return redirect("/machines", ("info", "Machine removed."))
