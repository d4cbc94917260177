"""An upload's bytes have landed: check its form fields, record it, start processing."""

from __future__ import annotations

import os
from pathlib import Path

from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.images.errors import InvalidUpload
from diskvault.images.models import Image, ImageType
from diskvault.images.service import get, reject, staged_path, start_processing


def accept_upload(
    settings: Settings,
    image_id: str,
    partial: Path,
    *,
    fields: dict[str, str],
    filename: str | None,
    size: int,
    sha256: str | None,
    digest: str | None,
    verified: str | None = None,
) -> Image:
    """The bytes have landed: validate the form, inspect the headers, start processing.

    Raises :class:`UnsafeImage` (422) with the image left in ERROR and the bytes deleted.
    """
    staged = staged_path(settings, image_id)
    os.replace(partial, staged)
    try:
        image_type = ImageType(fields.get("image_type") or ImageType.system.value)
    except ValueError:
        err = InvalidUpload(f"image_type {fields.get('image_type')!r} is not system, game or data")
        reject(settings, image_id, err, reason="invalid-field")
        raise err from None
    target = fields.get("target_format") or None
    if target not in (None, "raw", "qcow2"):
        err = InvalidUpload(f"target_format {target!r} is not raw or qcow2")
        reject(settings, image_id, err, reason="invalid-field")
        raise err
    with session_scope(settings.DATABASE_URL) as s:
        image = get(s, image_id)
        image.name = (fields.get("name") or image.name or filename or "upload")[:200]
        image.image_type = image_type
        image.target_format = target or image.target_format
        image.source_sha256 = sha256
        image.file_size = size
        claimed = fields.get("format") or image.details.get("claimed_format")
        image.details = {
            **image.details,
            "claimed_format": claimed,
            "filename": filename,
            "source_digest": digest,
            "client_checksum": verified,  # which checksum of the client's was verified
        }
    return start_processing(settings, image_id, claimed)
