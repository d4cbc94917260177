"""Organizer rules: create operations (each one a job), read them, request rollbacks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, event, select
from sqlalchemy.orm import Session

from diskvault.config import Settings
from diskvault.db import pagination
from diskvault.db.base import new_id
from diskvault.db.listing import Listing
from diskvault.db.listing import apply as listing_apply
from diskvault.db.pagination import PageParams, paginate
from diskvault.jobs import service as jobs
from diskvault.jobs.models import Job, JobStatus
from diskvault.organizer.errors import (
    BadLocation,
    NotRollbackable,
    OperationBusy,
    OperationNotFound,
    PlanNotUsable,
)
from diskvault.organizer.locations import check_location
from diskvault.organizer.models import (
    FileRecord,
    Operation,
    OperationType,
    PlanAction,
    ScannedFile,
)
from diskvault.organizer.rules import load_rules
from diskvault.organizer.schemas import (
    FileRecordOut,
    OperationCreate,
    PlanActionOut,
    ScannedFileOut,
)

IMPORT_RULES: dict[str, Any] = {
    "rules": [{"name": "import", "match": {"category": ["disk-image", "iso"]}, "action": "import"}]
}
PLAN_TYPES = (OperationType.plan, OperationType.dedupe)


def job_kind(op_type: OperationType) -> str:
    return f"organizer-{op_type.value}"


def _submit(db: Session, settings: Settings, op: Operation, params: dict[str, Any]) -> None:
    """Insert the operation and its job in one transaction, the job's id being the op's.

    The job row gets its id only when flushed inside ``jobs.submit``; this hook
    sets it first and adds the operation row with the same id to that flush.
    """

    def attach(session: Session, *_: object) -> None:
        for obj in list(session.new):
            if isinstance(obj, Job) and obj.kind == job_kind(op.type):
                obj.id = obj.id or new_id()
                op.id = obj.id
                session.add(op)

    event.listen(db, "before_flush", attach, once=True)
    local = op.location.startswith("file://")
    # A local location's files are on this host: bind its jobs to this node.
    jobs.submit(
        settings,
        job_kind(op.type),
        params,
        node=settings.NODE if local else None,
        owner=op.owner,
        session=db,
    )


def _location(settings: Settings, value: str | None, what: str = "location") -> str:
    if not value:
        raise BadLocation(location="", detail=f"this operation needs a {what}")
    return check_location(settings, value)


def _usable_plan(db: Session, plan_id: str) -> Operation:
    plan = db.get(Operation, plan_id)
    if plan is None:
        raise OperationNotFound(id=plan_id)
    job = db.get(Job, plan_id)
    is_plan = plan.type == OperationType.plan or (
        plan.type == OperationType.dedupe and plan.params.get("dry_run")
    )
    if not is_plan:
        raise PlanNotUsable(id=plan_id, detail=f"it is a {plan.type.value} operation")
    if job is None or job.status != JobStatus.succeeded:
        status = job.status.value if job else "unknown"
        raise PlanNotUsable(id=plan_id, detail=f"planning {status}; only a finished plan applies")
    return plan


def create(db: Session, settings: Settings, owner: str, body: OperationCreate) -> Operation:
    """Validate an operation request, record it and queue its job (202 Accepted)."""
    op_type = OperationType(body.type)
    params: dict[str, Any] = {"type": op_type.value, "dry_run": body.dry_run}
    source_id = None
    if op_type == OperationType.apply and body.plan_id:
        plan = _usable_plan(db, body.plan_id)
        location, destination = plan.location, plan.destination
        source_id = plan.id
    else:
        location = _location(settings, body.location)
        destination = None
        if op_type in (OperationType.plan, OperationType.apply, OperationType.import_):
            raw = IMPORT_RULES if op_type == OperationType.import_ else body.rules
            if raw is None:
                raise BadLocation(location=location, detail="rules are needed (YAML or JSON)")
            ruleset = load_rules(raw)
            wanted = body.destination or ruleset.destination
            destination = _location(settings, wanted) if wanted else location
            params["rules"] = ruleset.model_dump(mode="json")
        if op_type == OperationType.dedupe:
            if body.strategy == "hardlink" and not location.startswith("file://"):
                raise BadLocation(location=location, detail="hardlink needs a local location")
            params.update(strategy=body.strategy, keep=body.keep)
    if op_type == OperationType.plan:
        params["dry_run"] = True
    op = Operation(
        type=op_type,
        location=location,
        destination=destination,
        params=params,
        source_id=source_id,
        owner=owner,
    )
    _submit(db, settings, op, {**params, "location": location})
    return op


def request_rollback(db: Session, settings: Settings, owner: str, op_id: str) -> Operation:
    target = _get(db, op_id)
    if not target.type.changes_files or target.params.get("dry_run"):
        raise NotRollbackable(id=op_id, detail=f"a {target.type.value} changes no files")
    job = db.get(Job, op_id)
    if job is not None and not job.status.finished:
        raise OperationBusy(id=op_id, status=job.status.value)
    running = db.scalars(
        select(Operation.id)
        .join(Job, Job.id == Operation.id)
        .where(Operation.source_id == op_id, Operation.type == OperationType.rollback)
        .where(Job.status.in_([JobStatus.queued, JobStatus.running]))
    ).first()
    if running:
        raise OperationBusy(id=running, status="running")
    op = Operation(
        type=OperationType.rollback,
        location=target.location,
        destination=target.destination,
        params={"type": "rollback", "target": op_id},
        source_id=op_id,
        owner=owner,
    )
    _submit(db, settings, op, {"type": "rollback", "target": op_id, "location": target.location})
    return op


def _get(db: Session, op_id: str) -> Operation:
    op = db.get(Operation, op_id)
    if op is None:
        raise OperationNotFound(id=op_id)
    return op


def _out(op: Operation, job: Job | None) -> dict[str, Any]:
    status = job.status if job else JobStatus.failed
    return {
        **{c: getattr(op, c) for c in ("id", "type", "location", "destination", "params")},
        **{c: getattr(op, c) for c in ("summary", "source_id", "rolled_back_by", "owner")},
        "status": status,
        "percent": job.percent if job else 0.0,
        "bytes_done": job.bytes_done if job else 0,
        "bytes_total": job.bytes_total if job else None,
        "message": job.message if job else None,
        "error": job.error if job else "its job record is gone",
        "created_at": op.created_at,
        "started_at": job.started_at if job else None,
        "finished_at": job.finished_at if job else None,
    }


def get(db: Session, op_id: str) -> dict[str, Any]:
    op = _get(db, op_id)
    return _out(op, db.get(Job, op_id))


OPERATION_SORTS: dict[str, Any] = {
    "created": Operation.created_at,
    "type": Operation.type,
    "location": Operation.location,
}


def list_operations(
    db: Session,
    page: PageParams,
    *,
    op_type: OperationType | None = None,
    listing: Listing | None = None,
) -> tuple[list[dict[str, Any]], int]:
    stmt = listing_apply(
        select(Operation), listing, sorts=OPERATION_SORTS, default="-created",
        tiebreak=Operation.id, search=(Operation.location, Operation.destination),
    )  # fmt: skip
    if op_type is not None:
        stmt = stmt.where(Operation.type == op_type)
    ops, total = paginate(db, stmt, page)
    jobs_by_id = {j.id: j for j in db.scalars(select(Job).where(Job.id.in_([o.id for o in ops])))}
    return [_out(o, jobs_by_id.get(o.id)) for o in ops], total


def items(db: Session, op_id: str, page: PageParams) -> dict[str, Any]:
    """What the operation produced: scanned files, planned actions, or journal records."""
    op = _get(db, op_id)
    stmt: Select[Any]
    if op.type == OperationType.scan:
        kind, model, out = "files", ScannedFile, ScannedFileOut
        stmt = select(ScannedFile).order_by(ScannedFile.id)
    elif op.type in PLAN_TYPES and op.params.get("dry_run"):
        kind, model, out = "actions", PlanAction, PlanActionOut  # type: ignore[assignment]
        stmt = select(PlanAction).order_by(PlanAction.seq)
    else:
        kind, model, out = "records", FileRecord, FileRecordOut  # type: ignore[assignment]
        stmt = select(FileRecord).order_by(FileRecord.seq)
    rows, total = paginate(db, stmt.where(model.operation_id == op_id), page)
    items = [out.model_validate(r).model_dump(mode="json") for r in rows]
    return pagination.page(items, total, page, kind=kind)
