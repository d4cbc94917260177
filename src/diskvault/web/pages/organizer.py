"""Organizer: start scan, dupes, plan, apply and rollback; see breakdowns, plans and journals."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from diskvault.api.deps import DbDep, SettingsDep
from diskvault.organizer import service
from diskvault.organizer.models import OperationType
from diskvault.organizer.schemas import OperationCreate
from diskvault.web import overview, svg
from diskvault.web.pages.common import ListDep, checkbox, parse
from diskvault.web.render import redirect, render
from diskvault.web.session import OperatorWriterDep, ReaderDep

router = APIRouter()
FORM_FIELDS = ("type", "location", "rules", "plan_id", "strategy", "keep")


@router.get("/organizer")
def operations(request: Request, who: ReaderDep, db: DbDep, lq: ListDep) -> Response:
    items, total = service.list_operations(db, lq.page, listing=lq.listing())
    context = lq.sorted_out(items, total, service.OPERATION_SORTS, "-created")
    return render(request, "organizer.html", who, context)


@router.get("/organizer/{op_id}")
def operation(request: Request, op_id: str, who: ReaderDep, db: DbDep, lq: ListDep) -> Response:
    op = service.get(db, op_id)
    breakdown = overview.category_bytes(db, op_id) if op["type"] == OperationType.scan else []
    context = {
        "op": op,
        "listing": service.items(db, op_id, lq.page),
        "bars": svg.hbars(breakdown) if breakdown else None,
        "lq": lq,
    }
    return render(request, "organizer_op.html", who, context)


@router.post("/organizer")
def start(who: OperatorWriterDep, db: DbDep, settings: SettingsDep) -> Response:
    fields = {k: who.form.get(k, "") for k in FORM_FIELDS}
    body = parse(OperationCreate, fields, dry_run=checkbox(who.form, "dry_run"))
    op = service.create(db, settings, who.principal.username, body)
    return redirect(f"/organizer/{op.id}", ("info", f"{body.type} started."))


@router.post("/organizer/{op_id}/rollback")
def rollback(op_id: str, who: OperatorWriterDep, db: DbDep, settings: SettingsDep) -> Response:
    op = service.request_rollback(db, settings, who.principal.username, op_id)
    return redirect(f"/organizer/{op.id}", ("info", "Rolling back."))
