"""Helpers for backup tests: a migrated settings object, sources, repositories,
random writes into disks, saved copies, and comparisons with qemu-img."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diskvault.backups import engine, repositories, service
from diskvault.backups.locks import local_holder
from diskvault.backups.models import Backup, RepositoryKind, SourceKind
from diskvault.config import Settings, load_settings
from diskvault.db.engine import session_scope
from diskvault.db.migrate import upgrade
from diskvault.tools import qemu_img
from support import qemu_io

MiB = 1024 * 1024
DISK = 64 * MiB


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    settings = load_settings(DATA_DIR=data_dir, WORKERS=0, **overrides)
    upgrade(settings.DATABASE_URL)
    with session_scope(settings.DATABASE_URL) as s:
        repositories.ensure_default_repository(s, settings)  # as serve's start-up does
    return settings


def add_repo(settings: Settings, name: str, path: Path, **kw: Any) -> str:
    with session_scope(settings.DATABASE_URL) as s:
        repo = repositories.create_repository(
            s, settings, name=name, kind=RepositoryKind.local, path=str(path), url=None, **kw
        )
        return repo.id


def add_source(
    settings: Settings, name: str, kind: str, unverified: bool = False, **config: Any
) -> None:
    with session_scope(settings.DATABASE_URL) as s:
        service.create_source(s, name, SourceKind(kind), config, unverified=unverified)


def backup(
    settings: Settings,
    vm: str,
    repo_id: str,
    kind: str = "auto",
    *,
    cancel: Callable[[], bool] | None = None,
    progress: engine.Progress | None = None,
    **kw: Any,
) -> str:
    """One run of a one-disk source; returns the restore point id."""
    req = engine.RunRequest(vm, repo_id, kind, holder=local_holder(settings), **kw)
    (new,) = engine.run(settings, req, progress=progress, should_cancel=cancel or (lambda: False))
    return new


def point(settings: Settings, backup_id: str) -> Backup:
    with session_scope(settings.DATABASE_URL) as s:
        row = s.get(Backup, backup_id)
        assert row is not None
        s.expunge(row)
        return row


def image(settings: Settings, backup_id: str) -> Path:
    with session_scope(settings.DATABASE_URL) as s:
        row = service.get_backup(s, backup_id)
        from diskvault.backups.chain import image_of

        return image_of(s, row)


def create_disk(path: Path, fmt: str = "qcow2", size: int = DISK, seed: int = 1) -> Path:
    qemu_img.create(path, fmt, size)
    write_random(path, fmt, 0.3, seed=seed, size=size)
    return path


def random_writes(fraction: float, *, seed: int, size: int = DISK) -> list[str]:
    """qemu-io commands changing about ``fraction`` of a disk: random offsets, lengths
    and patterns, and sometimes a zeroed range (which must reach the backup too)."""
    rng = random.Random(seed)
    budget = int(size * fraction)
    commands = []
    while budget > 0:
        length = min(budget, rng.randrange(4096, 512 * 1024))
        offset = rng.randrange(0, size - length) & ~511
        commands.append(f"write -P {rng.randrange(1, 256)} {offset} {length}")
        budget -= length
    if rng.random() < 0.5:
        commands.append(f"write -z {rng.randrange(0, size // 2) & ~65535} 131072")
    return commands


def write_random(
    target: str | Path, fmt: str, fraction: float, *, seed: int, size: int = DISK
) -> int:
    """Apply :func:`random_writes` with qemu-io; returns the bytes changed (about)."""
    qemu_io.run(target, fmt, random_writes(fraction, seed=seed, size=size), timeout=120)
    return int(size * fraction)


def save(path: Path, to: Path) -> Path:
    shutil.copyfile(path, to)
    return to


def same(a: str | Path, b: str | Path, fa: str = "qcow2", fb: str = "qcow2") -> bool:
    return qemu_img.compare(a, b, fa, fb)


def own_bytes(path: Path) -> int:
    """Bytes of guest data stored in this layer itself (not in its backing files)."""
    return sum(e["length"] for e in qemu_img.map(path, "qcow2") if e["depth"] == 0 and e["data"])
