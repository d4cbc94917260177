"""Backup rules for the API and tasks: sources, repositories, runs, chains, and
the calls other domains use (``restore_point``, ``register_busy_check``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from diskvault.backups import chain as chains
from diskvault.backups import keys
from diskvault.backups import repository as repo_files
from diskvault.backups.boot_config import boot_config
from diskvault.backups.chain import register_busy_check
from diskvault.backups.errors import (
    BackupNotFound,
    InvalidRepository,
    InvalidRestoreTarget,
    NotSupportedHere,
    PointNotReady,
    RepositoryExists,
    RepositoryNotFound,
    SourceExists,
    SourceNotFound,
)
from diskvault.backups.keys import Key
from diskvault.backups.models import (
    Backup,
    BackupChain,
    BackupRepository,
    BackupSource,
    BackupStatus,
    BackupType,
    RepositoryKind,
    SourceKind,
    by_name_or_id,
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
from diskvault.storage import provider_from_url, redact_url

__all__ = ["RestorePoint", "register_busy_check", "restore_point"]

DEFAULT_REPOSITORY = "default"
# The backup spec calls the default repository "local"; a repository really named so wins.
DEFAULT_ALIASES = ("local",)


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


# -- repositories ----------------------------------------------------------------------


def create_repository(
    session: Session,
    settings: Settings,
    *,
    name: str,
    kind: RepositoryKind,
    path: str | None,
    url: str | None,
    immutability_days: float = 0.0,
    encryption: str = "none",
    compression: str = "none",
    key_file: str | None = None,
    create_key: bool = False,
) -> BackupRepository:
    """A new repository; ``create_key`` makes the key file, and its paper key is then
    in the returned row's ``paper_key`` (not stored anywhere)."""
    row = BackupRepository(
        name=name, kind=kind, immutability_days=immutability_days, compression=compression
    )
    if kind == RepositoryKind.local:
        if not path or not Path(path).is_absolute():
            raise InvalidRepository(detail="a local repository needs an absolute 'path'")
        root = Path(path)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidRepository(detail=f"{path}: {exc.strerror}") from exc
        row.path = str(root.resolve())
        row.immutable_flag = repo_files.probe_immutable(root)
        row.total_size_bytes, row.available_size_bytes = repo_files.usage(root)
    else:
        if not url:
            raise InvalidRepository(detail="an s3 repository needs a 'url' (s3://bucket/prefix)")
        provider_from_url(url, settings=settings)  # validates the URL, no network
        row.url = redact_url(url)
    if by_name_or_id(session, BackupRepository, name) is not None:
        raise RepositoryExists(name=name)  # before a key file is made for it
    paper = keys.set_key(settings, row, encryption, key_file, create_key)
    insert_named(session, row, RepositoryExists)
    row.paper_key = paper  # type: ignore[attr-defined]  # shown once, in this response
    return row


def ensure_default_repository(session: Session, settings: Settings) -> BackupRepository:
    """The ``default`` repository (BACKUP_REPOSITORY_PATH), made at start-up if missing."""
    row = by_name_or_id(session, BackupRepository, DEFAULT_REPOSITORY)
    if row is not None:
        return row
    return create_repository(
        session,
        settings,
        name=DEFAULT_REPOSITORY,
        kind=RepositoryKind.local,
        path=str(settings.backup_dir),
        url=None,
    )


def get_repository(session: Session, settings: Settings, ref: str | None) -> BackupRepository:
    """By name or id; ``None`` (or ``local``, the spec's name) is the default repository.

    A read never creates anything: the default repository is made at start-up.
    """
    name = ref or DEFAULT_REPOSITORY
    row = by_name_or_id(session, BackupRepository, name)
    if row is None and name in DEFAULT_ALIASES:
        row = by_name_or_id(session, BackupRepository, DEFAULT_REPOSITORY)
    if row is None:
        raise RepositoryNotFound(id=name)
    return row


def local_repository(session: Session, settings: Settings, ref: str | None) -> BackupRepository:
    repo = get_repository(session, settings, ref)
    if repo.kind != RepositoryKind.local:
        raise NotSupportedHere(
            f"repository {repo.name} is {repo.kind.value}: backups are written to local "
            "repositories; s3 repositories are copy targets (diskvault backup copy)"
        )
    return repo


def refresh_usage(session: Session, repo: BackupRepository) -> BackupRepository:
    if repo.path and Path(repo.path).is_dir():
        repo.total_size_bytes, repo.available_size_bytes = repo_files.usage(Path(repo.path))
        session.commit()
    return repo


def list_repositories(session: Session, page: PageParams) -> tuple[list[Any], int]:
    items, total = paginate(session, select(BackupRepository).order_by(BackupRepository.name), page)
    for repo in items:
        refresh_usage(session, repo)
    return items, total


def rescan(session: Session, repo: BackupRepository) -> dict[str, Any]:
    """Rebuild restore points and chains from the sidecars of a local repository."""
    if repo.path is None:
        raise NotSupportedHere(f"repository {repo.name} is not local and cannot be scanned")
    root = Path(repo.path)
    added, known, skipped = 0, 0, []
    touched: set[str] = set()
    for found in repo_files.scan(root):
        side = found.sidecar
        existing = session.get(Backup, side["id"])
        if existing is not None:
            if existing.repository_id == repo.id:
                known += 1
            else:
                skipped.append(f"{found.relative}: id {side['id']} belongs to another repository")
            continue
        chain_id = str(side["chain_id"])
        if session.get(BackupChain, chain_id) is None:
            session.add(
                BackupChain(
                    id=chain_id,
                    repository_id=repo.id,
                    vm_name=side["source"],
                    disk_index=int(side["disk"]),
                )
            )
        until = repo_files.utc(side.get("immutable_until"))
        session.add(
            Backup(
                id=side["id"],
                vm_name=side["source"],
                disk_index=int(side["disk"]),
                repository_id=repo.id,
                chain_id=chain_id,
                requested_type=side.get("requested_type") or "auto",
                backup_type=BackupType(side["type"]),
                status=BackupStatus.completed,
                path=found.relative,
                parent_backup_id=(side.get("parent") or {}).get("id"),
                change_id=side.get("change_id"),
                bitmap=side.get("bitmap"),
                reason=side.get("reason"),
                total_bytes=int(side.get("virtual_size", 0)),
                bytes_transferred=int(side.get("bytes_transferred", 0)),
                file_size=found.image.stat().st_size,
                created_at=repo_files.utc(side["created_at"]),
                started_at=repo_files.utc(side["created_at"]),
                completed_at=repo_files.utc(side.get("completed_at")),
                immutable_until=until,
                key_fingerprint=(side.get("encryption") or {}).get("key_fingerprint"),
            )
        )
        added += 1
        touched.add(chain_id)
    session.flush()
    for chain_id in touched:
        chain = session.get(BackupChain, chain_id)
        if chain is not None:
            chains.refresh(session, chain)
    session.commit()
    return {
        "repository": repo.name,
        "added": added,
        "known": known,
        "skipped": skipped,
        "chains": len(touched),
    }


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
    repo = local_repository(session, settings, repository)
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
