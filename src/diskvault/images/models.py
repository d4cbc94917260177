"""The image table."""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import JSON, BigInteger, Enum, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from diskvault.db.base import Base, IdMixin, TimestampMixin


class ImageStatus(enum.StrEnum):
    UPLOADING = "UPLOADING"
    PROCESSING = "PROCESSING"  # checksum, inspection, qemu-img verification (also resize)
    CONVERTING = "CONVERTING"
    READY = "READY"
    ERROR = "ERROR"

    @property
    def busy(self) -> bool:
        return self in (ImageStatus.UPLOADING, ImageStatus.PROCESSING, ImageStatus.CONVERTING)


class ImageType(enum.StrEnum):
    system = "system"
    game = "game"
    data = "data"


class Image(IdMixin, TimestampMixin, Base):
    __tablename__ = "images"
    __table_args__ = (Index("ix_images_status_format", "status", "format"),)

    name: Mapped[str] = mapped_column(String(200))
    image_type: Mapped[ImageType] = mapped_column(
        Enum(ImageType, native_enum=False, length=16), default=ImageType.system
    )
    status: Mapped[ImageStatus] = mapped_column(
        Enum(ImageStatus, native_enum=False, length=16), default=ImageStatus.UPLOADING
    )
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # The detected format of the stored file (None until inspected).
    format: Mapped[str | None] = mapped_column(String(16), default=None)
    # Where it converts to automatically; None means DISKVAULT_DEFAULT_TARGET_FORMAT.
    target_format: Mapped[str | None] = mapped_column(String(16), default=None)
    virtual_size: Mapped[int | None] = mapped_column(BigInteger, default=None)
    actual_size: Mapped[int | None] = mapped_column(BigInteger, default=None)  # allocated bytes
    file_size: Mapped[int | None] = mapped_column(
        BigInteger, default=None
    )  # bytes a download gives
    # Plain SHA-256s: of the stored file when it is the file received (none after a
    # conversion or resize: that would hash every hole), and of the file as received
    # (none for the sparse stream, whose gaps are not hashed).
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    source_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    source: Mapped[str | None] = mapped_column(String(1000), default=None)  # upload, path or URL
    storage_key: Mapped[str | None] = mapped_column(String(500), default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    owner: Mapped[str | None] = mapped_column(String(64), default=None)
    job_id: Mapped[str | None] = mapped_column(String(32), default=None)

    @property
    def digest(self) -> str | None:
        """The stored file's extents digest (:mod:`diskvault.images.digest`)."""
        value = (self.details or {}).get("digest")
        return str(value) if value else None

    @property
    def source_digest(self) -> str | None:
        """The extents digest of a sparse stream as received."""
        value = (self.details or {}).get("source_digest")
        return str(value) if value else None
