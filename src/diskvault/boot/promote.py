"""Promote an instant recovery: restore point plus the guest's writes, as a new disk.

The copy is taken by the recovery's own qemu-storage-daemon (a ``blockdev-backup``
of its overlay node through the layer's control monitor), so the guest keeps
running and the copy is one point in time. A new library image or a disk file
(any ``qemu-img`` format, inside BACKUP_RESTORE_ROOTS) is written via
``*.partial`` and renamed once complete; the chain's files are only read.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from diskvault.backups import restore
from diskvault.backups import service as backups
from diskvault.boot import recovery, writeback
from diskvault.boot.errors import WritebackError
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.errors import Unprocessable
from diskvault.jobs import service as jobs
from diskvault.jobs.context import JobContext
from diskvault.jobs.models import Job
from diskvault.tools import qemu_img, qmp_block
from diskvault.tools.qsd import QsdError

DEST_NODE = "promote-dst"


def request(
    session: Session,
    settings: Settings,
    recovery_id: str,
    *,
    to: str,
    name: str | None,
    path: str | None,
    fmt: str,
    owner: str | None,
) -> Job:
    """Check the destination now (so a bad one is a 4xx, not a failed job), then queue."""
    rec = recovery.get(session, recovery_id)
    if to == "file":
        if fmt not in restore.FORMATS:
            raise Unprocessable(f"format {fmt!r} is not one of {', '.join(restore.FORMATS)}")
        restore.check_destination(settings, path or "")
    elif not name:
        raise Unprocessable("give 'name' for the new image")
    params = {"recovery_id": rec.id, "to": to, "name": name, "path": path, "format": fmt}
    return jobs.submit(settings, recovery.PROMOTE_JOB, params, node=rec.node, owner=owner)


def _overlay_node(client: qmp_block.BlockClient, overlay: Path) -> str:
    for node in client.qmp("query-named-block-nodes", flat=True):
        if node.get("drv") == "qcow2" and node.get("file") == str(overlay):
            return str(node["node-name"])
    raise WritebackError(machine=overlay.parent.name, detail="its overlay node was not found")


def snapshot(
    settings: Settings,
    layer: str,
    dest: Path,
    size: int,
    *,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> None:
    """A self-contained qcow2 at ``dest`` with what the layer's disk holds right now."""
    paths = writeback.layer_paths(settings, layer)
    qemu_img.create(dest, "qcow2", size, binary=settings.QEMU_IMG_PATH)
    if not writeback.running(settings, layer):
        # Nothing writes to the overlay: a plain conversion reads it consistently.
        dest.unlink()
        qemu_img.convert(
            paths.overlay, "qcow2", dest, "qcow2", should_cancel=should_cancel,
            binary=settings.QEMU_IMG_PATH,
        )  # fmt: skip
        return
    client = qmp_block.connect(paths.control, name="promote")
    try:
        source = _overlay_node(client, paths.overlay)
        client.blockdev_add(DEST_NODE, "qcow2", filename=dest)
        try:
            job = f"promote-{layer[-8:]}"
            client.blockdev_backup(job, source, DEST_NODE, sync="full")
            client.wait_job(job, progress=progress, should_cancel=should_cancel)
        finally:
            with contextlib.suppress(QsdError):
                client.blockdev_del(DEST_NODE)
    finally:
        client.close()


def run(ctx: JobContext) -> dict[str, Any]:
    settings, params = ctx.settings, ctx.params
    with session_scope(settings.DATABASE_URL) as s:
        rec = recovery.get(s, params["recovery_id"])
        layer, point_id = recovery.layer_key(rec.id), rec.backup_id
        size = backups.get_backup(s, point_id).total_bytes
        owner = rec.owner

    def bytes_done(done: int, total: int) -> None:
        ctx.progress(done, total, message="copying the recovered disk")

    copy: dict[str, Any] = {"progress": bytes_done, "should_cancel": ctx.should_cancel}
    if params["to"] == "image":
        from diskvault.images import service as images

        with session_scope(settings.DATABASE_URL) as s:
            row = images.create(
                s, settings, name=params["name"], owner=owner,
                source=f"recovery:{params['recovery_id']}", claimed_format="qcow2",
            )  # fmt: skip
            image_id = row.id
        try:
            snapshot(settings, layer, images.staged_path(settings, image_id), size, **copy)
        except Exception as exc:
            images.reject(settings, image_id, exc)
            raise
        images.start_processing(settings, image_id, "qcow2")
        return {"to": "image", "image_id": image_id, "backup_id": point_id}
    dest = restore.check_destination(settings, params["path"])
    fmt = params["format"]
    part = dest.with_name(dest.name + ".partial")
    staged = part if fmt == "qcow2" else dest.with_name(dest.name + ".partial.qcow2")
    try:
        snapshot(settings, layer, staged, size, **copy)
        if staged != part:
            qemu_img.convert(staged, "qcow2", part, fmt, binary=settings.QEMU_IMG_PATH)
            if not qemu_img.compare(staged, part, "qcow2", fmt, binary=settings.QEMU_IMG_PATH):
                raise WritebackError(machine=layer, detail=f"{dest} differs from the snapshot")
        with open(part, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
        staged.unlink(missing_ok=True)
    return {"to": "file", "path": str(dest), "format": fmt, "backup_id": point_id}
