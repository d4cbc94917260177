"""Promote an instant recovery: restore point plus the guest's writes, as a new disk.

The copy is taken by the recovery's own qemu-storage-daemon (a ``blockdev-backup``
of its overlay node through the layer's control monitor), so the guest keeps
running and the copy is one point in time. A new library image or a disk file
(any ``qemu-img`` format, inside BACKUP_RESTORE_ROOTS) is written via
``*.partial`` and renamed once complete; the chain's files are only read.

Moving the machine over: ``to: "version"`` adds the copy as the new current
version of the machine's golden image (as "apply writeback" does), and
``switch`` with ``to: "image"`` points the machine at the new image. Either
way the machine gets a fresh writeback layer on it at its first boot after
the recovery ends; while the recovery lives, its MAC still boots the point.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.orm import Session

from diskvault.backups import restore
from diskvault.backups import service as backups
from diskvault.boot import recovery, versions, writeback
from diskvault.boot import service as machines
from diskvault.boot.errors import WritebackError
from diskvault.boot.models import Machine, Recovery
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.errors import Conflict, Unprocessable
from diskvault.fsutil import fsync_dir
from diskvault.jobs import service as jobs
from diskvault.jobs.context import JobContext
from diskvault.jobs.models import Job
from diskvault.tools import qemu_img, qmp_block
from diskvault.tools.qsd import QsdError

DEST_NODE = "promote-dst"
log = structlog.get_logger("diskvault.boot")


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
    comment: str | None = None,
    switch: bool = False,
) -> Job:
    """Check the destination now (so a bad one is a 4xx, not a failed job), then queue."""
    rec = recovery.get(session, recovery_id)
    if to == "file":
        if fmt not in restore.FORMATS:
            raise Unprocessable(f"format {fmt!r} is not one of {', '.join(restore.FORMATS)}")
        restore.check_destination(settings, path or "")
    elif to == "image" and not name:
        raise Unprocessable("give 'name' for the new image")
    if to == "file" and switch:
        raise Unprocessable("'switch' moves a machine onto a new image; a file cannot be booted")
    if to == "version" or switch:
        machine = _machine_of(session, rec)
        if to == "version":
            versions.bootable_image(session, settings, machine.image_id)
    params = {
        "recovery_id": rec.id, "to": to, "name": name, "path": path, "format": fmt,
        "comment": comment, "switch": switch, "owner": owner,
    }  # fmt: skip
    return jobs.submit(settings, recovery.PROMOTE_JOB, params, node=rec.node, owner=owner)


def _machine_of(session: Session, rec: Recovery) -> Machine:
    machine = session.get(Machine, rec.machine_id) if rec.machine_id else None
    if machine is None:
        raise Conflict(
            f"recovery {rec.id} boots MAC {rec.mac} as a temporary machine, so there is no "
            "machine to move; promote to an image or a file, or start the recovery with 'machine'"
        )
    return machine


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
    if params["to"] == "version":
        return {**_to_version(ctx, layer, size, copy), "backup_id": point_id}
    if params["to"] == "image":
        from diskvault.images import service as images

        switch = bool(params.get("switch"))
        with session_scope(settings.DATABASE_URL) as s:
            row = images.create(
                s, settings, name=params["name"], owner=owner,
                source=f"recovery:{params['recovery_id']}", claimed_format="qcow2",
                target_format="raw" if switch else None,  # machines boot raw images
            )  # fmt: skip
            image_id = row.id
        try:
            snapshot(settings, layer, images.staged_path(settings, image_id), size, **copy)
        except Exception as exc:
            images.reject(settings, image_id, exc)
            raise
        images.start_processing(settings, image_id, "qcow2")
        result = {"to": "image", "image_id": image_id, "backup_id": point_id}
        if switch:
            result["machine_id"] = _switch_machine(settings, params["recovery_id"], image_id)
        return result
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


def _switch_machine(settings: Settings, recovery_id: str, image_id: str) -> str:
    """Point the recovery's machine at the new image; its next normal boot starts afresh on it."""
    with session_scope(settings.DATABASE_URL) as s:
        machine = _machine_of(s, recovery.get(s, recovery_id))
        machines.update_machine(s, settings, machine.id, image_id=image_id)
        log.info("machine moved to promoted image", machine=machine.name, image_id=image_id)
        return machine.id


def _to_version(ctx: JobContext, layer: str, size: int, copy: dict[str, Any]) -> dict[str, Any]:
    """Write the recovered disk as the new current version of the machine's golden image."""
    settings, params = ctx.settings, ctx.params
    with session_scope(settings.DATABASE_URL) as s:
        machine = _machine_of(s, recovery.get(s, params["recovery_id"]))
        image_id = machine.image_id
        versions.bootable_image(s, settings, image_id)
    key = versions.new_version_key(image_id)
    dest = settings.image_dir / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = ctx.cleanup_on_failure(dest.with_name(dest.name + ".partial.qcow2"))
    part = ctx.cleanup_on_failure(dest.with_name(dest.name + ".partial"))
    try:
        snapshot(settings, layer, staged, size, **copy)
        qemu_img.convert(staged, "qcow2", part, "raw", binary=settings.QEMU_IMG_PATH)
    finally:
        staged.unlink(missing_ok=True)
    with open(part, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(part, dest)
    ctx.keep(part)
    fsync_dir(dest.parent)
    try:
        with session_scope(settings.DATABASE_URL) as s:
            machine = _machine_of(s, recovery.get(s, params["recovery_id"]))
            row = versions.record_version(s, machine, key, size, ctx)
            machine.reset_pending = True  # its old layer sat on the previous version
            version = row.version
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    log.info("recovery promoted to a version", image_id=image_id, version=version)
    return {"to": "version", "image_id": image_id, "version": version, "machine_id": machine.id}
