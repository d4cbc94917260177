"""Image library rules on the request side: records, state changes, jobs, deletion.

The work itself (inspection, conversion, checksums) runs in jobs: see
:mod:`diskvault.images.engine`.

Other domains that reference images register a usage check with
:func:`register_usage_check`; ``DELETE /images/{id}`` is refused with 409 while
any check reports a use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from diskvault.config import Settings
from diskvault.db.engine import session_scope, updated_rows
from diskvault.db.pagination import PageParams, paginate
from diskvault.images import files
from diskvault.images.errors import (
    ImageBusy,
    ImageInUse,
    ImageNotFound,
    ResizeRefused,
    ResizeTooLarge,
    ShrinkRefused,
    UnsafeImage,
)
from diskvault.images.models import Image, ImageStatus, ImageType
from diskvault.images.staging import inspect_staged, job_node, reject, staged_path
from diskvault.images.store import ImageStore
from diskvault.jobs import service as jobs
from diskvault.jobs.models import Job

log = structlog.get_logger("diskvault.images")

UsageCheck = Callable[[Session, str], str | None]
_USAGE_CHECKS: list[UsageCheck] = []

STALE_UPLOAD_S = 300.0


def register_usage_check(fn: UsageCheck) -> UsageCheck:
    """Register ``fn(session, image_id) -> reason or None``; usable as a decorator."""
    if fn not in _USAGE_CHECKS:
        _USAGE_CHECKS.append(fn)
    return fn


def refuse_if_used(session: Session, image_id: str) -> None:
    """Convert, resize and delete replace or remove the file that targets, machines'
    overlays and backups read, so they wait until nothing uses the image (409)."""
    if reason := usage(session, image_id):
        raise ImageInUse(id=image_id, detail=reason)


def usage(session: Session, image_id: str) -> str | None:
    """The first use a registered check reports; a check that fails counts as a use."""
    for check in _USAGE_CHECKS:
        try:
            reason = check(session, image_id)
        except Exception as exc:
            session.rollback()
            log.exception("image usage check failed", check=check.__qualname__)
            return f"{check.__module__} could not tell ({type(exc).__name__}), so it may be"
        if reason:
            return reason
    return None


# -- reading ------------------------------------------------------------------


def get(session: Session, image_id: str) -> Image:
    image = session.get(Image, image_id)
    if image is None:
        raise ImageNotFound(id=image_id)
    return image


SORTS: dict[str, Any] = {
    "created": Image.created_at,
    "name": Image.name,
    "size": Image.file_size,
    "status": Image.status,
    "format": Image.format,
}


def list_images(
    session: Session,
    params: PageParams,
    *,
    status: ImageStatus | None = None,
    fmt: str | None = None,
    image_type: ImageType | None = None,
    name: str | None = None,
    sort: str = "-created",
) -> tuple[list[Image], int]:
    """``sort`` is a key of SORTS, with a leading ``-`` for descending order."""
    column = SORTS.get(sort.lstrip("-"), Image.created_at)
    stmt = select(Image).order_by(column.desc() if sort.startswith("-") else column, Image.id)
    if name:
        stmt = stmt.where(Image.name.contains(name, autoescape=True))
    if status is not None:
        stmt = stmt.where(Image.status == status)
    if fmt:
        stmt = stmt.where(Image.format == fmt)
    if image_type is not None:
        stmt = stmt.where(Image.image_type == image_type)
    return paginate(session, stmt, params)


def conversion_status(session: Session, image_id: str) -> dict[str, Any]:
    image = get(session, image_id)
    body: dict[str, Any] = {
        "image_id": image.id,
        "status": image.status,
        "format": image.format,
        "target_format": image.target_format,
        "error": image.error,
        "job_id": image.job_id,
    }
    job = session.get(Job, image.job_id) if image.job_id else None
    if job is not None:
        body.update(
            job_kind=job.kind,
            job_status=job.status.value,
            percent=job.percent,
            bytes_done=job.bytes_done,
            bytes_total=job.bytes_total,
            rate_bytes_per_s=job.rate_bytes_per_s,
            eta_s=job.eta_s,
            message=job.message,
        )
    return body


# -- writing ------------------------------------------------------------------


def create(
    session: Session,
    settings: Settings,
    *,
    name: str,
    owner: str | None,
    source: str,
    image_type: ImageType = ImageType.system,
    target_format: str | None = None,
    claimed_format: str | None = None,
) -> Image:
    image = Image(
        name=name,
        image_type=image_type,
        owner=owner,
        source=source,
        target_format=target_format,
        status=ImageStatus.UPLOADING,
        details={"node": settings.NODE, "claimed_format": claimed_format},
    )
    session.add(image)
    session.commit()
    return image


def start_processing(settings: Settings, image_id: str, claimed: str | None) -> Image:
    """Inspect the staged bytes (headers only), then queue verification and conversion."""
    staged = staged_path(settings, image_id)
    try:
        inspection = inspect_staged(settings, staged, claimed)
    except UnsafeImage as exc:
        reject(settings, image_id, exc)
        exc.fields["image_id"] = image_id
        raise
    with session_scope(settings.DATABASE_URL) as s:
        image = get(s, image_id)
        image.status = ImageStatus.PROCESSING
        image.virtual_size = inspection.virtual_size
        image.details = {**image.details, "detected_format": inspection.format}
        job = jobs.submit(
            settings,
            "image-process",
            {"image_id": image_id},
            node=job_node(settings, staged=True),
            owner=image.owner,
            session=s,
        )
        image.job_id = job.id
    with session_scope(settings.DATABASE_URL) as s:
        image = get(s, image_id)
        s.expunge(image)
        return image


def _claim(session: Session, image_id: str, to: ImageStatus, action: str) -> Image:
    """READY (or, to retry a conversion, a stored ERROR image) -> ``to``, atomically."""
    image = get(session, image_id)
    allowed = [ImageStatus.READY]
    if to == ImageStatus.CONVERTING:
        allowed.append(ImageStatus.ERROR)
    claimed = updated_rows(
        session,
        update(Image)
        .where(Image.id == image_id, Image.status.in_(allowed), Image.storage_key.is_not(None))
        .values(status=to),
    )
    if not claimed:
        session.rollback()
        raise ImageBusy(
            id=image_id,
            status=image.status.value,
            detail=f"only a READY image with a stored file can be {action}; "
            "wait for its job or look at its error",
        )
    session.refresh(image)
    return image


def request_convert(
    session: Session,
    settings: Settings,
    image_id: str,
    target_format: str,
    *,
    compress: bool = False,
    owner: str | None,
) -> Image:
    image = get(session, image_id)
    refuse_if_used(session, image_id)
    if image.format == target_format and image.status == ImageStatus.READY and not compress:
        raise ImageBusy(
            id=image_id, status=image.status.value, detail=f"it is already {target_format}"
        )
    if image.format == "iso":
        raise ImageBusy(
            id=image_id, status=image.status.value, detail="ISO images are not converted"
        )
    previous = image.status
    image = _claim(session, image_id, ImageStatus.CONVERTING, "converted")
    params = {
        "image_id": image_id,
        "target_format": target_format,
        "compress": compress,
        "failure_status": previous.value,
    }
    job = jobs.submit(
        settings,
        "image-convert",
        params,
        node=job_node(settings, staged=False),
        owner=owner,
        session=session,
    )
    image.job_id = job.id
    session.commit()
    return image


def check_resize(settings: Settings, image: Image, size: int, force: bool) -> None:
    """Refuse what cannot work; the shrink data check runs here when the file is local."""
    if image.format not in files.RESIZABLE:
        raise ResizeRefused(
            id=image.id,
            detail=f"{image.format} images cannot be resized; convert to raw or qcow2 first",
        )
    if size > settings.MAX_VIRTUAL_SIZE:
        raise ResizeTooLarge(
            id=image.id,
            size=size,
            limit=settings.MAX_VIRTUAL_SIZE,
            setting="DISKVAULT_MAX_VIRTUAL_SIZE",
        )
    current = image.virtual_size or 0
    if size >= current:
        return
    if not force:
        raise ShrinkRefused(
            id=image.id,
            size=size,
            detail=f"it is {current} bytes; shrinking can lose data, pass force=true if the "
            "data fits",
        )
    path = ImageStore(settings).local_path(image.storage_key) if image.storage_key else None
    if path is not None and image.format is not None:
        lost = files.data_beyond(path, image.format, size, binary=settings.QEMU_IMG_PATH)
        if lost:
            raise ShrinkRefused(
                id=image.id, size=size, detail=f"{lost} bytes of data lie past the new end"
            )


def request_resize(
    session: Session,
    settings: Settings,
    image_id: str,
    size: int,
    *,
    force: bool,
    owner: str | None,
) -> Image:
    image = get(session, image_id)
    if image.status != ImageStatus.READY:
        raise ImageBusy(id=image_id, status=image.status.value, detail="only READY images resize")
    refuse_if_used(session, image_id)
    check_resize(settings, image, size, force)
    image = _claim(session, image_id, ImageStatus.PROCESSING, "resized")
    params = {"image_id": image_id, "size": size, "force": force, "failure_status": "READY"}
    job = jobs.submit(
        settings,
        "image-resize",
        params,
        node=job_node(settings, staged=False),
        owner=owner,
        session=session,
    )
    image.job_id = job.id
    session.commit()
    return image


def delete(session: Session, settings: Settings, image_id: str) -> None:
    image = get(session, image_id)
    if image.status.busy:
        raise ImageBusy(
            id=image_id,
            status=image.status.value,
            detail=f"cancel its job first (POST /api/v1/jobs/{image.job_id}/cancel)"
            if image.job_id
            else "wait for the upload to finish",
        )
    refuse_if_used(session, image_id)
    if image.storage_key:
        ImageStore(settings).delete(image.storage_key)
    for leftover in settings.temp_dir.glob(f"{image_id}*"):
        leftover.unlink(missing_ok=True)
    session.delete(image)
    session.commit()
    log.info("image deleted", image_id=image_id)
