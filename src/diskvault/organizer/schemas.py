from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from diskvault.jobs.models import JobStatus
from diskvault.organizer.models import OperationType, RecordState
from diskvault.schemas_base import RequestModel


class OperationCreate(RequestModel):
    """One body for every operation type; each type reads the fields it needs."""

    type: Literal["scan", "dupes", "plan", "apply", "dedupe", "import"]
    location: str | None = Field(default=None, max_length=2000)
    destination: str | None = Field(default=None, max_length=2000)
    rules: str | dict[str, Any] | list[Any] | None = Field(
        default=None, description="YAML or JSON text, or the decoded object"
    )
    dry_run: StrictBool = Field(
        default=False, description="plan only: compute and show, touch nothing"
    )
    plan_id: str | None = Field(default=None, max_length=32, description="apply: the plan to run")
    strategy: Literal["delete", "hardlink", "quarantine"] = "quarantine"
    keep: Literal["oldest", "newest", "shortest", "first"] = "oldest"


class OperationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    type: OperationType
    status: JobStatus
    location: str
    destination: str | None
    params: dict[str, Any]
    summary: dict[str, Any] | None
    source_id: str | None
    rolled_back_by: str | None
    owner: str | None
    percent: float
    bytes_done: int
    bytes_total: int | None
    message: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ScannedFileOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    key: str
    size: int
    mtime: float
    category: str
    format: str | None
    virtual_size: int | None
    note: str | None


class PlanActionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    seq: int
    op: str
    src: str
    dst: str | None
    dst_root: str | None
    size: int
    on_conflict: str
    restore_from: str | None
    rule: str | None
    note: str | None


class FileRecordOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    seq: int
    op: str
    src_root: str
    src: str
    dst_root: str | None
    dst: str | None
    size: int
    sha256: str | None
    restore_from: str | None
    state: RecordState
    error: str | None


class ItemsPage(BaseModel):
    """Scan results (files), plan actions (actions) or journal records (records)."""

    kind: Literal["files", "actions", "records"]
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int
