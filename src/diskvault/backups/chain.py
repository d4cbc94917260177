"""Chains in the DB and on disk: ordering, sidecars, and the merges that remove a
restore point without changing the content of any other.

- Deleting an incremental with a child: ``qemu-img rebase`` (safe mode) of the
  child onto the point's parent copies into the child every cluster whose
  content would change, then the point is removed.
- Deleting a full with a child (also how consolidation makes a synthetic full):
  ``qemu-img commit`` of the child into the full, so the full's file now holds
  the child's content; it takes the child's ``full-<stamp>`` name and the
  grandchild's backing name is updated (an unsafe rebase: same content).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from diskvault.backups import checksums, keys
from diskvault.backups import repository as repo_files
from diskvault.backups.errors import PointImmutable, PointInUse, RepositoryNotFound
from diskvault.backups.keys import Key
from diskvault.backups.models import (
    Backup,
    BackupChain,
    BackupRepository,
    BackupStatus,
    BackupType,
)
from diskvault.config import Settings
from diskvault.tools import qemu_img

BusyCheck = Callable[[Session, str], str | None]
_busy_checks: list[BusyCheck] = []


def register_busy_check(fn: BusyCheck) -> None:
    """``fn(session, backup_id)`` returns why a restore point is in use (e.g. mounted)
    or None. Deleting or merging a point whose files a busy point uses gives 409."""
    if fn not in _busy_checks:
        _busy_checks.append(fn)


def busy_reason(session: Session, backup_id: str) -> str | None:
    for check in _busy_checks:
        if reason := check(session, backup_id):
            return reason
    return None


def now() -> datetime:
    return datetime.now(UTC)


def root_of(session: Session, repository_id: str) -> Path:
    repo = session.get(BackupRepository, repository_id)
    if repo is None or repo.path is None:
        raise RepositoryNotFound(id=repository_id)
    return Path(repo.path)


def point_key(session: Session, point: Backup) -> Key | None:
    """The key an encrypted point's files open with (KeyUnavailable if it is missing)."""
    if not point.key_fingerprint:
        return None
    repo = session.get(BackupRepository, point.repository_id)
    if repo is None:
        raise RepositoryNotFound(id=point.repository_id)
    return keys.resolve(repo, point.key_fingerprint, f"restore point {point.id}")


def image_of(session: Session, point: Backup) -> Path:
    assert point.path is not None
    return root_of(session, point.repository_id) / point.path


def ordered(session: Session, chain_id: str) -> list[Backup]:
    """The completed points of a chain, from its full to its head, by parent links."""
    return ordered_many(session, [chain_id]).get(chain_id, [])


def ordered_many(session: Session, chain_ids: list[str]) -> dict[str, list[Backup]]:
    """``ordered`` for several chains in one query."""
    rows = session.scalars(
        select(Backup)
        .where(Backup.chain_id.in_(chain_ids), Backup.status == BackupStatus.completed)
        .order_by(Backup.created_at)
    )
    by_chain: dict[str, list[Backup]] = {}
    for row in rows:
        by_chain.setdefault(row.chain_id or "", []).append(row)
    return {chain_id: _by_links(points) for chain_id, points in by_chain.items()}


def _by_links(rows: list[Backup]) -> list[Backup]:
    children = {r.parent_backup_id: r for r in rows}
    out: list[Backup] = []
    node = next((r for r in rows if r.parent_backup_id is None), None)
    while node is not None and len(out) < len(rows):
        out.append(node)
        node = children.get(node.id)
    return out


def active_chain(session: Session, repository_id: str, vm: str, disk: int) -> BackupChain | None:
    return session.scalar(
        select(BackupChain)
        .where(
            BackupChain.repository_id == repository_id,
            BackupChain.vm_name == vm,
            BackupChain.disk_index == disk,
            BackupChain.latest_backup_id.is_not(None),
        )
        .order_by(BackupChain.created_at.desc())
        .limit(1)
    )


def refresh(session: Session, chain: BackupChain) -> None:
    """Recompute the chain row from its points; an empty chain row is deleted."""
    points = ordered(session, chain.id)
    if not points:
        session.delete(chain)
        return
    chain.full_backup_id = points[0].id
    chain.latest_backup_id = points[-1].id
    chain.total_backups = len(points)
    chain.total_size_bytes = sum(p.file_size for p in points)
    chain.updated_at = now()


# -- sidecars -------------------------------------------------------------------


def sidecar(
    point: Backup,
    *,
    base: dict[str, Any],
    image: Path,
    sums: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The sidecar for ``point`` as stored now: ``base`` holds what only the run knows;
    ``sums`` are checksums just taken of the point's files, else they are read now."""
    parent_file = base.get("parent", {}) or {}
    if sums is None:
        sums = {image.name: checksums.digest_file(image)}
        extra = repo_files.hashmap_path(image)
        if extra.exists():
            sums[extra.name] = checksums.digest_file(extra)
    return {
        **base,
        "format": repo_files.SIDECAR_FORMAT,
        "id": point.id,
        "source": point.vm_name,
        "disk": point.disk_index,
        "type": point.backup_type.value if point.backup_type else None,
        "chain_id": point.chain_id,
        "file": image.name,
        "parent": (
            {"id": point.parent_backup_id, "file": parent_file.get("file")}
            if point.parent_backup_id
            else None
        ),
        "created_at": point.created_at.isoformat(),
        "completed_at": point.completed_at.isoformat() if point.completed_at else None,
        "virtual_size": point.total_bytes,
        "file_size": image.stat().st_size,
        "bytes_transferred": point.bytes_transferred,
        "change_id": point.change_id,
        "bitmap": point.bitmap,
        "reason": point.reason,
        "requested_type": point.requested_type,
        "immutable_until": point.immutable_until.isoformat() if point.immutable_until else None,
        "checksums": sums,
    }


def rewrite_sidecar(
    point: Backup,
    image: Path,
    *,
    previous: Path | None = None,
    sums: dict[str, dict[str, Any]] | None = None,
    **changes: Any,
) -> None:
    """Re-record a point whose file changed (checksums, size, parent name); ``previous``
    is where its sidecar was before a rename."""
    old = previous or repo_files.sidecar_path(image)
    base = repo_files.read_sidecar(old) if old.exists() else {}
    base.update(changes)
    data = sidecar(point, base=base, image=image, sums=sums)
    point.file_size = data["file_size"]
    repo_files.write_json_atomic(repo_files.sidecar_path(image), data)


# -- guards -----------------------------------------------------------------------


def is_immutable(point: Backup, at: datetime | None = None) -> bool:
    return point.immutable_until is not None and (at or now()) < point.immutable_until


def guard(session: Session, modified: Sequence[Backup], affected: Sequence[Backup]) -> None:
    """Refuse if a point whose files change is immutable, or a point using them is busy."""
    for point in modified:
        if is_immutable(point):
            assert point.immutable_until is not None
            raise PointImmutable(id=point.id, until=point.immutable_until.isoformat())
    for point in affected:
        if reason := busy_reason(session, point.id):
            raise PointInUse(id=point.id, reason=reason)


def blocked(session: Session, modified: Sequence[Backup], affected: Sequence[Backup]) -> str | None:
    """Like :func:`guard`, but returns the refusal instead of raising it."""
    try:
        guard(session, modified, affected)
    except (PointImmutable, PointInUse) as exc:
        return exc.message
    return None


def release_flag(session: Session, point: Backup) -> None:
    """Drop ``chattr +i`` from a point whose window has ended, before touching its files."""
    if point.immutable_flag and not is_immutable(point):
        repo_files.set_immutable(repo_files.point_files(image_of(session, point)), on=False)
        point.immutable_flag = False


# -- merges ------------------------------------------------------------------------


def delete_point(session: Session, settings: Settings, point: Backup) -> None:
    """Remove one restore point; every other point keeps its content. Caller holds the lock."""
    assert point.chain_id is not None
    chain = session.get(BackupChain, point.chain_id)
    points = ordered(session, point.chain_id)
    index = next(i for i, p in enumerate(points) if p.id == point.id)
    child = points[index + 1] if index + 1 < len(points) else None
    if index == 0 and child is not None:
        merge_full_forward(session, settings, points)
    else:
        guard(session, [p for p in (point, child) if p], points[index:])
        for p in (point, child):
            if p is not None:
                release_flag(session, p)
        if child is not None:
            parent = points[index - 1]
            child_image = image_of(session, child)
            parent_image = image_of(session, parent)
            _rebase(settings, point_key(session, child), child_image, index + 1, parent_image)
            child.parent_backup_id = parent.id
            rewrite_sidecar(child, child_image, parent={"id": parent.id, "file": parent_image.name})
        repo_files.delete_point_files(image_of(session, point))
        session.delete(point)
    session.flush()
    if chain is not None:
        refresh(session, chain)
    session.commit()


def _rebase(settings: Settings, key: Key | None, child: Path, depth: int, parent: Path) -> None:
    """Safe rebase of ``child`` (``depth`` layers below it) onto ``parent``, one layer
    further down. An encrypted new backing is named by a ``json:`` filename carrying
    its key (qemu-img rebase gives the new backing no other options), then the header
    gets its plain relative name with an unsafe rebase (same content)."""
    if key is None:
        qemu_img.rebase(child, "qcow2", parent.name, "qcow2", binary=settings.QEMU_IMG_PATH)
        return
    objects, binary = key.objects(), settings.QEMU_IMG_PATH
    backing = key.json_filename(parent, depth - 2)
    image = key.image(child, depth)
    qemu_img.rebase(image, "qcow2", backing, "qcow2", objects=objects, binary=binary)
    qemu_img.rebase(
        key.image(child),
        "qcow2",
        parent.name,
        "qcow2",
        unsafe=True,
        objects=objects,
        binary=binary,
    )


def merge_full_forward(session: Session, settings: Settings, points: list[Backup]) -> None:
    """Fold the full into its child: the child becomes the chain's (synthetic) full."""
    full, child = points[0], points[1]
    grandchild = points[2] if len(points) > 2 else None
    guard(session, [p for p in (full, child, grandchild) if p], points)
    for p in (full, child, grandchild):
        if p is not None:
            release_flag(session, p)
    full_image, child_image = image_of(session, full), image_of(session, child)
    key = point_key(session, child)
    qemu_img.commit(
        key.image(child_image, 1) if key else child_image,
        "qcow2",
        drop=False,
        objects=key.objects() if key else (),
        binary=settings.QEMU_IMG_PATH,
    )
    new_image = child_image.with_name("full-" + child_image.name.split("-", 1)[1])
    os.link(full_image, new_image)
    for beside in (repo_files.hashmap_path, repo_files.screenshot_path):
        if beside(child_image).exists():
            os.replace(beside(child_image), beside(new_image))
    if grandchild is not None:
        gc_image = image_of(session, grandchild)
        qemu_img.rebase(
            key.image(gc_image) if key else gc_image,
            "qcow2",
            new_image.name,
            "qcow2",
            unsafe=True,
            objects=key.objects() if key else (),
            binary=settings.QEMU_IMG_PATH,
        )
        rewrite_sidecar(grandchild, gc_image, parent={"id": child.id, "file": new_image.name})
    child.backup_type = BackupType.full
    child.parent_backup_id = None
    child.path = str(Path(child.path or "").with_name(new_image.name))
    rewrite_sidecar(child, new_image, previous=repo_files.sidecar_path(child_image), parent=None)
    repo_files.delete_point_files(full_image)
    for path in (child_image, repo_files.sidecar_path(child_image)):
        path.unlink(missing_ok=True)
    repo_files.fsync_dir(new_image.parent)
    session.delete(full)


def not_owned(points: Sequence[Backup], owner: str | None) -> str | None:
    """Why a merge of the full ``points[0]`` is not ``owner``'s (a policy id) to make."""
    if owner is None or points[0].policy_id == owner:
        return None
    return f"the oldest point {points[0].id} was not made by this policy (adopt_existing is false)"


def consolidate(
    session: Session,
    settings: Settings,
    chain: BackupChain,
    max_length: int,
    owner: str | None = None,
) -> tuple[list[str], str | None]:
    """Merge the oldest points into the full until the chain has at most ``max_length``
    points. Returns the removed ids and, if a merge was refused, why. With ``owner``
    (a policy id) only that policy's points are merged away."""
    removed: list[str] = []
    while len(points := ordered(session, chain.id)) > max_length:
        why = not_owned(points, owner) or blocked(session, points[:3], points)
        if why is not None:
            return removed, why
        removed.append(points[0].id)
        merge_full_forward(session, settings, points)
        session.flush()
        refresh(session, chain)
        session.commit()
    return removed, None
