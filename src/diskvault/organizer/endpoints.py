"""``/api/v1/operations``: organizer operations (scan, dupes, plan, apply, dedupe, import).

Progress streams on ``WS /ws/operations/{id}`` (served by the jobs package, as
an operation's id is its job's id).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from diskvault.api.deps import DbDep, OperatorDep, PrincipalDep, SettingsDep
from diskvault.api.pagination import Page, PageParams, page_params
from diskvault.api.responses import problems
from diskvault.db import pagination
from diskvault.jobs import errors as job_errors
from diskvault.organizer import errors, service
from diskvault.organizer.models import OperationType
from diskvault.organizer.schemas import ItemsPage, OperationCreate, OperationOut
from diskvault.storage import errors as storage_errors

router = APIRouter(
    prefix="/api/v1/operations",
    tags=["organizer"],
    responses=problems(errors, storage_errors, job_errors),
)
PageDep = Annotated[PageParams, Depends(page_params)]


@router.post(
    "",
    response_model=OperationOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start an organizer operation",
)
def create_operation(
    body: OperationCreate, principal: OperatorDep, db: DbDep, settings: SettingsDep
) -> Any:
    op = service.create(db, settings, principal.username, body)
    return service.get(db, op.id)


@router.get("", response_model=Page[OperationOut], summary="List operations, newest first")
def list_operations(
    _: PrincipalDep,
    db: DbDep,
    page: PageDep,
    type_: OperationType | None = Query(None, alias="type", description="filter by type"),
) -> Any:
    items, total = service.list_operations(db, page, op_type=type_)
    return pagination.page(items, total, page)


@router.get("/{op_id}", response_model=OperationOut, summary="One operation and its summary")
def get_operation(op_id: str, _: PrincipalDep, db: DbDep) -> Any:
    return service.get(db, op_id)


@router.get(
    "/{op_id}/items",
    response_model=ItemsPage,
    summary="Scanned files, planned actions or journal records of an operation",
)
def operation_items(op_id: str, _: PrincipalDep, db: DbDep, page: PageDep) -> Any:
    return service.items(db, op_id, page)


@router.post(
    "/{op_id}/rollback",
    response_model=OperationOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Undo an applied operation from its journal",
)
def rollback_operation(op_id: str, principal: OperatorDep, db: DbDep, settings: SettingsDep) -> Any:
    op = service.request_rollback(db, settings, principal.username, op_id)
    return service.get(db, op.id)
