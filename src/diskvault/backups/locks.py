"""Per-disk locks that hold across processes and hosts: one row per locked disk.

A backup, a chain merge, a prune or a verify of a disk takes its lock, so two
runs never write the same chain. A holder is a job id (stale once the job has
ended, e.g. after the reaper failed a killed worker's job) or
``pid:<pid>:<host>:<uuid>`` for in-process callers (stale once that pid is gone).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from diskvault.backups.errors import DiskBusy
from diskvault.backups.models import DiskLock
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.jobs.models import Job
from diskvault.tools.process import Cancelled

POLL_S = 0.25


def lock_key(vm_name: str, disk: int) -> str:
    return f"{vm_name}/disk-{disk}"


def local_holder(settings: Settings) -> str:
    return f"pid:{os.getpid()}:{settings.NODE}:{uuid.uuid4().hex[:8]}"


def _stale(settings: Settings, holder: str) -> bool:
    if holder.startswith("pid:"):
        _, pid, node, _ = holder.split(":", 3)
        return node == settings.NODE and not os.path.exists(f"/proc/{pid}")
    with session_scope(settings.DATABASE_URL) as s:
        job = s.get(Job, holder)
        return job is None or job.status.finished


def try_acquire(settings: Settings, key: str, holder: str) -> str | None:
    """Take the lock and return None, or return who holds it."""
    for _ in range(2):
        try:
            with session_scope(settings.DATABASE_URL) as s:
                s.add(DiskLock(key=key, holder=holder))
            return None
        except IntegrityError:
            pass
        with session_scope(settings.DATABASE_URL) as s:
            current = s.scalar(select(DiskLock.holder).where(DiskLock.key == key))
        if current is None:
            continue
        if current == holder:
            return None
        if not _stale(settings, current):
            return current
        with session_scope(settings.DATABASE_URL) as s:
            s.execute(delete(DiskLock).where(DiskLock.key == key, DiskLock.holder == current))
    return "contended"


def release(settings: Settings, key: str, holder: str) -> None:
    with session_scope(settings.DATABASE_URL) as s:
        s.execute(delete(DiskLock).where(DiskLock.key == key, DiskLock.holder == holder))


@contextlib.contextmanager
def disk_lock(
    settings: Settings,
    key: str,
    holder: str,
    *,
    wait: bool = True,
    should_cancel: Callable[[], bool] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold ``key``; waits (cancellably, up to BACKUP_LOCK_WAIT_S) or raises DiskBusy."""
    deadline = time.monotonic() + settings.BACKUP_LOCK_WAIT_S
    while (current := try_acquire(settings, key, holder)) is not None:
        if not wait or time.monotonic() > deadline:
            raise DiskBusy(what=f"disk {key}", holder=f"held by {current}")
        if on_wait is not None:
            on_wait(current)
        if should_cancel is not None and should_cancel():
            raise Cancelled()
        time.sleep(POLL_S)
    try:
        yield
    finally:
        release(settings, key, holder)
