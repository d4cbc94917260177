"""Job-side work on images: verify, publish, convert, checksum, resize, and failure handling.

Every function here runs inside a job (see :mod:`diskvault.images.tasks`).
Rules kept throughout:

- qemu-img sees a received file only after :func:`inspect_file` accepted its
  headers, and then ``qemu-img info`` (under prlimit) must agree.
- A conversion reads the source and writes ``<temp>/<image>-<job>.<fmt>.partial``;
  the output is renamed, hashed and published only when complete, and the source
  is dropped only after the image record points at the new file.
- On failure or cancel, :func:`settle_failure` removes partial outputs and keeps
  a verified source as the image's file, so the record always matches the store.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import structlog

from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.fsutil import fsync_path
from diskvault.images import files
from diskvault.images.digest import file_digest
from diskvault.images.errors import ShrinkRefused, UnsafeImage
from diskvault.images.inspect import check_with_qemu_img, verify_with_qemu_img
from diskvault.images.models import Image, ImageStatus
from diskvault.images.staging import inspect_staged, reject, staged_path, target_for, update_image
from diskvault.images.store import ImageStore
from diskvault.jobs.context import JobContext
from diskvault.tools import qemu_img

log = structlog.get_logger("diskvault.images")

# Share of a conversion job's progress bar given to qemu-img; the rest is the checksum.
CONVERT_SHARE = 0.8
HASHING = "computing SHA-256"


def _load(settings: Settings, image_id: str) -> Image:
    with session_scope(settings.DATABASE_URL) as s:
        image = s.get(Image, image_id)
        if image is None:
            raise RuntimeError(f"image {image_id} vanished while its job ran")
        s.expunge(image)
        return image


def _qemu_format(fmt: str | None) -> str:
    if fmt is None:
        raise RuntimeError("the image has no verified format")
    return "raw" if fmt == "iso" else fmt


def ingest(ctx: JobContext, image_id: str) -> dict[str, Any]:
    """Verify staged bytes, then publish them as they are or convert them to the target."""
    settings = ctx.settings
    store = ImageStore(settings)
    staged = staged_path(settings, image_id)
    image = _load(settings, image_id)
    update_image(settings, image_id, job_id=ctx.job_id, status=ImageStatus.PROCESSING)
    ctx.progress(message="inspecting the image", force=True)
    try:
        inspection = inspect_staged(settings, staged, image.details.get("claimed_format"))
        verify_with_qemu_img(staged, inspection, binary=settings.QEMU_IMG_PATH)
        check_with_qemu_img(staged, inspection, binary=settings.QEMU_IMG_PATH)
    except UnsafeImage as exc:
        reject(settings, image_id, exc)
        raise
    details = {**image.details, "inspection": inspection.details}
    common = {
        "format": inspection.format,
        "virtual_size": inspection.virtual_size,
        "sha256": image.source_sha256,  # the stored file is still the one received
        "file_size": staged.stat().st_size,
        "actual_size": files.allocated_bytes(staged),
        "details": details,
    }
    target = target_for(settings, image)
    # A raw file cut short of a sector is converted, which pads it as qemu reads it.
    padded = inspection.format == "raw" and common["file_size"] != inspection.virtual_size
    if inspection.format in (target, "iso") and not padded:
        digest = image.source_digest or _digest(ctx, staged)
        fsync_path(staged)
        key = store.new_key(image_id, inspection.format)
        store.publish(staged, key)
        common["details"] = {**details, "digest": digest}
        update_image(
            settings, image_id, status=ImageStatus.READY, storage_key=key, error=None, **common
        )
        return {"image_id": image_id, "format": inspection.format, "converted": False}
    update_image(settings, image_id, status=ImageStatus.CONVERTING, **common)
    result = _convert(
        ctx, store, image_id, staged, inspection.qemu_format, target, inspection.virtual_size
    )
    staged.unlink(missing_ok=True)
    return result


def convert(ctx: JobContext, image_id: str, target: str, *, compress: bool) -> dict[str, Any]:
    """Convert a stored image; the old file is deleted once the new one is recorded."""
    settings = ctx.settings
    store = ImageStore(settings)
    image = _load(settings, image_id)
    update_image(settings, image_id, job_id=ctx.job_id, status=ImageStatus.CONVERTING)
    if image.storage_key is None:
        raise RuntimeError(f"image {image_id} has no stored file to convert")
    with store.staged(image.storage_key) as src:
        return _convert(
            ctx,
            store,
            image_id,
            src,
            _qemu_format(image.format),
            target,
            image.virtual_size or 0,
            compress=compress,
        )


def _convert(
    ctx: JobContext,
    store: ImageStore,
    image_id: str,
    src: Path,
    src_fmt: str,
    target: str,
    virtual_size: int,
    *,
    compress: bool = False,
) -> dict[str, Any]:
    settings = ctx.settings
    out = ctx.cleanup_on_failure(store.temp_path(f"{image_id}-{ctx.job_id}.{target}"))
    label = f"converting {src_fmt} to {target}"

    def converted(pct: float) -> None:
        ctx.advance(label, int(virtual_size * pct / 100))

    # Converting and hashing overlap: one bar, bytes counted over both.
    ctx.plan((label, CONVERT_SHARE, virtual_size), (HASHING, 1 - CONVERT_SHARE, virtual_size))
    ctx.progress(percent=0, message=label, force=True)
    started = time.monotonic()
    digest = files.convert_file(
        src,
        src_fmt,
        out,
        target,
        binary=settings.QEMU_IMG_PATH,
        progress=converted,
        should_cancel=ctx.should_cancel,
        compress=compress,
        rate_limit=settings.IMAGE_CONVERT_RATE_LIMIT,
        digest=True,
        digest_progress=_hash_progress(ctx, virtual_size),
    )
    assert digest is not None
    timings = {"convert_s": round(time.monotonic() - started, 3)}
    info = qemu_img.info(out, target, binary=settings.QEMU_IMG_PATH)
    values = {
        "format": target,
        "target_format": target,  # what `image show` reports: the format it now has
        "virtual_size": int(info["virtual-size"]),
        "file_size": out.stat().st_size,
        "actual_size": files.allocated_bytes(out),
        "sha256": None,  # a plain SHA-256 would hash every hole: see ``digest``
        "digest": digest,
    }
    key = store.new_key(image_id, target)
    store.publish(out, key)
    _replace_file(settings, store, image_id, key, values)
    return {"image_id": image_id, "format": target, "converted": True, "digest": digest, **timings}


def _hash_progress(ctx: JobContext, size: int) -> files.Progress:
    """Progress for hashing: the :data:`HASHING` part of the job's plan."""

    def hashed(done: int) -> None:
        ctx.advance(HASHING, done)

    return hashed


def _digest(ctx: JobContext, path: Path) -> str:
    """The extents digest of ``path``: reads its data only, however large it is."""
    size = path.stat().st_size
    ctx.plan((HASHING, 1.0, size))
    ctx.progress(message=HASHING, force=True)
    value, _ = file_digest(
        path, progress=_hash_progress(ctx, size), should_cancel=ctx.should_cancel
    )
    return value


def _replace_file(
    settings: Settings, store: ImageStore, image_id: str, key: str, values: dict[str, Any]
) -> None:
    """Point the record at the new file, mark it READY, then delete the old file."""
    with session_scope(settings.DATABASE_URL) as s:
        image = s.get(Image, image_id)
        if image is None:  # deleted meanwhile: nothing refers to the new file
            store.delete(key)
            return
        old = image.storage_key
        for name, value in values.items():
            if name == "digest":
                image.details = {**image.details, "digest": value}
            else:
                setattr(image, name, value)
        image.storage_key = key
        image.status = ImageStatus.READY
        image.error = None
    if old and old != key:
        store.delete(old)


def resize(ctx: JobContext, image_id: str, size: int, *, force: bool) -> dict[str, Any]:
    settings = ctx.settings
    store = ImageStore(settings)
    image = _load(settings, image_id)
    update_image(settings, image_id, job_id=ctx.job_id)
    fmt = _qemu_format(image.format)
    assert image.storage_key is not None
    # Resize a copy (reflinked where the filesystem can), hash it, then swap it in:
    # a failure or a cancel at any point leaves the image exactly as it was.
    path = ctx.cleanup_on_failure(store.temp_path(f"{image_id}-{ctx.job_id}.{fmt}"))
    local = store.local_path(image.storage_key)
    if local is None:
        store.fetch(image.storage_key, path)
    else:
        files.copy_sparse(local, path)
    shrink = size < (image.virtual_size or 0)
    if shrink:
        lost = files.data_beyond(path, fmt, size, binary=settings.QEMU_IMG_PATH)
        if lost or not force:
            detail = f"{lost} bytes of data lie past the new end" if lost else "force is not set"
            raise ShrinkRefused(id=image_id, size=size, detail=detail)
    ctx.progress(message=f"resizing to {size} bytes", force=True)
    qemu_img.resize(path, fmt, size, shrink=shrink, binary=settings.QEMU_IMG_PATH)
    values = {
        "virtual_size": size,
        "file_size": path.stat().st_size,
        "actual_size": files.allocated_bytes(path),
        "sha256": None,
        "digest": _digest(ctx, path),
    }
    key = store.new_key(image_id, fmt)
    store.publish(path, key)
    _replace_file(settings, store, image_id, key, values)
    return {"image_id": image_id, "virtual_size": size}


def settle_failure(settings: Settings, job_id: str, params: dict[str, Any], message: str) -> None:
    """After a failed, cancelled or reaped job: drop partial outputs, keep a verified source.

    Runs in the job on cancel, and from the job system's failure hook otherwise,
    including when the reaper finds the worker died (then in another process).
    """
    image_id = params.get("image_id")
    if not image_id:
        return
    store = ImageStore(settings)
    for leftover in settings.temp_dir.glob(f"{image_id}-{job_id}*"):
        leftover.unlink(missing_ok=True)
    with session_scope(settings.DATABASE_URL) as s:
        image = s.get(Image, image_id)
        if image is None or (image.job_id and image.job_id != job_id):
            return  # a newer job owns the image now
        what = "processing"
        if image.status == ImageStatus.CONVERTING:
            what = f"conversion to {params.get('target_format') or target_for(settings, image)}"
        elif "size" in params:
            what = f"resize to {params['size']} bytes"
        staged = staged_path(settings, image_id)
        if staged.exists() and image.storage_key is None and image.format is not None:
            try:
                fsync_path(staged)
                key = store.new_key(image_id, image.format)
                store.publish(staged, key)
                image.storage_key = key
            except Exception:
                log.exception("could not keep the source of a failed image", image_id=image_id)
        staged.unlink(missing_ok=True)
        status = ImageStatus(params.get("failure_status") or ImageStatus.ERROR)
        if image.storage_key is None:
            status = ImageStatus.ERROR
        image.status = status
        image.error = f"{what} failed: {message}"
        if image.storage_key and status == ImageStatus.ERROR:
            image.error += f"; the {image.format} source is kept, POST .../convert to retry"
    log.warning("image job failed", image_id=image_id, job_id=job_id, error=message)


def settle_cancelled(settings: Settings, job_id: str, params: dict[str, Any], message: str) -> None:
    """A job cancelled while queued: nothing ran, so undo only the wait.

    An image that has no stored file yet (an upload or import waiting to be
    processed) ends ERROR with its received bytes deleted, so it can be deleted;
    a stored image goes back to the status it had before the job.
    """
    image_id = params.get("image_id")
    if not image_id:
        return
    with session_scope(settings.DATABASE_URL) as s:
        image = s.get(Image, image_id)
        if image is None or (image.job_id and image.job_id != job_id):
            return
        if image.storage_key is None:
            for leftover in settings.temp_dir.glob(f"{image_id}*"):
                leftover.unlink(missing_ok=True)
            image.status = ImageStatus.ERROR
            image.error = f"{message}; upload or import the image again"
        else:
            image.status = ImageStatus(params.get("failure_status") or ImageStatus.READY)
            image.error = message
    log.info("image job cancelled while queued", image_id=image_id, job_id=job_id)
