from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from diskvault.jobs.models import JobStatus


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    kind: str
    status: JobStatus
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    error_stderr: str | None
    attempts: int
    max_attempts: int
    bytes_done: int
    bytes_total: int | None
    percent: float
    rate_bytes_per_s: float | None
    eta_s: float | None
    message: str | None
    node: str | None
    ran_on: str | None
    owner: str | None
    cancel_requested: bool
    heartbeat_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobStats(BaseModel):
    by_status: dict[str, int]
    by_kind: dict[str, int]
    success_rate: float | None
    mean_duration_s: float | None
    queue_length: int
    queue_pending_messages: int
