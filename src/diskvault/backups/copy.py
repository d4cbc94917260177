"""Copy jobs: replicate restore points to a second repository (a local path or S3
through the storage providers) for the 3-2-1 rule.

Incremental: a point whose sidecar is already there with the same checksums is
skipped. Each file is read back after the transfer and compared block by block
with the checksums recorded at backup time; the sidecar is written last, so a
point appears in the copy only once all its files arrived intact. The copy
mirrors the copied disks' chains: points gone from the source (pruned or merged)
are removed from the copy too, sidecar first, so it never holds a forked chain.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from diskvault.backups import chain as chains
from diskvault.backups import checksums
from diskvault.backups import repository as repo_files
from diskvault.backups.errors import CopyFailed, InvalidRepository
from diskvault.backups.models import Backup, BackupRepository, BackupStatus, RepositoryKind
from diskvault.config import Settings
from diskvault.storage import LocalStorageProvider, StorageError, StorageProvider, provider_from_url

Progress = Callable[[int, int], None]


def provider_for(settings: Settings, repo: BackupRepository) -> StorageProvider:
    if repo.kind == RepositoryKind.local:
        assert repo.path is not None
        return LocalStorageProvider(Path(repo.path), create=True)
    if repo.url is None:
        raise InvalidRepository(detail=f"repository {repo.name} has no URL")
    return provider_from_url(repo.url, settings=settings)


def _remote_sidecar(provider: StorageProvider, key: str) -> dict[str, Any] | None:
    try:
        with provider.open_read(key) as fh:
            data: dict[str, Any] = json.loads(fh.read())
            return data
    except (StorageError, ValueError):
        return None


def points_to_copy(session: Session, repository_id: str, vm: str | None) -> list[Backup]:
    stmt = select(Backup).where(
        Backup.repository_id == repository_id, Backup.status == BackupStatus.completed
    )
    if vm:
        stmt = stmt.where(Backup.vm_name == vm)
    return list(session.scalars(stmt.order_by(Backup.created_at)))


def copy_point(
    provider: StorageProvider, root: Path, point: Backup, target: str, step: Callable[[int], None]
) -> int:
    """Copy one point unless already there; returns the bytes sent."""
    assert point.path is not None
    image = root / point.path
    side_path = repo_files.sidecar_path(image)
    side = repo_files.read_sidecar(side_path)
    side_key = side_path.relative_to(root).as_posix()
    there = _remote_sidecar(provider, side_key)
    if there is not None and there.get("checksums") == side.get("checksums"):
        return 0
    sent = 0
    for path in repo_files.point_files(image):
        if path.suffix == ".json":
            continue
        key = path.relative_to(root).as_posix()
        provider.upload_file(path, key, progress=step)
        with provider.open_read(key) as fh:
            bad = checksums.compare_stream(fh, side["checksums"][path.name], path.name)
        if bad:
            provider.delete(key, missing_ok=True)
            raise CopyFailed(key=key, target=target, detail=bad[0].describe())
        sent += path.stat().st_size
    body = json.dumps(side, indent=1, sort_keys=True).encode()
    provider.write(side_key, io.BytesIO(body), size=len(body))
    return sent


def copy(
    session: Session,
    settings: Settings,
    source: BackupRepository,
    target: BackupRepository,
    points: list[Backup],
    progress: Progress | None = None,
) -> dict[str, Any]:
    provider = provider_for(settings, target)
    root = chains.root_of(session, source.id)
    total = sum(p.file_size for p in points)
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(min(done, total), total)

    copied: list[str] = []
    skipped: list[str] = []
    for point in points:
        sent = copy_point(provider, root, point, target.name, step)
        (copied if sent else skipped).append(point.id)
    disks = {(p.vm_name, p.disk_index) for p in points}
    ids = {p.id for p in points}
    removed = [r for vm, disk in sorted(disks) for r in _mirror(provider, vm, disk, ids)]
    return {
        "copied": copied,
        "skipped": skipped,
        "removed": removed,
        "bytes": done,
        "target": target.name,
    }


def _mirror(provider: StorageProvider, vm: str, disk: int, keep: set[str]) -> list[str]:
    """Remove the copy's points of this disk that the source no longer has."""
    prefix = f"{vm}/disk-{disk}/"
    keys = [f.key for page in provider.scan(prefix) for f in page if not f.is_dir]
    removed = []
    for key in keys:
        if not key.endswith(".json"):
            continue
        side = _remote_sidecar(provider, key)
        if side is None or side.get("id") in keep:
            continue
        provider.delete(key, missing_ok=True)
        stem = key.removesuffix(".json")
        for other in (stem + ".qcow2", stem + ".hashmap"):
            provider.delete(other, missing_ok=True)
        removed.append(str(side.get("id")))
    return removed
