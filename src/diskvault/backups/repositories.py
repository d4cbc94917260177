"""Backup repositories as records: create, look up, refresh usage, and rebuild a
repository's points from its sidecars (rescan). The files inside a repository are
:mod:`.repository`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from diskvault.backups import chain as chains
from diskvault.backups import keys
from diskvault.backups import repository as repo_files
from diskvault.backups.errors import (
    InvalidRepository,
    NotSupportedHere,
    RepositoryExists,
    RepositoryNotFound,
)
from diskvault.backups.models import (
    Backup,
    BackupChain,
    BackupRepository,
    BackupStatus,
    BackupType,
    RepositoryKind,
    by_name_or_id,
    insert_named,
)
from diskvault.config import Settings
from diskvault.db.pagination import PageParams, paginate
from diskvault.storage import provider_from_url, redact_url

DEFAULT_REPOSITORY = "default"
# The backup spec calls the default repository "local"; a repository really named so wins.
DEFAULT_ALIASES = ("local",)


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
