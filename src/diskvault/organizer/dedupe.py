"""Duplicates in a location (local or S3) and the plan to clean them up.

Local locations use the fast finder of :mod:`.duplicates` with its persistent
hash cache. Object stores are grouped by size, then by ETag when every object
of the size has a plain (single-part, MD5) ETag, and otherwise by a SHA-256 of
the content. Cleanup keeps one file per group; every other copy is deleted,
replaced by a hard link to the kept one, or moved to a quarantine folder.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from diskvault.organizer.duplicates import find_duplicates
from diskvault.organizer.hashcache import HashCache
from diskvault.organizer.locations import QUARANTINE, is_reserved
from diskvault.organizer.plan import Action, Claims
from diskvault.storage import LocalStorageProvider, StorageFile, StorageProvider

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Group:
    size: int
    hash: str
    files: list[StorageFile]  # sorted by key

    @property
    def wasted_bytes(self) -> int:
        return self.size * (len(self.files) - 1)

    def as_dict(self) -> dict[str, object]:
        return {
            "size": self.size,
            "hash": self.hash,
            "wasted_bytes": self.wasted_bytes,
            "keys": [f.key for f in self.files],
        }


def _local_groups(
    provider: StorageProvider,
    root: Path,
    cache_path: Path,
    progress: Progress | None,
    should_cancel: Callable[[], bool] | None,
) -> list[Group]:
    prefix = str(root).rstrip(os.sep) + os.sep
    with HashCache(cache_path) as cache:
        report = find_duplicates(root, cache=cache, progress=progress, should_cancel=should_cancel)
    groups = []
    for g in report.groups:
        keys = [p[len(prefix) :] for p in g.paths if p.startswith(prefix)]
        keys = [k for k in keys if not is_reserved(k)]
        if len(keys) > 1:
            groups.append(Group(g.size, g.hash, [provider.stat(k) for k in sorted(keys)]))
    return groups


def _object_groups(
    provider: StorageProvider,
    progress: Progress | None,
    check_cancel: Callable[[], None] | None,
) -> list[Group]:
    by_size: dict[int, list[StorageFile]] = defaultdict(list)
    seen = read = 0
    for page in provider.scan(""):
        for f in page:
            if not f.is_dir and f.size > 0 and not is_reserved(f.key):
                by_size[f.size].append(f)
        seen += len(page)
        if progress is not None:
            progress(seen, read)
    groups: list[Group] = []
    for size, files in by_size.items():
        if len(files) < 2:
            continue
        if check_cancel is not None:
            check_cancel()
        plain = all(f.etag and "-" not in f.etag for f in files)
        by_hash: dict[str, list[StorageFile]] = defaultdict(list)
        for f in files:
            if plain:
                by_hash[f"md5:{f.etag}"].append(f)
            else:
                by_hash[f"sha256:{provider.hash(f.key, 'sha256')}"].append(f)
                read += size
        for digest, same in by_hash.items():
            if len(same) > 1:
                groups.append(Group(size, digest, sorted(same, key=lambda f: f.key)))
        if progress is not None:
            progress(seen, read)
    return groups


def find_groups(
    provider: StorageProvider,
    *,
    cache_path: Path,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    check_cancel: Callable[[], None] | None = None,
) -> list[Group]:
    """Duplicate groups in the provider, biggest waste first."""
    if isinstance(provider, LocalStorageProvider):
        groups = _local_groups(provider, provider.root, cache_path, progress, should_cancel)
    else:
        groups = _object_groups(provider, progress, check_cancel)
    groups.sort(key=lambda g: (-g.wasted_bytes, g.files[0].key))
    return groups


def _keeper(files: list[StorageFile], keep: str) -> StorageFile:
    if keep == "oldest":
        return min(files, key=lambda f: (f.mtime, f.key))
    if keep == "newest":
        return max(files, key=lambda f: (f.mtime, f.key))
    if keep == "shortest":
        return min(files, key=lambda f: (len(f.key), f.key))
    return files[0]


def plan_dedupe(
    groups: list[Group],
    *,
    location: str,
    strategy: str,
    keep: str,
    quarantine_id: str,
    exists: Callable[[str, str], bool],
) -> list[Action]:
    claims = Claims(exists)
    actions: list[Action] = []
    for group in groups:
        kept = _keeper(group.files, keep)
        for f in group.files:
            if f.key == kept.key:
                continue
            action = Action(
                op=strategy, src=f.key, size=f.size, mtime=f.mtime, restore_from=kept.key
            )
            if strategy == "quarantine":
                action.op, action.dst_root, action.restore_from = "move", location, None
                action.dst = claims.resolve(
                    location, f"{QUARANTINE}/{quarantine_id}/{f.key}", "rename"
                )
            action.note = f"duplicate of {kept.key}"
            actions.append(action)
    return actions
