"""Backup rules for the API and tasks: sources, repositories, runs, chains, and
the calls other domains use (``restore_point``, ``register_busy_check``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from diskvault.backups import chain as chains
from diskvault.backups import repositories
from diskvault.backups.boot_config import boot_config
from diskvault.backups.chain import register_busy_check
from diskvault.backups.errors import (
    BackupNotFound,
    InvalidRestoreTarget,
    PointNotReady,
    SourceExists,
    SourceNotFound,
)
from diskvault.backups.keys import Key
from diskvault.backups.models import (
    Backup,
    BackupChain,
    BackupSource,
    BackupStatus,
    SourceKind,
    find_named,
    insert_named,
)
from diskvault.backups.restore import Crypt, check_destination, check_nbd_target
from diskvault.backups.sources import SOURCES
from diskvault.backups.verify import chain_to
from diskvault.config import Settings
from diskvault.db.listing import Listing
from diskvault.db.listing import apply as listing_apply
from diskvault.db.pagination import PageParams, paginate
from diskvault.jobs import service as jobs
from diskvault.jobs.models import Job

__all__ = ["RestorePoint", "register_busy_check", "restore_point"]


# -- for other domains ----------------------------------------------------------


@dataclass(frozen=True)
class RestorePoint:
    """What a reader of a restore point needs: open ``image`` (qcow2) with its backing
    chain; ``chain`` lists every file it reads, full first."""

    id: str
    vm_name: str
    disk_index: int
    image: Path
    chain: list[Path]
    format: str
    virtual_size: int
    key: Key | None = None  # an encrypted point: every file of its chain takes this key

    @property
    def crypt(self) -> Crypt | None:
        return Crypt(self.key, self.chain) if self.key else None


def restore_point(session: Session, backup_id: str) -> RestorePoint:
    """Raises :class:`KeyUnavailable` (naming the fingerprint) for an encrypted point
    whose key is not at hand, before anything reads it."""
    point = get_backup(session, backup_id)
    if point.status != BackupStatus.completed:
        raise PointNotReady(id=backup_id, status=point.status.value, action="read")
    files = [chains.image_of(session, p) for p in chain_to(session, point)]
    key = chains.point_key(session, point)
    return RestorePoint(
        point.id, point.vm_name, point.disk_index, files[-1], files, "qcow2", point.total_bytes, key
    )


# -- sources ------------------------------------------------------------------------


def create_source(
    session: Session, name: str, kind: SourceKind, body: dict[str, Any], *, unverified: bool = False
) -> BackupSource:
    """``unverified``: skip the check that the disks are there and readable (kept in
    the config, so the listing shows which sources were never checked)."""
    cls = SOURCES[kind.value]
    config = {**cls.validate(body), **boot_config(kind.value, body)}
    if unverified:
        config["unverified"] = True
    else:
        cls.check(config)
    return insert_named(session, BackupSource(name=name, kind=kind, config=config), SourceExists)


def get_source(session: Session, name: str) -> BackupSource:
    return find_named(session, BackupSource, name, SourceNotFound)


SOURCE_SORTS: dict[str, Any] = {
    "name": BackupSource.name,
    "kind": BackupSource.kind,
    "created": BackupSource.created_at,
}


def list_sources(
    session: Session, page: PageParams, listing: Listing | None = None
) -> tuple[list[Any], int]:
    stmt = listing_apply(
        select(BackupSource), listing, sorts=SOURCE_SORTS, default="name",
        tiebreak=BackupSource.id, search=(BackupSource.name,),
    )  # fmt: skip
    return paginate(session, stmt, page)


def delete_source(session: Session, name: str) -> BackupSource:
    row = get_source(session, name)
    session.delete(row)
    session.commit()
    return row


# -- backups --------------------------------------------------------------------------


def get_backup(session: Session, backup_id: str) -> Backup:
    row = session.get(Backup, backup_id)
    if row is None:
        raise BackupNotFound(id=backup_id)
    return row


POINT_SORTS: dict[str, Any] = {
    "created": Backup.created_at,
    "size": Backup.file_size,
    "type": Backup.backup_type,
    "status": Backup.status,
}


def list_backups(
    session: Session,
    page: PageParams,
    *,
    vm_name: str | None = None,
    repository_id: str | None = None,
    status: BackupStatus | None = None,
    listing: Listing | None = None,
) -> tuple[list[Any], int]:
    stmt = listing_apply(
        select(Backup), listing, sorts=POINT_SORTS, default="-created", tiebreak=Backup.id,
        search=(Backup.id, Backup.error),
    )  # fmt: skip
    if vm_name:
        stmt = stmt.where(Backup.vm_name == vm_name)
    if repository_id:
        stmt = stmt.where(Backup.repository_id == repository_id)
    if status:
        stmt = stmt.where(Backup.status == status)
    return paginate(session, stmt, page)


def chain_view(session: Session, vm_name: str, repository_id: str | None) -> dict[str, Any]:
    stmt = select(BackupChain).where(BackupChain.vm_name == vm_name)
    if repository_id:
        stmt = stmt.where(BackupChain.repository_id == repository_id)
    out = []
    rows = list(session.scalars(stmt.order_by(BackupChain.disk_index, BackupChain.created_at)))
    ordered = chains.ordered_many(session, [c.id for c in rows])
    for chain in rows:
        points = ordered.get(chain.id, [])
        out.append(
            {
                "chain_id": chain.id,
                "repository_id": chain.repository_id,
                "disk_index": chain.disk_index,
                "broken_reason": chain.broken_reason,
                "total_size_bytes": sum(p.file_size for p in points),
                "points": [
                    {
                        "id": p.id,
                        "backup_type": p.backup_type,
                        "created_at": p.created_at,
                        "file": Path(p.path or "").name,
                        "file_size": p.file_size,
                        "parent_backup_id": p.parent_backup_id,
                        "immutable_until": p.immutable_until,
                        "verify_status": p.verify_status,
                    }
                    for p in points
                ],
            }
        )
    return {
        "vm_name": vm_name,
        "chains": out,
        "total_size_bytes": sum(c["total_size_bytes"] for c in out),
    }


def submit(settings: Settings, kind: str, params: dict[str, Any], owner: str | None) -> Job:
    # Backups read sources and write repositories that live on this node.
    return jobs.submit(settings, kind, params, node=settings.NODE, owner=owner)


def start(
    session: Session,
    settings: Settings,
    *,
    vm_name: str,
    backup_type: str,
    repository: str | None,
    owner: str | None,
    speed: int | None = None,
    policy_id: str | None = None,
) -> Job:
    source = get_source(session, vm_name)
    repo = repositories.local_repository(session, settings, repository)
    params = {
        "vm_name": source.name,
        "backup_type": backup_type,
        "repository_id": repo.id,
        "speed": speed,
        "policy_id": policy_id,
    }
    return submit(settings, "backup-run", params, owner)


def completed(session: Session, backup_id: str, action: str) -> Backup:
    point = get_backup(session, backup_id)
    if point.status != BackupStatus.completed:
        raise PointNotReady(id=backup_id, status=point.status.value, action=action)
    return point


def request_delete(session: Session, settings: Settings, backup_id: str, owner: str | None) -> Job:
    """Refuse at once what the job would refuse (immutable, in use); else queue it."""
    point = completed(session, backup_id, "deleted")
    points = chains.ordered(session, point.chain_id or "")
    index = next(i for i, p in enumerate(points) if p.id == point.id)
    touched = points[index : index + (3 if index == 0 else 2)]
    chains.guard(session, touched, points[index:])
    return submit(settings, "backup-delete", {"backup_id": backup_id}, owner)


def request_restore(
    session: Session, settings: Settings, backup_id: str, target: dict[str, Any], owner: str | None
) -> Job:
    """Queue restoring the whole disk to a new file, an NBD export or the image library."""
    completed(session, backup_id, "restored")
    kind = target.get("target")
    if kind == "file":
        check_destination(settings, target.get("path") or "")
    elif kind == "nbd":
        if not target.get("url"):
            raise InvalidRestoreTarget(target="nbd", detail="give 'url'")
        check_nbd_target(settings, target["url"])
    elif kind == "image" and not target.get("image_name"):
        raise InvalidRestoreTarget(target="image", detail="give 'image_name'")
    return submit(settings, "backup-restore", {"backup_id": backup_id, **target}, owner)
