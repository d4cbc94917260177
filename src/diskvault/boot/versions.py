"""Versions of golden images: list, roll back, delete, expire, and apply a writeback.

Version 1 is the image's own file, registered the first time a machine uses
the image. "Apply" flattens a machine's overlay chain (golden image plus its
writes) into a new raw file, written as ``*.partial`` and renamed when
complete, which becomes the current version. Machines pick it up at their
next boot, when their discard-mode layer is recreated on the current version.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from diskvault.boot import writeback
from diskvault.boot.errors import (
    ImageNotBootable,
    MachineBusy,
    MachineNotFound,
    VersionInUse,
    VersionNotFound,
)
from diskvault.boot.models import ImageVersion, Machine, MachineStatus
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.fsutil import fsync_dir
from diskvault.images.errors import ImageNotFound
from diskvault.images.models import Image, ImageStatus
from diskvault.images.store import ImageStore
from diskvault.jobs.context import JobContext
from diskvault.tools import qemu_img

log = structlog.get_logger("diskvault.boot")

VERSIONS_DIR = "versions"  # under IMAGE_STORAGE_PATH; image ids are hex, so no clash


def bootable_image(session: Session, settings: Settings, image_id: str) -> Image:
    """The image, if it can be booted here; else ImageNotBootable saying why."""
    image = session.get(Image, image_id)
    if image is None:
        raise ImageNotBootable(
            "it was deleted; point the machine at another image", image_id=image_id
        )
    if image.status != ImageStatus.READY:
        why = f": {image.error}" if image.error else "; wait for it to finish"
        raise ImageNotBootable(f"it is {image.status.value}, not READY{why}", image_id=image_id)
    if image.format != "raw":
        raise ImageNotBootable(
            f"its format is {image.format}; convert it to raw first", image_id=image_id
        )
    if not image.storage_key or ImageStore(settings).local_path(image.storage_key) is None:
        raise ImageNotBootable("it is not stored on this host's disk", image_id=image_id)
    return image


def current(session: Session, settings: Settings, image_id: str) -> ImageVersion:
    """The current version of a bootable image; registers version 1 on first use."""
    image = bootable_image(session, settings, image_id)
    stmt = select(ImageVersion).where(
        ImageVersion.image_id == image_id, ImageVersion.is_current.is_(True)
    )
    found = session.scalar(stmt)
    if found is not None:
        return found
    session.add(
        ImageVersion(
            image_id=image_id,
            version=1,
            is_current=True,
            virtual_size=image.virtual_size,
            comment="the image as imported",
            owner=image.owner,
        )
    )
    try:
        session.commit()
    except IntegrityError:  # registered by a concurrent request
        session.rollback()
    return session.scalars(stmt).one()


def get_version(session: Session, image_id: str, version: int) -> ImageVersion:
    stmt = select(ImageVersion).where(
        ImageVersion.image_id == image_id, ImageVersion.version == version
    )
    found = session.scalar(stmt)
    if found is None:
        raise VersionNotFound(image_id=image_id, version=version)
    return found


def file_path(session: Session, settings: Settings, version: ImageVersion) -> Path:
    if version.storage_key is not None:
        return settings.image_dir / version.storage_key
    image = bootable_image(session, settings, version.image_id)
    path = ImageStore(settings).local_path(image.storage_key or "")
    assert path is not None  # bootable_image checked it
    return path


def list_versions(session: Session, settings: Settings, image_id: str) -> list[ImageVersion]:
    """Newest first; a bootable image that never booted lists its version 1."""
    if session.get(Image, image_id) is None:
        raise ImageNotFound(id=image_id)
    stmt = select(ImageVersion).where(ImageVersion.image_id == image_id)
    if session.scalar(select(func.count()).select_from(stmt.subquery())) == 0:
        try:
            current(session, settings, image_id)
        except ImageNotBootable:
            return []
    return list(session.scalars(stmt.order_by(ImageVersion.version.desc())))


def users(session: Session, image_id: str, version: int) -> list[str]:
    """Names of machines whose writeback layer sits on this version."""
    stmt = select(Machine.name).where(
        Machine.image_id == image_id, Machine.layer_version == version
    )
    return sorted(session.scalars(stmt))


def rollback(session: Session, image_id: str, version: int) -> ImageVersion:
    """Make ``version`` current; machines boot it from their next boot on."""
    target = get_version(session, image_id, version)
    session.execute(
        update(ImageVersion).where(ImageVersion.image_id == image_id).values(is_current=False)
    )
    target.is_current = True
    session.commit()
    log.info("image version rolled back", image_id=image_id, version=version)
    return target


def _unlink(settings: Settings, version: ImageVersion) -> None:
    if version.storage_key is not None:
        path = settings.image_dir / version.storage_key
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # other versions of the image are still there
            path.parent.rmdir()


def delete_version(session: Session, settings: Settings, image_id: str, version: int) -> None:
    row = get_version(session, image_id, version)
    if row.is_current:
        raise VersionInUse(
            "it is the current version; roll back to another one first",
            image_id=image_id,
            version=version,
        )
    if row.storage_key is None:
        raise VersionInUse(
            "version 1 is the image's own file; delete the image instead",
            image_id=image_id,
            version=version,
        )
    if names := users(session, image_id, version):
        raise VersionInUse(
            f"the writeback layers of {', '.join(names)} sit on it; discard them first",
            image_id=image_id,
            version=version,
        )
    _unlink(settings, row)
    session.delete(row)
    session.commit()


def expire(settings: Settings, now: datetime | None = None) -> list[tuple[str, int]]:
    """Delete versions beyond the newest BOOT_VERSIONS_KEEP that are old enough and unused.

    The current version, version 1 and versions a machine's layer sits on are
    never removed. Versions of deleted images go as soon as nothing uses them.
    """
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=settings.BOOT_VERSION_MIN_AGE_S)
    removed: list[tuple[str, int]] = []
    with session_scope(settings.DATABASE_URL) as session:
        image_ids = list(session.scalars(select(ImageVersion.image_id).distinct()))
        for image_id in image_ids:
            rows = session.scalars(
                select(ImageVersion)
                .where(ImageVersion.image_id == image_id)
                .order_by(ImageVersion.version.desc())
            ).all()
            orphan = session.get(Image, image_id) is None
            for index, row in enumerate(rows):
                if not orphan and (
                    index < settings.BOOT_VERSIONS_KEEP
                    or row.is_current
                    or row.storage_key is None
                    or row.created_at > cutoff
                ):
                    continue
                if users(session, image_id, row.version):
                    continue
                _unlink(settings, row)
                session.delete(row)
                removed.append((image_id, row.version))
    if removed:
        log.info("expired image versions", versions=removed)
    return removed


def record_version(
    session: Session, machine: Machine, key: str, size: int, ctx: JobContext
) -> ImageVersion:
    """Insert the new version as current; the unique (image, version) key settles races."""
    for _ in range(5):
        latest = session.scalar(
            select(func.max(ImageVersion.version)).where(ImageVersion.image_id == machine.image_id)
        )
        session.execute(
            update(ImageVersion)
            .where(ImageVersion.image_id == machine.image_id)
            .values(is_current=False)
        )
        row = ImageVersion(
            image_id=machine.image_id,
            version=(latest or 0) + 1,
            storage_key=key,
            comment=ctx.params.get("comment"),
            parent_version=machine.layer_version,
            is_current=True,
            virtual_size=size,
            source_machine_id=machine.id,
            job_id=ctx.job_id,
            owner=ctx.params.get("owner"),
        )
        session.add(row)
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            machine = session.get(Machine, machine.id) or machine
            continue
        return row
    raise MachineBusy(
        "other versions were being added at the same time; apply again",
        name=machine.name,
        status=machine.status.value,
    )


def new_version_key(image_id: str) -> str:
    return f"{VERSIONS_DIR}/{image_id}/{secrets.token_hex(8)}.raw"


def apply_writeback(ctx: JobContext) -> dict[str, Any]:
    """Job body: merge the machine's layer into a new current version of its image."""
    settings = ctx.settings
    machine_id = ctx.params["machine_id"]
    with session_scope(settings.DATABASE_URL) as session:
        machine = session.get(Machine, machine_id)
        if machine is None:
            raise MachineNotFound(id=machine_id)
        if machine.status != MachineStatus.APPLYING:
            raise MachineBusy(
                "it is not waiting for an apply", name=machine.name, status=machine.status.value
            )
        image_id = machine.image_id
        bootable_image(session, settings, image_id)
    # Stopping the daemon flushes the overlay and keeps anyone from writing while we read.
    writeback.stop(settings, machine_id)
    overlay = writeback.layer_paths(settings, machine_id).overlay
    size = int(qemu_img.info(overlay, "qcow2", binary=settings.QEMU_IMG_PATH)["virtual-size"])
    key = new_version_key(image_id)
    dest = settings.image_dir / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = ctx.cleanup_on_failure(dest.with_name(dest.name + ".partial"))
    ctx.progress(0, size, message="merging the writeback into a new version", force=True)
    qemu_img.convert(
        overlay,
        "qcow2",
        partial,
        "raw",
        progress=ctx.percent_callback(size),
        should_cancel=ctx.should_cancel,
        binary=settings.QEMU_IMG_PATH,
    )
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, dest)
    ctx.keep(partial)
    fsync_dir(dest.parent)
    try:
        with session_scope(settings.DATABASE_URL) as session:
            machine = session.get(Machine, machine_id)
            if machine is None:
                raise MachineNotFound(id=machine_id)
            row = record_version(session, machine, key, size, ctx)
            machine.status, machine.error, machine.error_code = MachineStatus.READY, None, None
            machine.reset_pending = True  # its writes are in the new version now
            version = row.version
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    ctx.progress(size, size, message=f"version {version} is current", force=True)
    log.info("writeback applied", machine_id=machine_id, image_id=image_id, version=version)
    return {"image_id": image_id, "version": version, "machine_id": machine_id}


def apply_failed(settings: Settings, job_id: str, params: dict[str, Any], error: str) -> None:
    """Failure hook: the machine leaves APPLYING; its writeback is untouched."""
    with session_scope(settings.DATABASE_URL) as session:
        machine = session.get(Machine, params.get("machine_id", ""))
        if machine is None or machine.status != MachineStatus.APPLYING:
            return
        machine.status = MachineStatus.ERROR
        machine.error = f"applying the writeback failed (job {job_id}): {error}; it is unchanged"
        machine.error_code = "apply"
