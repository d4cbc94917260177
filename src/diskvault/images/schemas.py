from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from diskvault.images.models import ImageStatus, ImageType
from diskvault.schemas_base import MAX_SIZE, JsonInt, PathStr, RequestModel

TargetFormat = Literal["raw", "qcow2", "vmdk", "vhdx"]
AutoTarget = Literal["raw", "qcow2"]


class ImageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    image_type: ImageType
    status: ImageStatus
    error: str | None
    format: str | None
    target_format: str | None
    virtual_size: int | None
    actual_size: int | None
    file_size: int | None
    sha256: str | None = Field(description="plain SHA-256 of the stored file, when known")
    source_sha256: str | None = Field(description="plain SHA-256 of the file as uploaded")
    digest: str | None = Field(
        default=None, description="sha256-extents-v1 of the stored file (docs/images.md)"
    )
    source_digest: str | None = Field(
        default=None, description="sha256-extents-v1 of a sparse stream as uploaded"
    )
    source: str | None
    details: dict[str, Any]
    owner: str | None
    job_id: str | None
    created_at: datetime
    updated_at: datetime


class ImageImport(RequestModel):
    """Give exactly one of ``path`` and ``url`` (422 otherwise)."""

    path: PathStr | None = Field(default=None, description="a file inside IMPORT_ROOTS")
    url: str | None = Field(default=None, max_length=4096, description="an http(s) URL")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    image_type: ImageType = ImageType.system
    format: str | None = Field(default=None, max_length=16, description="the declared format")
    target_format: AutoTarget | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ImageImport:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of path or url")
        return self


class ConvertRequest(RequestModel):
    target_format: TargetFormat
    compress: StrictBool = Field(default=False, description="qcow2 only: compressed clusters")


class ResizeRequest(RequestModel):
    size: JsonInt = Field(
        gt=0,
        le=MAX_SIZE,
        multiple_of=512,
        description="new virtual size in bytes, a multiple of 512, at most "
        "DISKVAULT_MAX_VIRTUAL_SIZE (checked when the job is asked for)",
    )
    force: StrictBool = Field(default=False, description="allow shrinking when the data fits")


class ConversionStatus(BaseModel):
    image_id: str
    status: ImageStatus
    format: str | None
    target_format: str | None
    error: str | None
    job_id: str | None
    job_kind: str | None = None
    job_status: str | None = None
    percent: float = 0.0
    bytes_done: int = 0
    bytes_total: int | None = None
    rate_bytes_per_s: float | None = None
    eta_s: float | None = None
    message: str | None = None
