"""Node-local upkeep: boot sessions ending, writeback storage running full, start and stop.

A boot session opens with the boot script request and ends once its machine's
target has no iSCSI session any more (or it never logged in within
BOOT_SESSION_CONNECT_TIMEOUT_S). Free space on WRITEBACK_PATH is watched
because a full disk makes every booted machine's writes fail: the machines
get a clear error, which clears itself once there is room again.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import select

from diskvault.boot import recovery, service, verify, writeback
from diskvault.boot.errors import WritebackFull
from diskvault.boot.models import BootSession, Machine, MachineStatus
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.errors import DiskvaultError

log = structlog.get_logger("diskvault.boot")

STORAGE_FULL = "storage_full"


def check_sessions(settings: Settings, now: datetime | None = None) -> int:
    """Mark logins seen and end sessions whose login is gone; returns how many ended."""
    now = now or datetime.now(UTC)
    never = now - timedelta(seconds=settings.BOOT_SESSION_CONNECT_TIMEOUT_S)
    ended = 0
    with session_scope(settings.DATABASE_URL) as session:
        rows = session.execute(
            select(BootSession, Machine)
            .join(Machine, Machine.id == BootSession.machine_id)
            .where(BootSession.ended_at.is_(None), Machine.node == settings.NODE)
        ).all()
        for boot, machine in rows:
            try:
                initiators = service.logged_in(session, settings, machine)
            except DiskvaultError:
                continue  # backend unreachable: no evidence either way
            if initiators:
                if boot.connected_at is None:
                    boot.connected_at, boot.initiator = now, initiators[0]
            elif boot.connected_at is not None:
                boot.ended_at, boot.end_reason = now, "the initiator logged out"
                ended += 1
            elif boot.started_at < never:
                boot.ended_at = now
                boot.end_reason = "no login to its disk was seen"
                ended += 1
    return ended


def check_storage(settings: Settings) -> list[str]:
    """Flag (or clear) the storage-full error on this node's machines; returns flagged names."""
    free = writeback.free_bytes(settings)
    low = free < settings.BOOT_WRITEBACK_MIN_FREE_BYTES
    flagged = []
    with session_scope(settings.DATABASE_URL) as session:
        machines = session.scalars(select(Machine).where(Machine.node == settings.NODE)).all()
        for m in machines:
            if low and m.status == MachineStatus.READY and m.layer_version is not None:
                full = WritebackFull(
                    path=str(settings.writeback_dir),
                    free=free,
                    detail="writes from booted machines fail once nothing is left",
                )
                m.status, m.error, m.error_code = MachineStatus.ERROR, full.message, STORAGE_FULL
                flagged.append(m.name)
            elif not low and m.error_code == STORAGE_FULL:
                m.status, m.error, m.error_code = MachineStatus.READY, None, None
        flagged += recovery.flag_storage(session, settings, free if low else None)
    if flagged:
        log.warning("writeback storage is running full", free=free, machines=flagged)
    return flagged


def startup(settings: Settings) -> None:
    """Clean up after a crash, then bring this node's layers and targets back."""
    writeback.cleanup_stale(settings)
    verify.cleanup_stale(settings)
    with session_scope(settings.DATABASE_URL) as session:
        machines = session.scalars(
            select(Machine).where(Machine.node == settings.NODE, Machine.layer_version.is_not(None))
        ).all()
        for machine in machines:
            with service.machine_lock(machine.id), contextlib.suppress(DiskvaultError):
                service.serve(session, settings, machine, fresh=False)
        recovery.startup(session, settings)


def shutdown(settings: Settings) -> None:
    writeback.stop_all(settings)
