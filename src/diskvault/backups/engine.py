"""One backup run of a source: for each disk, under the disk's lock, plan a full
or an incremental, copy into ``*.partial``, fsync and checksum it, rename, write
the sidecar, record, and only then advance the source's change tracking.

A failure or cancel removes the partial files and leaves the change tracking as
it was, so the next incremental covers every change since the last success.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from diskvault.backups import chain as chains
from diskvault.backups import checksums, keys, records
from diskvault.backups import repository as repo_files
from diskvault.backups.errors import RepositoryFull, SourceNotFound
from diskvault.backups.locks import disk_lock, lock_key
from diskvault.backups.models import (
    Backup,
    BackupChain,
    BackupRepository,
    BackupSource,
    BackupStatus,
)
from diskvault.backups.sources import SOURCES
from diskvault.backups.sources.base import (
    Copied,
    DiskSession,
    Kind,
    Previous,
    RunOptions,
    Source,
    Storage,
)
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.tools.process import Cancelled

log = structlog.get_logger("diskvault.backups")

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class RunRequest:
    vm_name: str
    repository_id: str
    requested: str = "auto"  # full | incremental | auto
    holder: str = ""
    job_id: str | None = None
    policy_id: str | None = None
    speed: int | None = None
    max_chain_length: int | None = None
    immutability_days: float | None = None
    compression: str | None = None  # the policy's, else the repository's
    merge_owner: str | None = None  # a policy id: merge away only the points it made


def run(
    settings: Settings,
    req: RunRequest,
    *,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] = lambda: False,
) -> list[str]:
    """Back up every disk of ``req.vm_name``; returns the new restore point ids."""
    with session_scope(settings.DATABASE_URL) as s:
        row = s.scalar(select(BackupSource).where(BackupSource.name == req.vm_name))
        if row is None:
            raise SourceNotFound(id=req.vm_name)
        source: Source = SOURCES[row.kind.value](row.name, dict(row.config))
    ids = []
    count = source.disk_count()
    for disk in range(count):
        label = f"disk {disk + 1}/{count}"

        def report(done: int, total: int, label: str = label) -> None:
            if progress is not None:
                progress(done, total, label)

        ids.append(_run_disk(settings, req, source, disk, report, should_cancel))
    return ids


def _previous(s: Session, root: Path, chain: BackupChain | None) -> Previous | None:
    if chain is None or chain.broken_reason or chain.latest_backup_id is None:
        return None
    head = s.get(Backup, chain.latest_backup_id)
    if head is None or head.path is None:
        return None
    image = root / head.path
    try:
        tracking = repo_files.read_sidecar(repo_files.sidecar_path(image)).get("tracking", {})
    except (OSError, ValueError):
        tracking = {}
    files = tuple(root / p.path for p in chains.ordered(s, chain.id) if p.path)
    return Previous(head.id, image, dict(tracking), head.total_bytes, files)


def _storage(repo: BackupRepository, req: RunRequest) -> Storage:
    """The key (checked before anything is written) and compression of a new point."""
    key = None
    if repo.encryption == keys.FORMAT:
        key = keys.resolve(repo, repo.key_fingerprint, f"a backup into repository {repo.name}")
    compression = req.compression or repo.compression
    if compression in (None, "none") or key is not None:  # see keys.check_combination
        return Storage(key, None)
    return Storage(None, compression)


def _want(
    s: Session,
    settings: Settings,
    req: RunRequest,
    chain: BackupChain | None,
    fingerprint: str | None,
) -> tuple[Kind, str | None, bool]:
    """What to ask the source for, a reason if that is a forced full, and whether
    to consolidate after the run."""
    if req.requested == "full":
        return "full", None, False
    if chain is not None and chain.broken_reason:
        return "full", f"the chain is damaged ({chain.broken_reason})", False
    if chain is None:
        return "incremental", None, False
    head = s.get(Backup, chain.latest_backup_id) if chain.latest_backup_id else None
    if head is not None and head.key_fingerprint != fingerprint:
        was, now = head.key_fingerprint or "none", fingerprint or "none"
        return "full", f"the repository's key changed from {was} to {now}: a new chain", False
    max_length = req.max_chain_length or settings.BACKUP_MAX_CHAIN_LENGTH
    points = chains.ordered(s, chain.id)
    if len(points) < max_length:
        return "incremental", None, False
    if max_length < 2:
        return "full", f"the maximum chain length is {max_length}", False
    why = chains.not_owned(points, req.merge_owner) or chains.blocked(s, points[:3], points)
    if why is None:
        return "incremental", None, True
    return (
        "full",
        f"the chain has {len(points)} points (maximum {max_length}) and merging is refused "
        f"({why}): the chain is cut with a new full",
        False,
    )


def _run_disk(
    settings: Settings,
    req: RunRequest,
    source: Source,
    disk: int,
    progress: Callable[[int, int], None],
    should_cancel: Callable[[], bool],
) -> str:
    backup_id = records.new_row(
        settings,
        vm_name=req.vm_name,
        disk=disk,
        repository_id=req.repository_id,
        requested=req.requested,
        job_id=req.job_id,
        policy_id=req.policy_id,
    )
    try:
        with disk_lock(
            settings, lock_key(req.vm_name, disk), req.holder, should_cancel=should_cancel
        ):
            _backup_disk(settings, req, source, disk, backup_id, progress, should_cancel)
    except BaseException as exc:
        status = BackupStatus.cancelled if isinstance(exc, Cancelled) else BackupStatus.failed
        records.mark_failed(settings, backup_id, status, str(exc) or type(exc).__name__)
        raise
    return backup_id


def _backup_disk(
    settings: Settings,
    req: RunRequest,
    source: Source,
    disk: int,
    backup_id: str,
    progress: Callable[[int, int], None],
    should_cancel: Callable[[], bool],
) -> None:
    with session_scope(settings.DATABASE_URL) as s:
        repo = s.get(BackupRepository, req.repository_id)
        assert repo is not None and repo.path is not None
        root = Path(repo.path)
        storage = _storage(repo, req)
        directory = repo_files.disk_dir(root, req.vm_name, disk)
        directory.mkdir(parents=True, exist_ok=True)
        repo_files.remove_partials(directory)
        fingerprint = storage.key.fingerprint if storage.key else None
        chain = chains.active_chain(s, repo.id, req.vm_name, disk)
        want, forced, consolidate = _want(s, settings, req, chain, fingerprint)
        previous = _previous(s, root, chain) if want == "incremental" else None
        repo_name = repo.name
        days = (
            req.immutability_days if req.immutability_days is not None else repo.immutability_days
        )
        retention = records.Retention(days, bool(repo.immutable_flag))
        records.mark_running(s, backup_id)
    opts = RunOptions(
        settings=settings,
        workdir=settings.temp_dir / "backup-work" / f"{req.vm_name}-disk{disk}",
        backup_id=backup_id,
        progress=progress,
        should_cancel=should_cancel,
        speed=req.speed,
        storage=storage,
    )
    session: DiskSession = source.open_disk(disk, opts)
    final: Path | None = None
    extras: dict[str, Path] = {}
    try:
        plan = session.plan(want, previous)
        final = directory / repo_files.new_point_name(directory, plan.backup_type, chains.now())
        records.start_row(
            settings,
            backup_id,
            plan,
            forced or plan.reason,
            final.relative_to(root),
            previous,
            fingerprint,
        )
        copied = session.copy(repo_files.partial(final), plan, previous)
        extras = copied.extra
        # For targets written by our daemons the only fsync (see daemon.TARGET_OPTIONS).
        sums = checksums.seal(
            {
                final.name: repo_files.partial(final),
                **{final.with_suffix(suffix).name: path for suffix, path in extras.items()},
            }
        )
        _publish(settings, backup_id, final, copied, sums, previous, source, retention, storage)
    except BaseException as exc:
        session.close()
        if final is not None:
            leftovers = [
                repo_files.partial(final),
                *extras.values(),
                *repo_files.point_files(final),
            ]
            for path in leftovers:
                path.unlink(missing_ok=True)
        if final is not None and isinstance(exc, Exception) and _no_space(exc):
            raise RepositoryFull(repository=repo_name, path=str(final)) from exc
        raise
    # The point is recorded: what follows only tidies up, and may be retried next run.
    try:
        with session_scope(settings.DATABASE_URL) as s:
            session.commit(records.keep_markers(s, req.vm_name, disk))
    except Exception:
        log.warning("could not advance change tracking", backup_id=backup_id, exc_info=True)
    finally:
        session.close()
    if consolidate:
        try:
            _consolidate(settings, req, backup_id)
        except Exception:
            log.warning("consolidation failed", backup_id=backup_id, exc_info=True)


def _no_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return "No space left on device" in str(exc) or "No space left" in getattr(exc, "stderr", "")


def _publish(
    settings: Settings,
    backup_id: str,
    final: Path,
    copied: Copied,
    sums: dict[str, Any],
    previous: Previous | None,
    source: Source,
    retention: records.Retention,
    storage: Storage,
) -> None:
    """The image under its final name, then its sidecar, then the DB row (a crash in
    between leaves files that the failure hook or the next run removes). ``sums`` are
    the checksums taken of the files, already flushed to disk, before the rename."""
    for suffix, path in copied.extra.items():
        os.replace(path, final.with_suffix(suffix))
    os.replace(repo_files.partial(final), final)
    repo_files.fsync_dir(final.parent)
    sidecar = {
        "source_kind": source.kind,
        "tracking": copied.tracking,
        "parent": {"file": previous.image.name} if previous else None,
        # What a reader needs: the key (by fingerprint) and the compression type.
        "encryption": (
            {"format": keys.FORMAT, "key_fingerprint": storage.key.fingerprint}
            if storage.key
            else None
        ),
        "compression": storage.compression,
    }
    records.complete(settings, backup_id, final, copied, sums, sidecar, retention)
    log.info("backup completed", backup_id=backup_id, file=str(final))


def _consolidate(settings: Settings, req: RunRequest, backup_id: str) -> None:
    max_length = req.max_chain_length or settings.BACKUP_MAX_CHAIN_LENGTH
    with session_scope(settings.DATABASE_URL) as s:
        point = s.get(Backup, backup_id)
        chain = s.get(BackupChain, point.chain_id) if point and point.chain_id else None
        if chain is not None:
            removed, why = chains.consolidate(s, settings, chain, max_length, req.merge_owner)
            log.info("chain consolidated", chain_id=chain.id, removed=removed, refused=why)
