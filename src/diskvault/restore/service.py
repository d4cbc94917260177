"""File-level restore: the rules around mounts (DB rows) and their lifecycle.

A mount is made synchronously by the API request (it takes well under a second)
on the node that serves the request; browsing and downloading must reach that
node. Each browse or download extends the idle timeout; a per-node periodic sweep
unmounts what has been idle too long. A mounted restore point is "busy" for the
backups domain, so it cannot be deleted or merged until it is unmounted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from diskvault.backups import chain as backup_chain
from diskvault.backups import service as backups
from diskvault.config import Settings
from diskvault.db.base import new_id
from diskvault.db.engine import session_scope
from diskvault.db.pagination import PageParams, paginate
from diskvault.errors import DiskvaultError
from diskvault.restore import mounts
from diskvault.restore.errors import (
    MountBusy,
    MountFailed,
    MountNotActive,
    MountNotFound,
    MountOnOtherNode,
    TooManyMounts,
)
from diskvault.restore.models import ACTIVE, MountStatus, RestoreMount
from diskvault.tools import mount as mount_tool

log = structlog.get_logger("diskvault.restore")

HISTORY_DAYS = 7
KEEPALIVE_MAX_S = 60.0


def now() -> datetime:
    return datetime.now(UTC)


def mounted_by(session: Session, backup_id: str) -> str | None:
    """Busy check for the backups domain: deleting or merging a mounted point is a 409."""
    mount_id = session.scalar(
        select(RestoreMount.id)
        .where(RestoreMount.backup_id == backup_id, RestoreMount.status.in_(ACTIVE))
        .limit(1)
    )
    if mount_id is None:
        return None
    return f"mounted by restore mount {mount_id}; unmount it first (diskvault backup umount)"


backup_chain.register_busy_check(mounted_by)


# -- mount ---------------------------------------------------------------------------


def mount(session: Session, settings: Settings, backup_id: str, owner: str | None) -> RestoreMount:
    """Mount every filesystem of a restore point read-only; returns the mounted row."""
    mount_tool.require_mount_support()
    active = session.scalar(
        select(func.count())
        .select_from(RestoreMount)
        .where(RestoreMount.node == settings.NODE, RestoreMount.status.in_(ACTIVE))
    )
    if (active or 0) >= settings.RESTORE_MAX_MOUNTS:
        raise TooManyMounts(node=settings.NODE, count=active)
    point = backups.restore_point(session, backup_id)
    mount_id = new_id()
    workdir = settings.mount_root.resolve() / mount_id[:12]  # short: QMP socket path limit
    row = RestoreMount(
        id=mount_id,
        backup_id=point.id,
        vm_name=point.vm_name,
        disk_index=point.disk_index,
        node=settings.NODE,
        owner=owner,
        workdir=str(workdir),
        status=MountStatus.mounting,
    )
    session.add(row)
    session.commit()  # busy from here on: the chain cannot be merged under us
    try:
        attached = mounts.attach(
            workdir, point.image, point.format, settings.QEMU_STORAGE_DAEMON_PATH, point.crypt
        )
    except Exception as exc:  # attach() cleaned up; the row must not stay "mounting"
        row.status, row.reason, row.unmounted_at = MountStatus.failed, str(exc), now()
        session.commit()
        raise MountFailed(backup_id=point.id, detail=str(exc)) from exc
    row.qsd_pid = attached.qsd_pid
    row.loop_devices = attached.loops
    row.partitions = [p.as_dict() for p in attached.partitions]
    row.status = MountStatus.mounted
    stamp(settings, row)
    session.commit()
    log.info(
        "restore point mounted",
        mount_id=row.id,
        backup_id=point.id,
        mounted=[p.index for p in attached.partitions if p.mounted],
    )
    return row


def stamp(settings: Settings, row: RestoreMount) -> None:
    row.last_access = now()
    row.expires_at = row.last_access + timedelta(seconds=settings.RESTORE_IDLE_TIMEOUT_S)


# -- lookups -------------------------------------------------------------------------


def get(session: Session, mount_id: str) -> RestoreMount:
    row = session.get(RestoreMount, mount_id)
    if row is None:
        raise MountNotFound(id=mount_id)
    return row


def get_mounted(session: Session, settings: Settings, mount_id: str) -> RestoreMount:
    """A mount that can be browsed here, its idle timeout extended."""
    row = get(session, mount_id)
    if row.status == MountStatus.mounting:
        raise MountBusy(id=mount_id, status=row.status.value)
    if row.status != MountStatus.mounted:
        raise MountNotActive(
            id=mount_id,
            status=row.status.value,
            detail=row.reason or "no reason recorded",
            backup_id=row.backup_id,
        )
    if row.node != settings.NODE:
        raise MountOnOtherNode(id=mount_id, node=row.node, here=settings.NODE)
    stamp(settings, row)
    session.commit()
    return row


def list_mounts(
    session: Session, page: PageParams, *, include_ended: bool = False
) -> tuple[list[Any], int]:
    stmt = select(RestoreMount).order_by(RestoreMount.created_at.desc())
    if not include_ended:
        stmt = stmt.where(RestoreMount.status.in_(ACTIVE))
    return paginate(session, stmt, page)


def keepalive(settings: Settings, mount_id: str) -> Callable[[], None]:
    """A callback for long downloads: extends the idle timeout now and then."""
    every = min(KEEPALIVE_MAX_S, settings.RESTORE_IDLE_TIMEOUT_S / 4)
    last = [time.monotonic()]

    def touch() -> None:
        if time.monotonic() - last[0] < every:
            return
        last[0] = time.monotonic()
        at = now()
        with session_scope(settings.DATABASE_URL) as s:
            s.execute(
                update(RestoreMount)
                .where(RestoreMount.id == mount_id, RestoreMount.status == MountStatus.mounted)
                .values(
                    last_access=at,
                    expires_at=at + timedelta(seconds=settings.RESTORE_IDLE_TIMEOUT_S),
                )
            )

    return touch


# -- unmount, expiry, recovery -------------------------------------------------------


def unmount(
    session: Session,
    settings: Settings,
    mount_id: str,
    reason: str = "unmounted on request",
    *,
    idle_since: datetime | None = None,
) -> RestoreMount:
    """Tear a mount down (idempotent for one that already ended). With
    ``idle_since``, only if it has not been accessed since then."""
    row = get(session, mount_id)
    if row.status in (MountStatus.unmounted, MountStatus.failed):
        return row
    if row.node != settings.NODE:
        raise MountOnOtherNode(id=mount_id, node=row.node, here=settings.NODE)
    claim = update(RestoreMount).where(
        RestoreMount.id == mount_id, RestoreMount.status == MountStatus.mounted
    )
    if idle_since is not None:
        claim = claim.where(RestoreMount.expires_at < idle_since)
    claimed = session.execute(claim.values(status=MountStatus.unmounting))
    session.commit()
    if not getattr(claimed, "rowcount", 0):
        session.refresh(row)
        if row.status in (MountStatus.unmounted, MountStatus.failed):
            return row
        raise MountBusy(id=mount_id, status=row.status.value)
    problems = mounts.detach(Path(row.workdir))
    session.refresh(row)
    row.status = MountStatus.unmounted
    row.unmounted_at = now()
    row.reason = reason + (f"; cleanup problems: {'; '.join(problems)}" if problems else "")
    session.commit()
    log.info("restore point unmounted", mount_id=row.id, reason=reason)
    return row


def expire_idle(settings: Settings) -> list[str]:
    """Unmount this node's mounts idle past their timeout; returns their ids."""
    expired: list[str] = []
    cutoff = now()
    with session_scope(settings.DATABASE_URL) as s:
        ids = s.scalars(
            select(RestoreMount.id).where(
                RestoreMount.node == settings.NODE,
                RestoreMount.status == MountStatus.mounted,
                RestoreMount.expires_at < cutoff,
            )
        ).all()
        reason = f"expired after {settings.RESTORE_IDLE_TIMEOUT_S} s without access"
        for mount_id in ids:
            try:
                row = unmount(s, settings, mount_id, reason, idle_since=cutoff)
            except MountBusy:
                continue  # accessed just now, or someone else is tearing it down
            if row.status == MountStatus.unmounted:
                expired.append(mount_id)
        live = set(
            s.scalars(
                select(RestoreMount.workdir).where(
                    RestoreMount.node == settings.NODE, RestoreMount.status.in_(ACTIVE)
                )
            )
        )
        s.execute(
            delete(RestoreMount).where(
                RestoreMount.status.in_((MountStatus.unmounted, MountStatus.failed)),
                RestoreMount.updated_at < now() - timedelta(days=HISTORY_DAYS),
            )
        )
    for workdir in mounts.local_workdirs():
        if workdir not in live:  # torn down by another process on this node
            mounts.forget(Path(workdir))
    return expired


def recover(settings: Settings) -> int:
    """Start-up: clean what a crashed server left (mounts, loops, QSDs) under the
    mount root, and end the rows of this node that claimed to be mounted."""
    root = settings.mount_root
    leftovers = mounts.owned_workdirs(root) if root.exists() else []
    with session_scope(settings.DATABASE_URL) as s:
        ended = s.execute(
            update(RestoreMount)
            .where(RestoreMount.node == settings.NODE, RestoreMount.status.in_(ACTIVE))
            .values(
                status=MountStatus.unmounted,
                unmounted_at=now(),
                reason="cleaned up at start-up: the server stopped while it was mounted",
            )
        )
        count = int(getattr(ended, "rowcount", 0) or 0)
    for workdir in leftovers:
        mounts.detach(workdir)
    if leftovers or count:
        log.warning("cleaned up restore mounts left by a crash", dirs=len(leftovers), rows=count)
    return len(leftovers)


def shutdown(settings: Settings) -> None:
    """Unmount what this process mounted; nothing can browse it once we are gone."""
    with session_scope(settings.DATABASE_URL) as s:
        mine = mounts.local_workdirs()
        ids = s.scalars(
            select(RestoreMount.id).where(
                RestoreMount.workdir.in_(mine), RestoreMount.status == MountStatus.mounted
            )
        ).all()
        for mount_id in ids:
            try:
                unmount(s, settings, mount_id, "the server shut down")
            except DiskvaultError:
                log.exception("unmount at shutdown failed", mount_id=mount_id)
    for workdir in mounts.local_workdirs():
        mounts.forget(Path(workdir))
