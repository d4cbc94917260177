"""Job kinds of the image library, and its periodic clean-up."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.images import engine, importer, service, staging, urls
from diskvault.images.models import Image, ImageStatus
from diskvault.jobs.context import JobContext
from diskvault.jobs.registry import FailureHook, job_kind
from diskvault.jobs.scheduler import periodic
from diskvault.tools.process import Cancelled

ON_FAILURE: FailureHook = engine.settle_failure
ON_CANCEL: FailureHook = engine.settle_cancelled


def _guarded(ctx: JobContext, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Cancelled jobs skip the failure hook, so settle the image here before re-raising.

    A job a clean stop interrupted is left as it is: it is requeued and starts again
    from its staged or stored source.
    """
    try:
        return work()
    except Cancelled:
        if not ctx.interrupted:
            engine.settle_failure(ctx.settings, ctx.job_id, ctx.params, "cancelled by request")
        raise


@job_kind("image-process", max_attempts=1, on_failure=ON_FAILURE, on_cancel=ON_CANCEL)
def process(ctx: JobContext) -> dict[str, Any]:
    """Verify an uploaded image, then publish or convert it."""
    return _guarded(ctx, lambda: engine.ingest(ctx, ctx.params["image_id"]))


@job_kind("image-import", max_attempts=1, on_failure=ON_FAILURE, on_cancel=ON_CANCEL)
def import_image(ctx: JobContext) -> dict[str, Any]:
    """Copy a server path or download a URL into the temp area, then process it."""

    def work() -> dict[str, Any]:
        settings = ctx.settings
        image_id = ctx.params["image_id"]
        partial = ctx.cleanup_on_failure(staging.partial_path(settings, image_id))
        ctx.progress(message="fetching", force=True)
        if ctx.params.get("path"):
            size, sha = importer.copy_path(settings, ctx.params["path"], partial)
        else:
            size, sha = urls.fetch_url(
                settings,
                ctx.params["url"],
                partial,
                limit=staging.max_file_bytes(settings),
                progress=lambda done, total: ctx.progress(done, total, message="downloading"),
                should_cancel=ctx.should_cancel,
            )
        os.replace(partial, staging.staged_path(settings, image_id))
        staging.update_image(
            settings,
            image_id,
            status=ImageStatus.PROCESSING,
            file_size=size,
            source_sha256=sha,
        )
        return engine.ingest(ctx, image_id)

    return _guarded(ctx, work)


@job_kind("image-convert", max_attempts=1, on_failure=ON_FAILURE, on_cancel=ON_CANCEL)
def convert(ctx: JobContext) -> dict[str, Any]:
    """Convert a stored image to ``target_format``."""
    p = ctx.params
    return _guarded(
        ctx,
        lambda: engine.convert(
            ctx, p["image_id"], p["target_format"], compress=bool(p.get("compress"))
        ),
    )


@job_kind("image-resize", max_attempts=1, on_failure=ON_FAILURE, on_cancel=ON_CANCEL)
def resize(ctx: JobContext) -> dict[str, Any]:
    p = ctx.params
    return _guarded(
        ctx, lambda: engine.resize(ctx, p["image_id"], int(p["size"]), force=bool(p["force"]))
    )


@periodic("images-stale-uploads", 60, per_node=True)
def stale_uploads(settings: Settings) -> None:
    fail_stale_uploads(settings)


def fail_stale_uploads(settings: Settings) -> int:
    """Uploads whose bytes stopped arriving (the client left, or the server restarted)."""
    now = time.time()
    failed = 0
    with session_scope(settings.DATABASE_URL) as s:
        rows = s.scalars(
            select(Image).where(Image.status == ImageStatus.UPLOADING, Image.job_id.is_(None))
        ).all()
        for image in rows:
            if image.details.get("node") != settings.NODE:
                continue
            partial = staging.partial_path(settings, image.id)
            touched = partial.stat().st_mtime if partial.exists() else image.updated_at.timestamp()
            if now - touched > service.STALE_UPLOAD_S:
                partial.unlink(missing_ok=True)
                image.status = ImageStatus.ERROR
                image.error = "the upload was interrupted before all bytes arrived; upload again"
                failed += 1
    return failed
