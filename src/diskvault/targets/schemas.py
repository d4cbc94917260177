from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from diskvault.schemas_base import JsonInt, PathStr, RequestModel
from diskvault.targets.models import TargetStatus


class ChapIn(RequestModel):
    user: str = Field(min_length=1, max_length=255)
    secret: str = Field(min_length=1, max_length=255, repr=False)


class TargetCreate(RequestModel):
    """Serve an image (``image_id``) or a writeback layer (``path``) as one LUN: give
    exactly one of the two (422 otherwise)."""

    name: str | None = Field(
        default=None, min_length=1, max_length=100, description="IQN suffix; default the image id"
    )
    iqn: str | None = Field(
        default=None, max_length=223, description="explicit IQN instead of a generated one"
    )
    image_id: str | None = Field(default=None, max_length=32)
    path: PathStr | None = Field(default=None, description="a file under DISKVAULT_WRITEBACK_PATH")
    initiators: list[Annotated[str, Field(max_length=223)]] = Field(
        default_factory=list, max_length=256, description="empty: any initiator"
    )
    chap: ChapIn | None = None
    mutual_chap: ChapIn | None = None
    portal: str | None = Field(
        default=None, max_length=262, description="ip:port; default DISKVAULT_ISCSI_PORTAL"
    )
    lun: JsonInt = Field(default=1, ge=1, le=255, description="LUN 0 is tgt's controller")
    machine_id: str | None = Field(default=None, max_length=32)

    @model_validator(mode="after")
    def _one_source(self) -> TargetCreate:
        if (self.image_id is None) == (self.path is None):
            raise ValueError("give exactly one of image_id and path")
        return self


class TargetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    iqn: str
    status: TargetStatus
    error: str | None
    image_id: str | None
    machine_id: str | None
    path: str
    lun: int
    portal: str
    initiators: list[str]
    chap_user: str | None
    mutual_chap_user: str | None
    node: str
    owner: str | None
    created_at: datetime
    updated_at: datetime


class SessionOut(BaseModel):
    initiator: str
    addresses: list[str]
    session_id: int | None


class TargetStatusOut(BaseModel):
    id: str
    iqn: str
    status: TargetStatus
    present: bool = Field(description="the backend has this target right now")
    connected: bool
    initiators: list[str] = Field(description="initiators logged in right now")
    sessions: list[SessionOut]
