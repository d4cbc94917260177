"""Staged bytes of an image on their way into the library: where they wait, the limits
they are held to, their inspection and their rejection, and row updates.

Shared by the request side (:mod:`.service`, :mod:`.intake`, :mod:`.importer`) and the
job side (:mod:`.engine`), so the job never reaches back into the request side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import update

from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.images.inspect import Inspection, inspect_file
from diskvault.images.models import Image, ImageStatus


def staged_path(settings: Settings, image_id: str) -> Path:
    """Where an image's received bytes wait for inspection and conversion."""
    return settings.temp_dir / f"{image_id}.source"


def partial_path(settings: Settings, image_id: str) -> Path:
    """Where an upload or import writes until all its bytes have arrived."""
    return settings.temp_dir / f"{image_id}.source.partial"


def max_file_bytes(settings: Settings) -> int:
    """The largest file that could hold an image under the virtual size limit."""
    return settings.MAX_VIRTUAL_SIZE + settings.MAX_VIRTUAL_SIZE // 100 + 64 * 1024 * 1024


def target_for(settings: Settings, image: Image) -> str:
    return image.target_format or settings.DEFAULT_TARGET_FORMAT


def job_node(settings: Settings, *, staged: bool) -> str | None:
    """Staged bytes and a local store live on this node, so their jobs must run here."""
    if staged or not settings.IMAGE_STORE_URL:
        return settings.NODE
    return None


def update_image(settings: Settings, image_id: str, **values: Any) -> None:
    with session_scope(settings.DATABASE_URL) as s:
        s.execute(update(Image).where(Image.id == image_id).values(**values))


def inspect_staged(settings: Settings, path: Path, claimed: str | None) -> Inspection:
    return inspect_file(path, claimed_format=claimed, max_virtual_size=settings.MAX_VIRTUAL_SIZE)


def reject(
    settings: Settings, image_id: str, error: Exception, *, reason: str | None = None
) -> None:
    """The received bytes are unusable: delete them and record why."""
    staged_path(settings, image_id).unlink(missing_ok=True)
    message = getattr(error, "message", str(error))
    with session_scope(settings.DATABASE_URL) as s:
        image = s.get(Image, image_id)
        if image is None:
            return
        image.status = ImageStatus.ERROR
        image.error = message
        image.details = {**image.details, "reason": reason or getattr(error, "reason", None)}
