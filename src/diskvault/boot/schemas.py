from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from diskvault.boot.models import MachineMode, MachineStatus
from diskvault.schemas_base import RequestModel

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class MachineCreate(RequestModel):
    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, '.', '_', '-'")
    mac: str = Field(max_length=32, examples=["52:54:00:12:34:56"])
    image_id: str = Field(max_length=32)
    mode: MachineMode = MachineMode.discard
    initiator_iqn: str | None = Field(
        default=None, max_length=223, description="default: iqn.<date>.<domain>:client-<name>"
    )


class MachineUpdate(RequestModel):
    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    mac: str | None = Field(default=None, max_length=32)
    image_id: str | None = Field(default=None, max_length=32)
    mode: MachineMode | None = None
    initiator_iqn: str | None = Field(default=None, max_length=223)


class MachineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    mac: str
    image_id: str
    mode: MachineMode
    initiator_iqn: str
    status: MachineStatus
    error: str | None
    error_code: str | None
    target_id: str | None
    layer_version: int | None = Field(description="the image version its writeback sits on")
    reset_pending: bool
    node: str
    owner: str | None
    last_boot_at: datetime | None
    created_at: datetime
    updated_at: datetime


class MachineDetail(MachineOut):
    target_iqn: str | None
    portal: str | None
    connected: bool = Field(description="an initiator is logged in to its disk right now")
    initiators: list[str]


class BootSessionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    machine_id: str
    started_at: datetime
    connected_at: datetime | None
    ended_at: datetime | None
    end_reason: str | None
    client_address: str | None
    initiator: str
    image_id: str
    version: int | None
    mode: MachineMode


class ApplyRequest(RequestModel):
    comment: str | None = Field(default=None, max_length=2000)


class ApplyAccepted(BaseModel):
    job_id: str
    machine_id: str
    status: str


class VersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    image_id: str
    version: int
    comment: str | None
    parent_version: int | None
    is_current: bool
    virtual_size: int | None
    source_machine_id: str | None
    job_id: str | None
    owner: str | None
    created_at: datetime
    used_by: list[str] = Field(default_factory=list, description="machines whose layer sits on it")


class RecoveryStart(BaseModel):
    """Boot a restore point: attach it to a machine, or to a temporary one for ``mac``."""

    model_config = ConfigDict(extra="forbid")
    machine: str | None = Field(default=None, max_length=100, description="name or id")
    mac: str | None = Field(default=None, max_length=32, examples=["52:54:00:12:34:57"])
    mode: MachineMode = Field(
        default=MachineMode.keep,
        description="keep: the guest's writes last until the recovery ends; "
        "discard: each boot starts from the restore point again",
    )


class RecoveryOut(BaseModel):
    id: str
    backup_id: str
    machine_id: str | None
    machine: str | None
    temporary_machine: bool
    mac: str
    mode: MachineMode
    initiator_iqn: str
    target_id: str | None
    overlay_bytes: int
    uptime_s: float
    error: str | None
    created_at: datetime
    last_boot_at: datetime | None


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: Literal["image", "file", "version"] = Field(
        description="image: a new library image; file: a disk file; version: the new current "
        "version of the recovery's machine's golden image"
    )
    name: str | None = Field(default=None, pattern=NAME_PATTERN, description="the new image")
    comment: str | None = Field(default=None, max_length=1000, description="for to: version")
    switch: bool = Field(
        default=False,
        description="to: image only: the recovery's machine boots the new image (with a fresh "
        "writeback layer) from its first boot after the recovery ends",
    )
    path: str | None = Field(default=None, max_length=4096, description="a new file (to: file)")
    format: str = Field(default="qcow2", max_length=16)
